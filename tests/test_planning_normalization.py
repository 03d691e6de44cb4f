"""Planning from a fingerprint: per-channel intensity normalisation."""

from __future__ import annotations

import pytest

from samdsk_plan.planning import normalization, plan_from_fingerprint
from tests.planning_cases import iso_fp

# --------------------------------------------------------------------------- normalisation


def test_ct_normalisation_clips_and_uses_fingerprint_mean_std():
    props = {"mean": 40.5, "std": 75.25, "percentile_00_5": -980.0, "percentile_99_5": 1234.5}
    fp = iso_fp(5, channel_names={"0": "CT"}, intensity={"0": props}, median_rel=0.5)
    (ch,) = normalization(fp)
    assert ch["scheme"] == "ct"
    assert ch["channel"] == 0
    assert ch["clip"] == [-980.0, 1234.5]
    assert ch["mean"] == 40.5
    assert ch["std"] == 75.25


@pytest.mark.parametrize("name", ["MRI", "T2", "ADC"])
@pytest.mark.parametrize(("median_rel", "nonzero"), [(1.0, False), (0.75, False), (0.74, True), (0.3, True)])
def test_non_ct_channels_use_zscore(name, median_rel, nonzero):
    fp = iso_fp(5, channel_names={"0": name}, median_rel=median_rel)
    (ch,) = normalization(fp)
    assert ch["scheme"] == "zscore"
    assert ch["nonzero"] is nonzero


def test_multi_channel_normalisation():
    names = {"0": "CT", "1": "T2", "2": "noNorm"}
    fp = iso_fp(5, channel_names=names, median_rel=0.5)
    out = normalization(fp)
    assert [c["channel"] for c in out] == [0, 1, 2]
    assert [c["scheme"] for c in out] == ["ct", "zscore", "nonorm"]
    assert out[1]["nonzero"] is True
    plan = plan_from_fingerprint(fp)
    assert [c["scheme"] for c in plan["normalization"]] == ["ct", "zscore", "nonorm"]
