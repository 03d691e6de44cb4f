"""Multi-class matching on one slice: brute force, bounds, monotonicity, known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samdsk_plan.matching import MatchSettings, background_level, match_slice, union_score
from samdsk_plan.matching.assign import MAX_FLOOR, class_targets, resolve_overlaps

DEFAULT_SETTINGS = MatchSettings()


def brute_force(masks, probs, bounds, settings=DEFAULT_SETTINGS) -> float:
    """Best objective over every assignment of each proposal to no class or one class."""
    targets = class_targets(probs, settings.target, settings.prob_floor)
    metric = settings.metric
    n_fg = len(bounds)
    best = -1.0
    for owners in itertools.product(range(n_fg + 1), repeat=len(masks)):
        sets = [[k for k, o in enumerate(owners) if o == c + 1] for c in range(n_fg)]
        if any(not lo <= len(s) <= hi for s, (lo, hi) in zip(sets, bounds, strict=True)):
            continue
        best = max(best, sum(union_score(masks, targets[c], s, metric) for c, s in enumerate(sets)))
    return best


@st.composite
def instances(draw, max_upper=3):
    h, w = draw(st.integers(3, 5)), draw(st.integers(3, 5))
    n_fg = draw(st.integers(1, 2))
    n = draw(st.integers(n_fg, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    masks = rng.random((n, h, w)) < rng.uniform(0.15, 0.6)
    masks[~masks.reshape(n, -1).any(axis=1), 0, 0] = True  # no empty proposal
    logits = rng.normal(0, 2, (n_fg + 1, h, w))
    probs = np.exp(logits) / np.exp(logits).sum(axis=0)
    lowers = [draw(st.integers(0, 1)) for _ in range(n_fg)]
    bounds = [(lo, draw(st.integers(lo, max(lo, max_upper)))) for lo in lowers]
    return masks, probs, bounds


@settings(max_examples=150, deadline=None)
@given(instances(), st.sampled_from(["iou", "dice"]), st.sampled_from(["soft", "hard"]), st.sampled_from([0.0, 0.2]))
def test_equals_brute_force_and_respects_bounds(instance, metric, target, floor):
    masks, probs, bounds = instance
    settings = MatchSettings(metric=metric, target=target, prob_floor=floor)
    result = match_slice(masks, probs, bounds, settings)
    assert result.exact
    assert result.objective == pytest.approx(brute_force(masks, probs, bounds, settings), abs=1e-9)
    used = [k for s in result.chosen.values() for k in s]
    assert len(used) == len(set(used)), "a proposal went to two classes"
    for c, (lo, hi) in enumerate(bounds, start=1):
        assert lo <= len(result.chosen[c]) <= hi
    targets = class_targets(probs, target, floor)
    for c, s in result.chosen.items():
        assert result.scores[c] == pytest.approx(union_score(masks, targets[c - 1], s, metric))


@settings(max_examples=100, deadline=None)
@given(instances(), st.integers(0, 3), st.integers(0, 3), st.sampled_from(["soft", "hard"]))
def test_proposals_on_a_window_match_as_on_the_whole_slice(instance, top, left, target):
    """Masks on a window of a larger slice (the region of interest): the optimum over the whole
    slice (brute force on full-size masks) and the same label, pasted at the window."""
    masks, probs, bounds = instance
    n_classes, (h, w) = probs.shape[0], probs.shape[1:]
    rng = np.random.default_rng(top * 7 + left)
    big = rng.dirichlet(np.ones(n_classes) * 0.3, (h + top + 2, w + left + 1)).transpose(2, 0, 1)
    big[:, top : top + h, left : left + w] = probs  # the model's mass also lies outside the window
    full = np.zeros((len(masks), *big.shape[1:]), bool)
    full[:, top : top + h, left : left + w] = masks
    settings = MatchSettings(target=target)
    windowed = match_slice(masks, big, bounds, settings, offset=(top, left))
    assert windowed.exact
    assert windowed.objective == pytest.approx(brute_force(full, big, bounds, settings), abs=1e-9)
    assert windowed.label.shape == big.shape[1:]
    expected = match_slice(full, big, bounds, settings)
    assert windowed.objective == pytest.approx(expected.objective, abs=1e-12)
    assert not windowed.label[:top].any() and not windowed.label[:, :left].any()


@settings(max_examples=100, deadline=None)
@given(instances(), st.integers(2, 3), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2**31 - 1))
def test_masks_on_blocks_match_as_their_pixels_do(instance, scale, top, left, seed):
    """Masks on a coarse grid (one mask pixel per ``scale x scale`` block of a window, the last
    blocks cut by the window's edge) give the same optimum, choices and label as the same
    masks blown up to the pixels; brute force on the pixels agrees."""
    masks, _, bounds = instance
    rng = np.random.default_rng(seed)
    gh, gw = masks.shape[1:]
    h, w = gh * scale - int(rng.integers(0, scale)), gw * scale - int(rng.integers(0, scale))
    pixels = masks[:, np.arange(h)[:, None] // scale, np.arange(w)[None, :] // scale]
    n_classes = len(bounds) + 1
    probs = rng.dirichlet(np.ones(n_classes) * 0.3, (h + top + 1, w + left + 2)).transpose(2, 0, 1)
    coarse = match_slice(masks, probs, bounds, offset=(top, left), scale=scale, size=(h, w))
    fine = match_slice(pixels, probs, bounds, offset=(top, left))
    assert coarse.exact and fine.exact
    assert coarse.chosen == fine.chosen and coarse.scores == pytest.approx(fine.scores, abs=1e-12)
    np.testing.assert_array_equal(coarse.label, fine.label)
    full = np.zeros((len(masks), *probs.shape[1:]), bool)
    full[:, top : top + h, left : left + w] = pixels
    assert coarse.objective == pytest.approx(brute_force(full, probs, bounds), abs=1e-9)


def test_coarse_masks_must_cover_their_window():
    with pytest.raises(ValueError, match="scale 2"):  # 5 pixels need 3 blocks of 2
        match_slice(np.ones((1, 2, 2), bool), np.full((2, 6, 6), 0.5), [(0, 1)], scale=2, size=(5, 4))
    with pytest.raises(ValueError, match="exactly when"):
        match_slice(np.ones((1, 2, 2), bool), np.full((2, 6, 6), 0.5), [(0, 1)], scale=2)
    empty = match_slice(np.zeros((0, 3, 2), bool), np.full((2, 6, 6), 0.5), [(0, 1)], scale=2, size=(5, 4))
    assert not empty.label.any() and empty.chosen == {1: ()}


def test_a_window_outside_the_slice_is_rejected():
    with pytest.raises(ValueError, match="inside"):
        match_slice(np.ones((1, 3, 3), bool), np.full((2, 4, 4), 0.5), [(0, 1)], offset=(2, 0))


@settings(max_examples=100, deadline=None)
@given(instances(), st.integers(0, 2**31 - 1))
def test_adding_a_proposal_never_lowers_the_optimum(instance, seed):
    masks, probs, bounds = instance
    extra = np.random.default_rng(seed).random((1,) + masks.shape[1:]) < 0.4
    extra[0, -1, -1] = True
    before = match_slice(masks, probs, bounds).objective
    after = match_slice(np.concatenate([masks, extra]), probs, bounds).objective
    assert after >= before - 1e-12


@settings(max_examples=100, deadline=None)
@given(instances(max_upper=1), st.sampled_from(["iou", "dice"]))
def test_with_upper_bounds_one_the_search_equals_the_assignment(instance, metric):
    masks, probs, bounds = instance
    assignment = match_slice(masks, probs, bounds, MatchSettings(metric=metric, solver="assignment"))
    search = match_slice(masks, probs, bounds, MatchSettings(metric=metric, solver="search"))
    assert search.objective == pytest.approx(assignment.objective, abs=1e-9)


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_recovers_a_ground_truth_split_into_pieces_among_distractors():
    shape = (40, 40)
    rng = np.random.default_rng(0)
    truth = np.zeros(shape, dtype=np.int16)
    truth[_disc(shape, (12, 12), 7)] = 1
    truth[_disc(shape, (28, 28), 6)] = 2
    # class 1 comes in two halves, class 2 whole; distractors overlap both
    left = (truth == 1) & (np.arange(40)[None, :] < 12)
    right = (truth == 1) & (np.arange(40)[None, :] >= 12)
    pieces = [left, right, truth == 2]
    distractors = [
        _disc(shape, (12, 14), 9),
        _disc(shape, (26, 26), 4),
        _disc(shape, (20, 20), 10),
        np.ones(shape, bool),
        _disc(shape, (5, 35), 3),
        right | _disc(shape, (20, 5), 3),
    ]
    masks = np.stack(distractors[:3] + pieces + distractors[3:])
    onehot = np.stack([truth == c for c in range(3)]).astype(float)
    noisy = np.clip(onehot * 0.75 + rng.uniform(0, 0.25, onehot.shape), 1e-3, None)
    probs = noisy / noisy.sum(axis=0)
    result = match_slice(masks, probs, [(1, 2), (1, 1)])
    assert result.exact
    np.testing.assert_array_equal(result.label, truth)
    assert result.chosen == {1: (3, 4), 2: (5,)}
    # with one proposal per class the halves cannot both be taken: the label is worse
    single = match_slice(masks, probs, [(1, 1), (1, 1)])
    assert np.count_nonzero(single.label != truth) > 0


def test_overlapping_proposals_of_two_classes_resolve_by_probability():
    probs = np.zeros((3, 1, 6))
    probs[1] = [[0.9, 0.9, 0.6, 0.2, 0.0, 0.0]]
    probs[2] = [[0.0, 0.0, 0.3, 0.7, 0.9, 0.9]]
    probs[0] = 1 - probs[1] - probs[2]
    a = np.array([[[1, 1, 1, 1, 0, 0]]], bool)  # class 1's best, reaches into class 2
    b = np.array([[[0, 0, 1, 1, 1, 1]]], bool)  # class 2's best, reaches into class 1
    result = match_slice(np.concatenate([a, b]), probs, [(1, 1), (1, 1)])
    assert result.chosen == {1: (0,), 2: (1,)}
    np.testing.assert_array_equal(result.label, [[1, 1, 1, 2, 2, 2]])


def test_zero_bounds_keep_a_class_empty_and_hard_targets_use_the_argmax():
    probs = np.zeros((3, 2, 2))
    probs[0], probs[1], probs[2] = 0.2, 0.5, 0.3
    masks = np.ones((1, 2, 2), bool)
    result = match_slice(masks, probs, [(0, 0), (1, 1)])
    assert result.chosen == {1: (), 2: (0,)}
    assert result.scores[1] == 0.0  # class 1 has probability mass but gets nothing
    assert result.scores[2] == pytest.approx(0.3)  # soft IoU: sum(min) / sum(max) = 1.2 / 4
    hard = match_slice(masks, probs, [(0, 0), (1, 1)], MatchSettings(target="hard"))
    assert hard.scores[2] == 0.0  # class 2 wins no pixel: its hard target is empty


def test_resolve_overlaps_leaves_unclaimed_pixels_background():
    masks = np.zeros((2, 3, 3), bool)
    masks[0, 0] = True
    masks[1, :2] = True
    probs = np.full((3, 3, 3), 1 / 3)
    probs[2, 0] = 0.6
    label = resolve_overlaps(masks, probs, [(0,), (1,)])
    np.testing.assert_array_equal(label, [[2, 2, 2], [2, 2, 2], [0, 0, 0]])


def test_bad_inputs_are_rejected():
    masks = np.ones((1, 2, 2), bool)
    probs = np.full((2, 2, 2), 0.5)
    with pytest.raises(ValueError, match="one \\(lower, upper\\) bound per foreground class"):
        match_slice(masks, probs, [(1, 1), (1, 1)])
    with pytest.raises(ValueError, match="lower <= upper"):
        match_slice(masks, probs, [(2, 1)])
    with pytest.raises(ValueError, match="needs every upper bound <= 1"):
        match_slice(masks, probs, [(1, 2)], MatchSettings(solver="assignment"))
    with pytest.raises(ValueError, match="metric must be one of"):
        MatchSettings(metric="f1")
    with pytest.raises(ValueError, match="grid"):
        match_slice(np.ones((1, 3, 3), bool), probs, [(1, 1)])


def _under_trained_slice() -> tuple[np.ndarray, np.ndarray]:
    """Softmax ``(2, 10, 10)``: a 3x3 object at p = 0.9, the rest at 0.4; proposals ``(2, 10, 10)``:
    the exact object and a 6x6 square holding it."""
    probs_fg = np.full((10, 10), 0.4)
    probs_fg[2:5, 2:5] = 0.9
    exact, large = np.zeros((2, 10, 10), bool)
    exact[2:5, 2:5] = True
    large[2:8, 2:8] = True
    return np.stack([1 - probs_fg, probs_fg]), np.stack([exact, large])


def test_chance_floor_ignores_an_under_trained_background():
    """One class; the object (3x3) at p = 0.9 and the rest of the 10x10 slice at p = 0.4 (a model
    that never became confident of the background). At a floor of 0.05 the background's mass
    decides: the 6x6 proposal scores (8.1 + 27 * 0.4) / (36 + 64 * 0.4) = 0.307 against the exact
    one's 8.1 / (9 + 91 * 0.4) = 0.178. At the chance floor (1/2) only the object counts: 0.9 vs 0.225."""
    probs, masks = _under_trained_slice()
    low = match_slice(masks, probs, [(1, 1)], MatchSettings(prob_floor=0.05))
    assert low.chosen[1] == (1,) and low.beta == pytest.approx(18.9 / 61.6)
    chance = match_slice(masks, probs, [(1, 1)], MatchSettings(prob_floor=0.5))
    assert chance.chosen[1] == (0,) and chance.beta == pytest.approx(0.9)


def test_background_floor_rises_above_an_under_trained_background():
    """The slice above: the background's class-1 median is 0.4, so the ``"background"`` rule's
    floor is 0.4 + 0.05 = 0.45 and only the object counts, as at chance: the exact proposal, 0.9."""
    probs, masks = _under_trained_slice()
    rule = MatchSettings(floor_rule="background", floor_margin=0.05)
    assert background_level(probs) == pytest.approx(0.4)
    assert rule.floor(probs) == pytest.approx(0.45)
    assert rule.for_case(probs) == MatchSettings(prob_floor=rule.floor(probs))
    match = match_slice(masks, probs, [(1, 1)], rule)
    assert match.chosen[1] == (0,) and match.beta == pytest.approx(0.9)


def test_background_floor_stays_low_for_a_confident_model_and_keeps_its_bounds():
    """Three classes, background (0.96, 0.03, 0.01): level 0.03, floor 0.08 (below chance, 1/3);
    ``prob_floor`` is its lower bound, :data:`MAX_FLOOR` its upper; no predicted background: level 0."""
    probs = np.zeros((3, 6, 6))
    probs[:] = np.array([0.96, 0.03, 0.01])[:, None, None]
    probs[:, 1:3, 1:3] = np.array([0.1, 0.7, 0.2])[:, None, None]
    assert background_level(probs) == pytest.approx(0.03)
    assert MatchSettings(floor_rule="background").floor(probs) == pytest.approx(0.08)
    assert MatchSettings(floor_rule="background", prob_floor=0.2).floor(probs) == pytest.approx(0.2)
    assert MatchSettings(floor_rule="background", floor_margin=0.98).floor(probs) == MAX_FLOOR
    assert MatchSettings(prob_floor=0.2).floor(probs) == 0.2, "the fixed rule ignores the model"
    all_foreground = probs[:, 1:3, 1:3]
    assert background_level(all_foreground) == 0.0
    assert MatchSettings(floor_rule="background", floor_margin=0.1).floor(all_foreground) == 0.1
    with pytest.raises(ValueError, match="floor_rule"):
        MatchSettings(floor_rule="median")
    with pytest.raises(ValueError, match="floor_margin"):
        MatchSettings(floor_margin=1.0)
