"""Planning from a fingerprint: target spacing and the anisotropy test.

The rules behind the known answers are listed in tests/planning_cases.py.
"""

from __future__ import annotations

import pytest

from samdsk_plan.planning import plan_from_fingerprint, target_spacing
from tests.planning_cases import aniso_fp, make_fp, permute

# --------------------------------------------------------------------------- target spacing


def test_isotropic_target_spacing_is_the_median():
    fp = make_fp([((30, 30, 30), (1.0, 1.0, 1.0)), ((30, 30, 30), (1.2, 1.0, 0.9)), ((30, 30, 30), (1.4, 1.1, 0.8))])
    spacing, reason = target_spacing(fp)
    # Per-axis medians: axis 0 of [1.0, 1.2, 1.4] = 1.2, axis 1 of [1.0, 1.0, 1.1] = 1.0,
    # axis 2 of [1.0, 0.9, 0.8] = 0.9; 1.2 < 3 * 0.9, so not anisotropic.
    assert spacing == pytest.approx([1.2, 1.0, 0.9])
    assert "median" in reason


@pytest.mark.parametrize("coarse_axis", [0, 2])
def test_anisotropic_target_spacing_takes_the_10th_percentile(coarse_axis):
    fp = aniso_fp(coarse_axis)
    spacing, reason = target_spacing(fp)
    # Median coarse spacing 5.0 > 3 * 0.8 = 2.4 and median coarse voxels 20 * 3 = 60 < 400:
    # anisotropic -> 10th percentile of [3.5, 4.0, 5 x8, 6.0] = 4.0 (>= 0.8, so kept).
    assert spacing == pytest.approx(permute([4.0, 0.8, 0.8], coarse_axis))
    assert "anisotropic" in reason


def test_anisotropic_10th_percentile_interpolates_linearly():
    # 10 cases, sorted coarse spacings [3.0, 4.0, 5 x8]: np.percentile(.., 10) at index 0.9
    # -> 3.0 + 0.9 * (4.0 - 3.0) = 3.9 (median 5.0 -> anisotropic as above).
    fp = aniso_fp(0, coarse_spacings=[3.0, 4.0] + [5.0] * 8)
    spacing, _ = target_spacing(fp)
    assert spacing == pytest.approx([3.9, 0.8, 0.8])


def test_anisotropic_10th_percentile_is_not_finer_than_the_other_axes():
    # Sorted coarse spacings [0.3, 0.5, 5 x9]: median 5.0 (anisotropic), 10th percentile 0.5 is
    # finer than the in-plane 0.8 mm, so it is raised to 0.8 (+1e-5 in nnU-Net).
    fp = aniso_fp(0, coarse_spacings=[0.3, 0.5] + [5.0] * 9)
    spacing, _ = target_spacing(fp)
    assert spacing[0] >= 0.8
    assert spacing == pytest.approx([0.8, 0.8, 0.8], abs=1e-4)


def test_anisotropic_spacing_but_enough_voxels_keeps_the_median():
    # Spacing condition holds (5.0 > 2.4), but 200 coarse voxels * 3 = 600 >= 400 in-plane voxels:
    # the voxel-count condition fails, so the median 5.0 is kept (not the 10th percentile 4.0).
    fp = aniso_fp(0, coarse_voxels=200)
    spacing, reason = target_spacing(fp)
    assert spacing == pytest.approx([5.0, 0.8, 0.8])
    assert "not anisotropic" in reason


def test_anisotropy_compares_with_the_next_coarsest_axis():
    # Median spacing (0.8, 1.5, 4.45): 4.45 > 3 * 0.8 but not > 3 * 1.5 = 4.5, so nnU-Net keeps the
    # median 4.45 even though the coarse axis has few voxels (40 * 3 < 200).
    cases = [((200, 200, 40), (0.8, 1.5, 4.0 + 0.1 * i)) for i in range(10)]
    spacing = plan_from_fingerprint(make_fp(cases))["target_spacing"]
    assert spacing == pytest.approx([0.8, 1.5, 4.45])
