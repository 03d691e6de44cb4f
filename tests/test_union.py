"""best_union against brute force, properties, and instances with known answers."""

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import samdsk_plan.matching.union as union_module
from samdsk_plan.matching import best_union, union_score
from samdsk_plan.matching.union import atoms

SLICE = (35, 50)


def dice_iou(masks: np.ndarray, target: np.ndarray, subset) -> tuple[float, float]:
    """Reference scores, written independently of the module: soft Dice and soft Jaccard."""
    t = target.reshape(-1).astype(float)
    u = np.zeros(t.size) if not subset else masks[list(subset)].reshape(len(subset), -1).any(axis=0)
    overlap, union_area, total = (t * u).sum(), u.sum(), t.sum()
    if union_area + total == 0:
        return 1.0, 1.0
    return 2 * overlap / (union_area + total), np.minimum(t, u).sum() / np.maximum(t, u).sum()


def brute_force(masks, target, k_max, k_min, metric) -> float:
    which = 0 if metric == "dice" else 1
    return max(
        dice_iou(masks, target, s)[which]
        for k in range(k_min, min(k_max, len(masks)) + 1)
        for s in combinations(range(len(masks)), k)
    )


def random_instance(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to 10 overlapping masks (with nested ones, unions, copies and the odd empty mask) and
    a soft, binary, sparse-soft or all-zero target."""
    n, p = int(rng.integers(1, 11)), int(rng.integers(4, 25))
    masks = rng.random((n, p)) < rng.uniform(0.1, 0.6)
    for i in range(1, n):
        kind, j, k = rng.integers(6), rng.integers(i), rng.integers(i)
        if kind == 0:
            masks[i] = masks[j]  # a copy
        elif kind == 1:
            masks[i] = masks[j] & (rng.random(p) < 0.6)  # nested inside another
        elif kind == 2:
            masks[i] = masks[j] | masks[k]  # a parent of two others
        elif kind == 3 and rng.random() < 0.3:
            masks[i] = False
    kind = rng.integers(4)
    if kind == 0:
        target = (rng.random(p) < 0.4).astype(float)
    elif kind == 1:
        target = rng.random(p)
    elif kind == 2:
        target = rng.random(p) * (rng.random(p) < 0.5)
    else:
        target = np.zeros(p) if rng.random() < 0.3 else np.round(rng.random(p), 1)
    if rng.random() < 0.3:  # the same problem as (N, H, W) masks and an (H, W) target
        return masks.reshape(n, 1, p), target.reshape(1, p)
    return masks, target


def ellipse(center, radii, shape=SLICE, angle=0.0) -> np.ndarray:
    yy, xx = np.indices(shape)
    y, x = yy - center[0], xx - center[1]
    u = y * np.cos(angle) + x * np.sin(angle)
    v = -y * np.sin(angle) + x * np.cos(angle)
    return (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1


def random_blobs(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    blobs = []
    while len(blobs) < n:
        blob = ellipse(rng.uniform(0, SLICE), rng.uniform(1.5, 10, 2), angle=rng.uniform(0, np.pi))
        if blob.any():
            blobs.append(blob)
    return blobs


def test_equals_brute_force_on_random_instances():
    rng = np.random.default_rng(0)
    for trial in range(400):
        masks, target = random_instance(rng)
        k_max = int(rng.integers(1, 5))
        k_min = int(rng.integers(0, min(3, k_max, len(masks)) + 1))
        metric = ("dice", "iou")[trial % 2]
        result = best_union(masks, target, k_max, k_min, metric)
        assert result.exact
        assert result.score == pytest.approx(brute_force(masks, target, k_max, k_min, metric), abs=1e-9)
        assert k_min <= len(result.indices) <= k_max
        assert result.score == pytest.approx(dice_iou(masks, target, result.indices)[trial % 2], abs=1e-12)


def test_equals_brute_force_for_larger_k():
    """Up to 12 masks and k_max of 4 or 5: the depth-first search below the pairs."""
    rng = np.random.default_rng(5)
    for _trial in range(60):
        masks, target = random_instance(rng)
        extra, _ = random_instance(rng)
        if extra.shape[-1] == masks.shape[-1] and extra.ndim == masks.ndim:
            masks = np.concatenate([masks, extra])[:12]
        k_max = int(rng.integers(4, 6))
        k_min = int(rng.integers(0, min(3, len(masks)) + 1))
        result = best_union(masks, target, k_max, k_min)
        assert result.exact
        assert result.score == pytest.approx(brute_force(masks, target, k_max, k_min, "dice"), abs=1e-9)
        assert k_min <= len(result.indices) <= k_max


def test_equals_brute_force_with_realistic_blobs():
    """Ellipses on a 35 x 50 slice, parts and near-copies of a soft target, k_max = 3."""
    rng = np.random.default_rng(1)
    for _ in range(3):
        organ = ellipse(rng.uniform((12, 15), (22, 35)), rng.uniform((4, 6), (7, 12)))
        target = np.clip(organ * rng.uniform(0.7, 1.0, SLICE) + rng.uniform(0, 0.1, SLICE), 0, 1)
        pieces = [organ & ellipse(rng.uniform(0, SLICE), rng.uniform(3, 9, 2)) for _ in range(8)]
        candidates = random_blobs(rng, 14) + pieces + [organ | random_blobs(rng, 1)[0]]
        masks = np.array([m for m in candidates if m.any()])
        result = best_union(masks, target, 3)
        assert result.exact
        assert result.score == pytest.approx(brute_force(masks, target, 3, 1, "dice"), abs=1e-9)


def test_merging_near_duplicates_never_lowers_the_optimum():
    """Masks plus near-copies that a merge drops (the same region with confident-background
    pixels added, or with certain-target pixels removed): the optimum over all of them, by
    brute force, and fewer candidates searched."""
    rng = np.random.default_rng(9)
    merged = 0
    for _ in range(150):
        masks, target = random_instance(rng)
        flat, t = masks.reshape(len(masks), -1), target.reshape(-1)
        extra = []
        for m in flat[rng.permutation(len(flat))[:4]]:
            background = (t == 0) & (rng.random(t.size) < 0.5)
            certain = (t == 1) & (rng.random(t.size) < 0.5)
            extra += [m | background, m & ~certain]
        both = np.vstack([flat, np.array(extra, bool).reshape(-1, t.size)])
        k_max = int(rng.integers(1, 5))
        result = best_union(both, t, k_max, 1)
        assert result.exact
        assert result.score == pytest.approx(brute_force(both, t, k_max, 1, "dice"), abs=1e-9)
        distinct = len({row.tobytes() for row in both if (row * t).sum() > 0})
        merged += result.n_candidates < distinct
    assert merged > 50, "the near-copies are merged"


def test_near_copies_are_kept_past_the_pair_table_limit(monkeypatch):
    """The dominance test needs pair tables: past MAX_PAIRWISE_CANDIDATES it is skipped (the
    near-copy stays a candidate) and the search falls back to its incumbent, flagged inexact,
    as it does for too many survivors."""
    mask = np.zeros(12, bool)
    mask[:4] = True
    target = np.where(mask, 0.8, 0.0)
    grown = mask.copy()
    grown[6] = True  # plus a confident-background pixel: dominated by ``mask``
    masks = np.array([mask, grown, ~mask])
    assert best_union(masks, target, 2).n_candidates == 1
    monkeypatch.setattr(union_module, "MAX_PAIRWISE_CANDIDATES", 1)
    result = best_union(masks, target, 2)
    assert not result.exact and result.n_candidates == 2 and result.indices == (0,)
    assert result.score == pytest.approx(brute_force(masks, target, 2, 1, "dice"), abs=1e-12)


def test_recovers_three_disjoint_pieces_among_distractors():
    rng = np.random.default_rng(2)
    pieces = [ellipse((8, 10), (4, 6)), ellipse((25, 20), (5, 4)), ellipse((15, 40), (6, 5))]
    target = pieces[0] | pieces[1] | pieces[2]
    yy, xx = np.indices(SLICE)
    distractors = random_blobs(rng, 40)
    distractors += [ellipse((8, 10), (5, 7)), ellipse((25, 20), (6, 5))]  # each a superset of one piece
    distractors += [pieces[0] | pieces[1] | (yy == 17), target | (xx == 0)]  # supersets of several
    distractors += [pieces[2] & (xx < 40)]  # a part of a piece
    masks = np.array(distractors[:20] + [pieces[0]] + distractors[20:35] + [pieces[1], pieces[2]] + distractors[35:])
    where = (20, 36, 37)
    result = best_union(masks, target, 3)
    assert result.indices == where
    assert result.score == 1.0 and result.exact
    # the blob covering all three pieces is the greedy choice, and no single swap leaves it:
    # only the exact search finds the pieces
    for k_max in (3, 4):
        stalled = best_union(masks, target, k_max, max_exact=0)
        assert not stalled.exact and stalled.score < 1.0
        assert 1 <= len(stalled.indices) <= k_max
        assert stalled.score == pytest.approx(union_score(masks, target, stalled.indices))


def test_finds_what_a_precision_shortlist_misses():
    """Ranking proposals by precision and searching only the top few picks tiny pure fragments
    and misses a large, slightly impure proposal that covers the whole region."""
    target = np.zeros(SLICE, dtype=bool)
    target[10:20, 10:30] = True
    fragments = []
    for c in range(6):
        fragment = np.zeros(SLICE, dtype=bool)
        fragment[11:13, 11 + 3 * c : 13 + 3 * c] = True  # 4 pixels inside the target: precision 1
        fragments.append(fragment)
    cover = target.copy()
    cover[20, 10:15] = True  # the whole target and 5 more pixels: precision 200 / 205
    masks = np.array(fragments + [cover])

    precision = masks.reshape(len(masks), -1).sum(axis=1, where=target.reshape(-1)) / masks.reshape(len(masks), -1).sum(
        axis=1
    )
    shortlist = np.argsort(-precision, kind="stable")[:5]
    shortlisted = max(dice_iou(masks, target, s)[0] for k in (1, 2, 3) for s in combinations(shortlist.tolist(), k))

    result = best_union(masks, target, 3)
    assert result.indices == (6,)
    assert result.score == pytest.approx(400 / 405)
    assert shortlisted < 0.2 < result.score


def test_zero_mass_mask_pads_k_min_for_free():
    """With k_min = 2 the best subset adds a mask without target mass that lies inside the
    first one, rather than a mask with target mass that costs area."""
    target = np.array([1, 1, 1, 0, 0, 0], dtype=float)
    masks = np.array(
        [
            [1, 1, 1, 1, 0, 0],  # the target and one background pixel
            [0, 0, 0, 1, 0, 0],  # no target mass, inside mask 0
            [1, 0, 0, 0, 1, 1],
        ],  # some target mass, two more background pixels
        dtype=bool,
    )
    result = best_union(masks, target, 2, k_min=2)
    assert result.indices == (0, 1)
    assert result.score == pytest.approx(6 / 7)
    assert result.score == pytest.approx(brute_force(masks, target, 2, 2, "dice"))


def test_copies_are_merged_and_pad_k_min():
    target = np.array([1, 1, 0, 0], dtype=float)
    masks = np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=bool)
    result = best_union(masks, target, 3)
    assert result.indices == (1,) and result.score == 1.0 and result.n_candidates == 1
    padded = best_union(masks, target, 3, k_min=3)
    assert padded.indices == (1, 2, 3) and padded.score == 1.0


def test_no_mask_touches_the_target():
    target = np.array([1, 0, 0, 0, 0], dtype=float)
    masks = np.array([[0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=bool)
    assert best_union(masks, target, 2, k_min=2).indices == (1, 2)  # the smallest masks
    assert best_union(masks, target, 2, k_min=0) == union_module.UnionResult((), 0.0, True, 0)
    empty = np.zeros(5)
    assert best_union(masks, empty, 2, k_min=1).indices == (2,)  # the empty mask matches exactly
    assert best_union(masks, empty, 2, k_min=1).score == 1.0


def test_iou_is_a_monotone_function_of_dice():
    rng = np.random.default_rng(3)
    for _ in range(50):
        masks, target = random_instance(rng)
        dice = best_union(masks, target, 3, k_min=1, metric="dice")
        iou = best_union(masks, target, 3, k_min=1, metric="iou")
        assert iou.indices == dice.indices
        assert iou.score == pytest.approx(dice.score / (2 - dice.score), abs=1e-12)


def test_too_many_survivors_falls_back(monkeypatch):
    rng = np.random.default_rng(4)
    masks = np.array(random_blobs(rng, 60))
    target = masks[:5].any(axis=0) * 0.9
    monkeypatch.setattr(union_module, "MAX_PAIRWISE_CANDIDATES", 3)
    result = best_union(masks, target, 3)
    assert not result.exact
    assert 1 <= len(result.indices) <= 3
    assert result.score == pytest.approx(union_score(masks, target, result.indices))


# -- weighted pixels (atoms) -------------------------------------------------------------------


def test_atoms_group_the_pixels_every_mask_covers_alike():
    masks = np.array([[1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 1, 0]], dtype=bool)
    columns, inverse, weights = atoms(masks)
    # four signatures: (1,0) pixel 0; (1,1) pixels 1 and 4; (0,1) pixel 2; (0,0) pixels 3 and 5
    assert columns.shape == (2, 4) and weights.sum() == 6
    np.testing.assert_array_equal(columns[:, inverse], masks)  # each pixel's signature
    signature = {tuple(columns[:, q]): weights[q] for q in range(4)}
    assert signature == {(True, False): 1, (True, True): 2, (False, True): 1, (False, False): 2}
    # no masks: one atom of every pixel
    columns, inverse, weights = atoms(np.zeros((0, 2, 3), bool))
    assert columns.shape == (0, 1) and weights.tolist() == [6.0] and not inverse.any()


def weighted_brute_force(masks, mass, weights, k_max, k_min) -> float:
    """Best Dice ``2 A / (V + T)`` over subsets, with areas the sums of ``weights``."""
    total, best = mass.sum(), -1.0
    for k in range(k_min, min(k_max, len(masks)) + 1):
        for s in combinations(range(len(masks)), k):
            u = masks[list(s)].any(axis=0) if s else np.zeros(len(mass), bool)
            v = weights[u].sum()
            best = max(best, 1.0 if v + total == 0 else 2 * mass[u].sum() / (v + total))
    return best


def test_weighted_search_equals_brute_force_and_the_pixel_problem():
    """On atoms (random weights and masses up to them) the search is exact; a pixel problem
    compressed to its atoms has the pixel problem's optimum."""
    rng = np.random.default_rng(7)
    for _trial in range(200):
        masks, target = random_instance(rng)
        flat, t = masks.reshape(len(masks), -1), target.reshape(-1)
        k_max = int(rng.integers(1, 6))
        k_min = int(rng.integers(0, min(3, k_max, len(masks)) + 1))
        columns, inverse, weights = atoms(flat)
        mass = np.minimum(np.bincount(inverse, t, len(weights)), weights)
        compressed = best_union(columns, mass, k_max, k_min, weights=weights)
        assert compressed.exact
        assert compressed.score == pytest.approx(brute_force(flat, t, k_max, k_min, "dice"), abs=1e-9)
        # an arbitrary weighted problem: weights 1-5, masses anywhere in [0, weight]
        w = rng.integers(1, 6, flat.shape[1]).astype(float)
        m = w * rng.random(flat.shape[1]) * (rng.random(flat.shape[1]) < 0.7)
        result = best_union(flat, m, k_max, k_min, weights=w)
        assert result.exact and k_min <= len(result.indices) <= k_max
        assert result.score == pytest.approx(weighted_brute_force(flat, m, w, k_max, k_min), abs=1e-9)
        assert result.score == pytest.approx(union_score(flat, m, result.indices, weights=w), abs=1e-12)


def test_completion_bound_is_the_fractional_knapsack_optimum():
    """B1's completion ``max t(N) - lam w(N)`` over fractional atom sets with ``t(N) <= cap``,
    against a linear program; and a case by hand."""
    from scipy.optimize import linprog

    # by hand: densities 1.0 and 0.25 at lam = 0.5: only the first atom is worth taking
    values, weights = np.array([2.0, 1.0]), np.array([2.0, 4.0])
    got = union_module._completion(values, weights, np.ones((1, 2), bool), np.array([[3.0, 1.0]]), 0.5)
    np.testing.assert_allclose(got, [[2 - 0.5 * 2, 1 - 0.5 * 1]])
    rng = np.random.default_rng(3)
    for _ in range(100):
        q = int(rng.integers(1, 12))
        w = rng.integers(1, 8, q).astype(float)
        t = w * rng.random(q)
        order = np.argsort(-(t / w), kind="stable")
        t, w = t[order], w[order]
        available = rng.random((3, q)) < 0.7
        cap, lam = rng.uniform(0, t.sum(), (3, 2)), rng.uniform(0.05, 0.9)
        got = union_module._completion(t, w, available, cap, lam)
        for r in range(3):
            for c in range(2):
                lp = linprog(
                    -(t - lam * w) * available[r], A_ub=[t], b_ub=[cap[r, c]], bounds=[(0, 1)] * q, method="highs"
                )
                assert got[r, c] == pytest.approx(max(0.0, -lp.fun), abs=1e-9)
            # one row alone (the search's nodes take a shortcut), with or without k given
            k = int(np.count_nonzero(t / w > lam))
            for known in (None, k):
                one = union_module._completion(t, w, available[r : r + 1], cap[r : r + 1], lam, known)
                np.testing.assert_allclose(one, got[r : r + 1], atol=1e-9)


@pytest.mark.parametrize(
    "weights, target",
    [(np.array([1.0, 0.0, 2.0]), np.zeros(3)), (np.ones(2), np.zeros(3)), (np.ones(3), np.array([0.5, 1.5, 0.0]))],
)
def test_rejects_bad_weights(weights, target):
    with pytest.raises(ValueError):
        best_union(np.ones((2, 3), bool), target, 2, weights=weights)


@pytest.mark.parametrize(
    "bad",
    [
        dict(masks=np.zeros((2, 3), dtype=float), target=np.zeros(3)),
        dict(masks=np.zeros((2, 3), dtype=bool), target=np.zeros(4)),
        dict(masks=np.zeros((2, 3), dtype=bool), target=np.full(3, 1.5)),
        dict(masks=np.zeros((2, 3), dtype=bool), target=np.full(3, np.nan)),
        dict(masks=np.zeros((2, 3), dtype=bool), target=np.zeros(3), k_max=1, k_min=2),
        dict(masks=np.zeros((2, 3), dtype=bool), target=np.zeros(3), k_max=3, k_min=3),
        dict(masks=np.zeros((2, 3), dtype=bool), target=np.zeros(3), metric="f1"),
    ],
)
def test_rejects_bad_input(bad):
    args = dict(k_max=2) | bad
    with pytest.raises(ValueError):
        best_union(**args)


# -- properties ------------------------------------------------------------------------------


@st.composite
def problems(draw):
    n = draw(st.integers(1, 8))
    p = draw(st.integers(1, 20))
    masks = draw(arrays(bool, (n, p)))
    if draw(st.booleans()):
        target = draw(arrays(bool, p)).astype(float)
    else:
        target = draw(arrays(np.float64, p, elements=st.floats(0, 1)))
    k_max = draw(st.integers(1, 4))
    k_min = draw(st.integers(0, min(k_max, n, 2)))
    return masks, target, k_max, k_min


@settings(max_examples=150, deadline=None, database=None)
@given(problems(), st.data())
def test_adding_a_proposal_never_lowers_the_score(problem, data):
    masks, target, k_max, k_min = problem
    extra = data.draw(arrays(bool, masks.shape[1]))
    before = best_union(masks, target, k_max, k_min)
    after = best_union(np.vstack([masks, extra]), target, k_max, k_min)
    assert before.exact and after.exact
    assert after.score >= before.score - 1e-12


@settings(max_examples=150, deadline=None, database=None)
@given(problems(), st.sampled_from(["dice", "iou"]))
def test_result_is_admissible_and_scored_right(problem, metric):
    masks, target, k_max, k_min = problem
    result = best_union(masks, target, k_max, k_min, metric)
    assert k_min <= len(result.indices) <= k_max
    assert list(result.indices) == sorted(set(result.indices))
    assert all(0 <= i < len(masks) for i in result.indices)
    assert result.score == pytest.approx(union_score(masks, target, result.indices, metric), abs=1e-12)
    assert 0.0 <= result.score <= 1.0


@settings(max_examples=150, deadline=None, database=None)
@given(problems())
def test_k_max_one_is_the_best_single_mask(problem):
    masks, target, _, _ = problem
    best_single = max(union_score(masks, target, [i]) for i in range(len(masks)))
    assert best_union(masks, target, 1).score == pytest.approx(best_single, abs=1e-12)
