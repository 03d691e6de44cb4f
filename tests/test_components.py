"""Connected components and per-slice regions on masks with known answers."""

import numpy as np
import pytest

from samdsk_plan.fingerprint import component_sizes, slice_components, structuring_element
from tests.conftest import BALL_SLICE_AREAS, BALL_VOXELS, ball


def test_two_balls_are_two_components():
    mask = ball((5, 6, 6)) | ball((14, 6, 6))
    np.testing.assert_array_equal(component_sizes(mask), [BALL_VOXELS, BALL_VOXELS])


def test_diagonal_neighbours_depend_on_connectivity():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # touching at a corner only
    assert component_sizes(mask, "full").tolist() == [2]
    assert component_sizes(mask, "face").tolist() == [1, 1]
    edge = np.zeros((3, 3, 3), dtype=bool)
    edge[0, 0, 0] = edge[1, 1, 0] = True  # touching along an edge
    assert len(component_sizes(edge, "face")) == 2 and len(component_sizes(edge, "full")) == 1


def test_empty_mask_has_no_components():
    assert component_sizes(np.zeros((4, 4, 4), bool)).size == 0
    counts, areas = slice_components(np.zeros((4, 4, 4), bool), axis=1)
    assert counts.size == 0 and areas.size == 0


def test_slices_of_two_balls():
    mask = ball((5, 6, 6)) | ball((14, 6, 6))
    # Along axis 0 the balls are apart: 14 slices with one disc each.
    counts, areas = slice_components(mask, axis=0)
    assert counts.tolist() == [1] * 14
    assert areas.tolist() == BALL_SLICE_AREAS * 2
    # Along axes 1 and 2 every one of 7 slices cuts both balls.
    for axis in (1, 2):
        counts, areas = slice_components(mask, axis=axis)
        assert counts.tolist() == [2] * 7
        assert sorted(areas.tolist()) == sorted(BALL_SLICE_AREAS * 2)


def test_slices_are_labelled_independently():
    # A diagonal staircase: connected in 3D (full), one pixel per slice along axis 2.
    mask = np.zeros((5, 5, 5), dtype=bool)
    for k in range(5):
        mask[k, k, k] = True
    assert component_sizes(mask, "full").tolist() == [5]
    counts, areas = slice_components(mask, axis=2, connectivity="full")
    assert counts.tolist() == [1] * 5 and areas.tolist() == [1] * 5


def test_u_shape_splits_into_two_regions_per_slice():
    mask = np.zeros((6, 24, 12), dtype=bool)
    mask[2:5, 14:16, 2:10] = mask[2:5, 20:22, 2:10] = mask[2:5, 14:22, 2:4] = True
    assert component_sizes(mask).size == 1
    counts, _ = slice_components(mask, axis=2)
    assert counts.tolist() == [1, 1] + [2] * 6


def test_structuring_element_rejects_unknown_connectivity():
    with pytest.raises(ValueError, match="connectivity"):
        structuring_element(3, "diagonal")
