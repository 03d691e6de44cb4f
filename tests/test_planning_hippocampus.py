"""Planning from a fingerprint: the committed hippocampus plan against nnU-Net v2, and plans as plain,
deterministic JSON.

The rules behind the known answers are listed in tests/planning_cases.py.
"""

from __future__ import annotations

import copy
import json

import pytest

from samdsk_plan.planning import plan_from_fingerprint
from tests.planning_cases import HIPPOCAMPUS_FP, aniso_fp, iso_fp

# --------------------------------------------------------------------------- committed hippocampus


@pytest.fixture(scope="module")
def hippocampus_plan() -> dict:
    return plan_from_fingerprint(json.loads(HIPPOCAMPUS_FP.read_text()))


def test_hippocampus_matches_nnunet_v2(hippocampus_plan):
    # nnU-Net v2's nnUNetPlans for Dataset004_Hippocampus: 3d_fullres patch [40, 56, 40], batch 9;
    # 2d patch [56, 40], batch 366 (both set by the 5% cap: 260 * 63,000 voxels).
    full = hippocampus_plan["configurations"]["3d_fullres"]
    two_d = hippocampus_plan["configurations"]["2d"]
    assert hippocampus_plan["target_spacing"] == [1.0, 1.0, 1.0]
    assert full["patch_size"] == [40, 56, 40]
    assert full["batch_size"] == 9
    assert full["network"]["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert full["network"]["filters"] == [32, 64, 128, 256]
    assert two_d["patch_size"] == [40, 56]  # nnU-Net's [56, 40] is in (y, x) = our (j, i) order
    assert two_d["batch_size"] == 366
    assert hippocampus_plan["normalization"][0]["scheme"] == "zscore"
    assert hippocampus_plan["normalization"][0]["nonzero"] is False
    assert hippocampus_plan["samdsk"]["axes"] == [0, 1, 2]


# --------------------------------------------------------------------------- JSON


JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def _assert_plain_json(obj, path="plan"):
    assert type(obj) in JSON_TYPES, f"{path}: {type(obj).__name__}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str, f"{path}: key {k!r}"
            _assert_plain_json(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _assert_plain_json(v, f"{path}[{i}]")


@pytest.mark.parametrize("which", ["isotropic", "anisotropic", "ct", "hippocampus"])
def test_plan_is_plain_deterministic_json(which):
    fp = {
        "isotropic": lambda: iso_fp(10),
        "anisotropic": lambda: aniso_fp(2),
        "ct": lambda: iso_fp(5, channel_names={"0": "CT", "1": "T2"}, median_rel=0.5),
        "hippocampus": lambda: json.loads(HIPPOCAMPUS_FP.read_text()),
    }[which]()
    original = copy.deepcopy(fp)
    first = plan_from_fingerprint(fp)
    second = plan_from_fingerprint(copy.deepcopy(fp))
    assert fp == original  # the fingerprint is not modified
    text = json.dumps(first)  # default settings: fails on numpy ints/bools
    assert text == json.dumps(second)
    json.dumps(first, allow_nan=False)
    assert json.loads(text) == first  # no tuples, no non-string keys
    _assert_plain_json(first)  # no numpy scalars, even float64 (a float subclass)
