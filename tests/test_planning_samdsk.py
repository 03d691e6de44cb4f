"""Planning from a fingerprint: the SamDSK section (axes, fusion, per-class counts, SAM settings)."""

from __future__ import annotations

import numpy as np
import pytest

from samdsk_plan.matching import MatchSettings
from samdsk_plan.planning import plan_from_fingerprint, samdsk_settings
from samdsk_plan.planning.planner import coverage_count
from tests.planning_cases import iso_fp, make_class

# --------------------------------------------------------------------------- SamDSK section


@pytest.mark.parametrize(
    ("histogram", "expected"),
    [
        ({"1": 97, "2": 2, "3": 1}, 2),  # 97% < 99%, 99% >= 99% -> 2
        ({"1": 50, "2": 50}, 2),  # 50% < 99% -> 2
        ({"1": 990, "4": 10}, 1),  # 990 / 1000 = 99% exactly -> 1
        ({"2": 1, "1": 98, "5": 1}, 2),  # keys unsorted: 1 -> 98%, 2 -> 99% -> 2
        ({"0": 100}, 1),  # at least 1
        ({}, 1),  # empty -> 1
        ({"0": 5, "1": 90, "2": 4, "7": 1}, 2),  # 5%, 95%, 99% -> 2
    ],
)
def test_coverage_count(histogram, expected):
    assert coverage_count({"histogram": histogram}) == expected


def test_samdsk_settings_isotropic():
    cls = make_class(
        "liver",
        components={0: 1, 1: 90, 2: 8, 3: 1},  # 1%, 91%, 99% -> 2
        per_slice={
            0: {1: 97, 2: 2, 3: 1},  # -> 2
            1: {1: 100},  # -> 1
            2: {1: 50, 3: 49, 6: 1},
        },  # 50%, 99% -> 3
    )
    fp = iso_fp(10, classes={"1": cls})
    plan = plan_from_fingerprint(fp)
    sam = plan["samdsk"]
    assert sam["axes"] == [0, 1, 2]
    assert sam["fusion"] == "vote"
    assert sam["slice_axis"] == 2  # ties -> last axis
    c = sam["classes"]["1"]
    assert c["name"] == "liver"
    assert c["regions_per_slice"] == {
        "0": {"lower": 1, "upper": 2},
        "1": {"lower": 1, "upper": 1},
        "2": {"lower": 1, "upper": 3},
    }
    assert c["max_components_3d"] == 2
    assert c["region_area_px"] == {str(a): cls["region_area"][str(a)]["pixels"] for a in range(3)}
    # SamDSK paper settings.
    sam_cfg = sam["proposals"]["sam"]
    assert sam_cfg["pred_iou_thresh"] == 0.5
    assert sam_cfg["stability_score_thresh"] == 0.5
    assert sam_cfg["box_nms_thresh"] == 0.5
    assert sam["acceptance_threshold"] == 0.9
    matching = {"metric": "iou", "target": "soft", "prob_floor": 0.05, "floor_rule": "background", "floor_margin": 0.05}
    assert sam["matching"] == matching
    settings = MatchSettings(**sam["matching"])  # the plan's matching is MatchSettings' keywords
    uniform = np.stack([np.full((4, 4), 0.6), np.full((4, 4), 0.4)])  # an under-trained background
    assert settings.floor(uniform) == pytest.approx(0.45)


def test_samdsk_settings_direct_anisotropy_threshold():
    fp = iso_fp(3)
    # Ratio 2.9 < 3 -> isotropic (all axes); ratio 3.0 -> in-plane only, slice axis = coarsest.
    assert samdsk_settings(fp, [1.0, 2.9, 1.0])["axes"] == [0, 1, 2]
    s = samdsk_settings(fp, [1.0, 1.0, 3.0])
    assert s["axes"] == [2] and s["slice_axis"] == 2 and s["fusion"] == "single"
