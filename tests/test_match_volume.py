"""3D assembly: slice-wise matching along axes, vote fusion, component filtering, scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from samdsk_plan.matching import MatchSettings, match_volume
from samdsk_plan.matching.volume import keep_largest_components, slice_bounds, vote

SHAPE = (14, 16, 12)


def _truth() -> np.ndarray:
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    truth = np.zeros(SHAPE, dtype=np.int16)
    truth[(zz - 6) ** 2 + (yy - 5) ** 2 + (xx - 6) ** 2 <= 16] = 1
    truth[3:10, 9:14, 3:9] = 2
    return truth


def _probs(label: np.ndarray, seed: int = 0, n_classes: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    onehot = np.stack([label == c for c in range(n_classes)]).astype(float)
    noisy = onehot * 0.8 + rng.uniform(0, 0.1, onehot.shape)
    return noisy / noisy.sum(axis=0)


def _proposals(truth: np.ndarray, axes=(0, 1, 2)) -> dict:
    """Per slice: each class's exact cross-section (class 1 cut in two halves), plus distractors."""
    out = {}
    for axis in axes:
        for index in range(truth.shape[axis]):
            sl = np.take(truth, index, axis=axis)
            if not sl.any():
                continue
            half = np.zeros(sl.shape, bool)
            half[:, : sl.shape[1] // 2] = True
            pieces = [(sl == 1) & half, (sl == 1) & ~half, sl == 2]
            distractors = [
                ndimage.binary_dilation(sl > 0, iterations=2),
                np.ones(sl.shape, bool),
                ndimage.binary_dilation(sl == 2),
                (sl == 1) & np.roll(half, 2, axis=1),
            ]
            masks = np.stack([m for m in distractors + pieces if m.any()])
            out[(axis, index)] = masks
    return out


BOUNDS = {0: [(1, 2), (1, 1)], 1: [(1, 2), (1, 1)], 2: [(1, 2), (1, 1)]}


def test_vote_of_three_axes_recovers_the_truth_from_pieces_and_distractors():
    truth = _truth()
    probs = _probs(truth)
    result = match_volume(probs, _proposals(truth), BOUNDS, max_components=[1, 1])
    np.testing.assert_array_equal(result.label, truth)
    assert result.exact
    # every slice with foreground along each axis is matched, exactly
    assert result.n_slices == result.n_exact == sum(truth.any(axis=tuple({0, 1, 2} - {a})).sum() for a in range(3))
    # the score is the soft IoU sum(min(p, L)) / sum(max(p, L)) of the label with the floored p
    for c in (1, 2):
        p = np.where(probs[c] < 0.05, 0.0, probs[c])
        lab = truth == c
        assert result.scores[c] == pytest.approx(np.minimum(p, lab).sum() / np.maximum(p, lab).sum())
    assert result.beta == pytest.approx(np.mean([result.scores[1], result.scores[2]]))
    # chosen ids point at the true pieces of the slices that hold class 1
    masks = _proposals(truth)[(0, 6)]
    np.testing.assert_array_equal(masks[result.chosen["0:6"][1]].any(axis=0), truth[6] == 1)


def test_slices_solved_in_two_processes_give_the_same_match():
    truth = _truth()
    probs = _probs(truth, seed=3)
    proposals = _proposals(truth)
    one = match_volume(probs, proposals, BOUNDS, max_components=[1, 1])
    two = match_volume(probs, proposals, BOUNDS, max_components=[1, 1], workers=2)
    np.testing.assert_array_equal(one.label, two.label)
    assert one.chosen == two.chosen and one.scores == two.scores and one.n_exact == two.n_exact > 0


def test_one_axis_matching_and_class_absent_slices_stay_empty():
    truth = _truth()
    probs = _probs(truth)
    probs[:, :, :, 0:2] = _probs(np.zeros_like(truth))[:, :, :, 0:2]  # model predicts nothing there
    proposals = _proposals(truth, axes=(2,))
    result = match_volume(probs, proposals, {2: BOUNDS[2]}, max_components=[1, 1], fusion="single")
    expected = truth.copy()
    expected[:, :, 0:2] = 0
    np.testing.assert_array_equal(result.label, expected)
    # slices where the model predicts no class are not matched
    assert result.n_slices == truth[:, :, 2:].any(axis=(0, 1)).sum()


def test_the_prediction_as_fourth_voter_keeps_it_unless_two_axes_agree_against_it():
    truth = _truth()
    probs = _probs(truth)
    wrong = truth.copy()
    wrong[6, 5, 6] = 0  # a hole in class 1's centre the prediction did not make
    proposals = _proposals(wrong)
    paper = match_volume(probs, proposals, BOUNDS, max_components=[1, 1], fusion="vote")
    refined = match_volume(probs, proposals, BOUNDS, max_components=[1, 1], fusion="vote_with_prediction")
    # all three axes miss the voxel: the proposals-only vote drops it; with the prediction as a
    # fourth voter it is a 3:1 vote and still drops it
    assert paper.label[6, 5, 6] == 0 and refined.label[6, 5, 6] == 0
    # voxels where only one axis disagrees with prediction and truth keep the prediction
    np.testing.assert_array_equal(refined.label[wrong == truth], truth[wrong == truth])


def test_vote_majority_and_probability_tie_break():
    probs = np.zeros((3, 1, 1, 3))
    probs[:, 0, 0, 0] = [0.2, 0.3, 0.5]
    probs[:, 0, 0, 1] = [0.2, 0.3, 0.5]
    probs[:, 0, 0, 2] = [0.1, 0.6, 0.3]
    a = np.array([[[1, 0, 2]]])
    b = np.array([[[1, 1, 1]]])
    c = np.array([[[2, 2, 0]]])
    # voxel 0: 1 wins 2:1; voxel 1: a three-way tie goes to class 2 (p=0.5); voxel 2: class 1 by p
    np.testing.assert_array_equal(vote([a, b, c], probs), [[[1, 2, 1]]])


def test_keep_largest_components_per_class():
    label = np.zeros((10, 10, 10), dtype=np.int16)
    label[1:3, 1:3, 1:3] = 1  # 8 voxels
    label[5:9, 5:9, 5:9] = 1  # 64 voxels
    label[0, 9, 9] = 2
    label[9, 0, 0] = 2
    out = keep_largest_components(label, [1, 2])
    assert np.count_nonzero(out == 1) == 64 and out[1, 1, 1] == 0
    assert np.count_nonzero(out == 2) == 2
    # diagonal neighbours are one component with full connectivity, two with face connectivity
    diag = np.zeros((3, 3, 3), dtype=np.int16)
    diag[0, 0, 0] = diag[1, 1, 1] = 1
    assert np.count_nonzero(keep_largest_components(diag, [1], "full")) == 2
    assert np.count_nonzero(keep_largest_components(diag, [1], "face")) == 1


def test_slice_bounds_zero_where_the_class_is_absent():
    pred = np.array([[0, 2], [2, 0]])
    assert slice_bounds(pred, [(1, 3), (1, 2)]) == [(0, 0), (1, 2)]


def test_no_predicted_foreground_scores_zero_and_bad_axes_are_rejected():
    truth = _truth()
    empty = _probs(np.zeros_like(truth))
    result = match_volume(empty, _proposals(truth), BOUNDS, max_components=[1, 1])
    assert not result.label.any() and result.beta == 0.0 and result.scores == {}
    for fusion in ("vote", "vote_with_prediction"):
        with pytest.raises(ValueError, match="needs the three axes"):
            match_volume(empty, {}, {2: BOUNDS[2]}, max_components=[1, 1], fusion=fusion)
    with pytest.raises(ValueError, match="one axis"):
        match_volume(empty, {}, BOUNDS, max_components=[1, 1], fusion="single")


def test_background_floor_is_one_floor_for_the_whole_volume():
    """Slices differ in their own background level (noise grows along axis 0); the volume is
    matched under the one floor of its whole probabilities, as a fixed floor of that value."""
    truth = _truth()
    probs = _probs(truth)
    ramp = np.linspace(0.0, 0.3, SHAPE[0])[None, :, None, None] * (truth == 0)[None]
    probs = probs + ramp * np.array([0.0, 1.0, 0.5])[:, None, None, None]
    probs /= probs.sum(axis=0)
    rule = MatchSettings(floor_rule="background", floor_margin=0.05)
    floor = rule.floor(probs)
    per_slice = {MatchSettings(floor_rule="background").floor(probs[:, i]) for i in (0, SHAPE[0] - 1)}
    assert len(per_slice) == 2 and floor not in per_slice, "the slices' own floors differ from the volume's"
    proposals = _proposals(truth)
    result = match_volume(probs, proposals, BOUNDS, max_components=[1, 1], settings=rule)
    fixed = match_volume(probs, proposals, BOUNDS, max_components=[1, 1], settings=MatchSettings(prob_floor=floor))
    np.testing.assert_array_equal(result.label, fixed.label)
    assert result.scores == fixed.scores and result.chosen == fixed.chosen
    assert result.floor == fixed.floor == floor, "the match records the floor it was made under"
