"""Planning from a fingerprint: the GPU memory budget and the batch size.

The rules behind the known answers are listed in tests/planning_cases.py.
"""

from __future__ import annotations

import pytest

from samdsk_plan.errors import SamdskError
from samdsk_plan.planning import plan_configuration, plan_from_fingerprint
from tests.planning_cases import iso_fp

# --------------------------------------------------------------------------- memory budget


def test_patch_shrinks_along_the_axis_with_the_largest_patch_to_median_ratio():
    # Unshrunk: [40, 56, 40], batch 2 -> 1 + 2 * 0.1476384 = 1.2952768 GB > 1.25.
    # Ratios 40/35 = 1.143 > 56/50 = 1.12 > 40/36 = 1.111 -> axis 0 loses 8 (the divisibility of
    # the candidate [32, 56, 40], still 3 pools) -> [32, 56, 40]. Elements 2*32*71,680 +
    # 2*64*8,960 + 2*128*1,120 + 256*140 = 6,056,960 -> 0.11811072 GB; batch 2 -> 1.236 <= 1.25.
    # Memory batch floor(0.25 / 0.11811072) = 2 -> batch 2.
    plan = plan_from_fingerprint(iso_fp(2000), gpu_memory_gb=1.25)
    cfg = plan["configurations"]["3d_fullres"]
    assert cfg["patch_size"] == [32, 56, 40]
    assert cfg["batch_size"] == 2
    assert cfg["estimated_memory_gb"] == pytest.approx(1.236)
    assert "shrunk" in cfg["reasons"]["patch_size"]


def test_tiny_budget_shrinks_the_patch_and_fits():
    fp = iso_fp(20, shape=(160, 160, 160))
    big = plan_from_fingerprint(fp, gpu_memory_gb=8.0)["configurations"]["3d_fullres"]
    small = plan_from_fingerprint(fp, gpu_memory_gb=1.2)["configurations"]["3d_fullres"]
    # Patch at 1.2 GB is smaller on every axis and in total than at 8 GB.
    assert all(s <= b for s, b in zip(small["patch_size"], big["patch_size"], strict=True))
    assert small["patch_size"] != big["patch_size"]
    assert small["estimated_memory_gb"] <= 1.2
    assert big["estimated_memory_gb"] <= 8.0
    assert small["batch_size"] == 2
    # Still a valid patch: a multiple of 2**pools on every axis.
    assert all(p % d == 0 for p, d in zip(small["patch_size"], small["network"]["divisible_by"], strict=True))


@pytest.mark.parametrize("budget", [1.0, 0.5])
def test_budget_at_or_below_the_fixed_overhead_raises(budget):
    with pytest.raises(SamdskError):
        plan_from_fingerprint(iso_fp(10), gpu_memory_gb=budget)


# --------------------------------------------------------------------------- batch size


@pytest.mark.parametrize(
    ("n_cases", "batch"),
    [
        # 5% cap: round(0.05 * n * 63,000 / 89,600); memory batch is 47 (see the isotropic test).
        (100, 4),  # round(3.516) = 4 < 47
        (1000, 35),  # round(35.16) = 35 < 47
        (2000, 47),  # round(70.31) = 70 > 47 -> memory bound 47
        (10, 2),  # round(0.352) = 0 -> at least 2
    ],
)
def test_batch_size_is_capped_at_5_percent_of_the_dataset(n_cases, batch):
    cfg = plan_from_fingerprint(iso_fp(n_cases))["configurations"]["3d_fullres"]
    assert cfg["patch_size"] == [40, 56, 40]
    assert cfg["batch_size"] == batch


def test_plan_configuration_batch_from_dataset_voxels():
    # Direct: 3,000,000 voxels * 5% / 89,600 = 1.67 -> 2; 9,000,000 * 5% / 89,600 = 5.02 -> 5.
    assert plan_configuration([1.0, 1.0, 1.0], [35, 50, 36], 3e6, 8.0)["batch_size"] == 2
    assert plan_configuration([1.0, 1.0, 1.0], [35, 50, 36], 9e6, 8.0)["batch_size"] == 5
