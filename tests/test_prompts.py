"""Box prompts from a prediction and from a grid: known boxes on synthetic slices."""

from __future__ import annotations

import numpy as np
import pytest

from samdsk_plan.proposals.prompts import (
    box_variants,
    clip_box,
    grid_prompts,
    interior_point,
    prompts_from_prediction,
    region_boxes,
)


def _probs(label: np.ndarray, n_classes: int, sure: float = 0.9) -> np.ndarray:
    """Softmax-like maps with ``sure`` on the labelled class and the rest spread evenly."""
    probs = np.full((n_classes, *label.shape), (1 - sure) / (n_classes - 1), dtype=np.float32)
    for c in range(n_classes):
        probs[c][label == c] = sure
    return probs


def test_region_boxes_are_inclusive_xy_corners():
    mask = np.zeros((20, 30), bool)
    mask[2:5, 10:18] = True  # rows 2..4, columns 10..17
    mask[12, 3] = True
    assert region_boxes(mask) == [(10.0, 2.0, 17.0, 4.0), (3.0, 12.0, 3.0, 12.0)]


def test_diagonal_neighbours_are_one_region_only_with_full_connectivity():
    mask = np.eye(4, dtype=bool)
    assert region_boxes(mask, "full") == [(0.0, 0.0, 3.0, 3.0)]
    assert len(region_boxes(mask, "face")) == 4


def test_box_variants_scale_about_the_centre_and_shift_by_the_box_size():
    # a 10 x 20 box (columns 10..19, rows 20..29) in a 100 x 100 slice
    box = (10.0, 20.0, 19.0, 29.0)
    variants = box_variants(box, (100, 100), scales=(1.0, 2.0), shift=0.1)
    assert variants[0] == box
    # twice the size about the centre (14.5, 24.5): 20 px wide, 20 px high
    assert variants[1] == (5.0, 15.0, 24.0, 34.0)
    # shifted by 10% of the 10 px width / height: left, right, up, down
    assert variants[2:] == [
        (9.0, 20.0, 18.0, 29.0),
        (11.0, 20.0, 20.0, 29.0),
        (10.0, 19.0, 19.0, 28.0),
        (10.0, 21.0, 19.0, 30.0),
    ]


def test_variants_are_clipped_to_the_slice_and_deduplicated():
    box = (0.0, 0.0, 9.0, 9.0)  # the whole 10 x 10 slice
    variants = box_variants(box, (10, 10), scales=(1.0, 1.25), shift=0.1)
    # the 1.25 box clips back to the slice (a duplicate, dropped); each 1 px shift loses its outer column / row
    assert variants == [box, (0.0, 0.0, 8.0, 9.0), (1.0, 0.0, 9.0, 9.0), (0.0, 0.0, 9.0, 8.0), (0.0, 1.0, 9.0, 9.0)]
    assert clip_box((-5.0, 3.0, 50.0, 4.0), (10, 20)) == (0.0, 3.0, 19.0, 4.0)


def test_prompts_cover_every_predicted_region_and_skip_absent_classes():
    label = np.zeros((40, 40), np.int64)
    label[5:10, 5:10] = 1
    label[20:30, 25:35] = 1  # class 1: two regions
    probs = _probs(label, 3)  # class 2 predicted nowhere
    prompts = prompts_from_prediction(probs, scales=(1.0,), shift=0.0)
    assert [(p.label, p.region, p.box) for p in prompts] == [
        (1, 0, (5.0, 5.0, 9.0, 9.0)),
        (1, 1, (25.0, 20.0, 34.0, 29.0)),
    ]
    assert prompts_from_prediction(_probs(np.zeros((8, 8), np.int64), 3)) == []


def test_lower_cut_adds_the_regions_the_argmax_misses():
    label = np.zeros((30, 30), np.int64)
    label[2:6, 2:6] = 1
    probs = _probs(label, 2)
    probs[1, 20:25, 20:25], probs[0, 20:25, 20:25] = 0.4, 0.6  # class 1 likely, but not the argmax
    assert len(prompts_from_prediction(probs)) == 1
    found = prompts_from_prediction(probs, lower_cut=0.3)
    assert [p.box for p in found] == [(2.0, 2.0, 5.0, 5.0), (20.0, 20.0, 24.0, 24.0)]
    assert [p.region for p in found] == [0, 1]


def test_grid_tiles_the_slice_flush_with_its_edges():
    prompts = grid_prompts((100, 60), sizes=[20.0], overlap=0.5)
    boxes = np.array([p.box for p in prompts])
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 59 and boxes[:, 1].min() == 0 and boxes[:, 3].max() == 99
    assert np.all(boxes[:, 2] - boxes[:, 0] == 19) and np.all(boxes[:, 3] - boxes[:, 1] == 19)
    # stride 10 px: starts 0, 10, ..., 80 (9) down and 0, 10, ..., 40 (5) across
    assert len(prompts) == 45
    assert all(p.label == 0 for p in prompts) and [p.region for p in prompts] == list(range(45))


@pytest.mark.parametrize("max_boxes", [1, 8, 30])
def test_grid_respects_its_box_budget(max_boxes):
    assert 1 <= len(grid_prompts((256, 256), sizes=[16.0], max_boxes=max_boxes)) <= max_boxes


def test_interior_point_is_the_deepest_pixel_of_the_region_in_the_box():
    mask = np.zeros((20, 30), bool)
    mask[2:9, 3:14] = True  # 7 x 11: deepest at its centre row 5, column 8
    mask[15:18, 20:23] = True
    assert interior_point(mask, (3.0, 2.0, 13.0, 8.0)) == (8.0, 5.0)
    assert interior_point(mask, (20.0, 15.0, 22.0, 17.0)) == (21.0, 16.0)
    assert interior_point(mask, (25.0, 0.0, 29.0, 4.0)) == (27.0, 2.0)  # no pixel in the box: its centre


def test_max_regions_prompts_only_the_largest_regions():
    label = np.zeros((40, 40), np.int64)
    label[1:3, 1:3] = 1  # 4 px
    label[10:20, 10:20] = 1  # 100 px
    label[30:35, 2:7] = 1  # 25 px
    label[30:31, 30:31] = 1  # 1 px
    probs = _probs(label, 2)
    found = prompts_from_prediction(probs, max_regions=2)
    assert [p.box for p in found] == [(10.0, 10.0, 19.0, 19.0), (2.0, 30.0, 6.0, 34.0)]  # row-major order kept
    assert len(prompts_from_prediction(probs, max_regions=9)) == len(prompts_from_prediction(probs)) == 4


@pytest.mark.parametrize("seed", range(20))
def test_max_regions_keeps_the_k_largest_against_brute_force(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    mask = rng.random((24, 24)) > 0.8
    k = int(rng.integers(1, 6))
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    sizes = sorted(((int((labels == i).sum()), i) for i in range(1, n + 1)), key=lambda t: (-t[0], t[1]))
    expected = set()
    for _, i in sizes[:k]:
        rows, cols = np.nonzero(labels == i)
        expected.add((float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())))
    assert set(region_boxes(mask, "full", k)) == expected
    assert len(region_boxes(mask, "full", k)) == min(k, n)
