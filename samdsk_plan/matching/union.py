r"""The best union of candidate regions against a target map.

For one 2D slice we have ``N`` candidate regions (proposals, possibly overlapping and nested)
and a target map ``t`` with values in [0, 1] per pixel (a class's softmax probability, or a
binary ground-truth mask). :func:`best_union` chooses a subset ``S`` of proposals with
``k_min <= |S| <= k_max`` whose union ``U`` overlaps ``t`` best. With ``A = t(U)`` (the target
mass inside the union), ``V = |U|`` (its area in pixels), ``E = V - A = (1 - t)(U)`` (its
"excess") and ``T = t(all pixels)``:

* soft Dice ``D = 2 A / (V + T) = 2 A / (A + E + T)``;
* soft IoU (Jaccard) ``J = sum(min(t, U)) / sum(max(t, U)) = A / (V + T - A)``.

With a binary ``t`` these are the ordinary Dice and IoU. ``J = D / (2 - D)``, an increasing
function of ``D``, so both metrics have the same best subsets: the search maximises ``D`` and
the metric only changes the reported score. An empty union against an all-zero target scores 1.

Weighted pixels. A column of the masks may stand for ``w > 0`` pixels that every mask
covers alike (an *atom*: pixels with the same set of covering masks), with ``t`` then the
target mass of those pixels, ``0 <= t <= w``. Areas become sums of ``w``, ``(1 - t)``
becomes ``(w - t)`` and "pixel" below reads "atom"; every formula and bound holds as written
for unit weights, where it uses ``t_p <= 1`` it uses ``t_p <= w_p``, and the knapsack of B1
orders atoms by density ``t / w``. Matching compresses a slice to its atoms first
(:func:`atoms`): a union of masks is a union of atoms, so the optimum and its score are
unchanged, and a slice of many pixels but few distinct overlaps costs little.

Algorithm. Exact (the returned score is within about 1e-11 of the optimum, see the end) unless
the result says ``exact=False``:

1. Identical masks are merged: a group of copies is one candidate, represented by its lowest
   index; its other copies may pad the answer up to ``k_min`` at no cost (same union).
2. Candidates without target mass (``t(m) == 0``) are dropped when ``k_min <= 1``: adding one
   never raises ``A`` and never lowers ``V``. With ``k_min >= 2`` they are kept, because an
   optimum may need one as padding (such a mask lying inside the union costs nothing).
   Near-duplicates are merged the same way: with ``k_min <= 1``, a candidate ``j`` is dropped
   when another candidate ``i`` *dominates* it, i.e. ``m_j \ m_i`` holds no target mass and
   ``m_i \ m_j`` no excess (``t = w`` there: certain target pixels). Replacing ``j`` by ``i``
   in any subset (or dropping ``j`` if ``i`` is in it already) loses only pixels of ``m_j \ m_i``
   (``A`` unchanged, ``E`` not larger) and gains only pixels of ``m_i \ m_j`` (each adds as much
   to ``A`` as to ``V``, and ``D`` rises with such a pixel: ``2 (A + x) / (V + T + x) >= D`` iff
   ``x (2 - D) >= 0``), so the optimum survives. Dominance is transitive and, between distinct
   masks, antisymmetric (each dominating the other makes both differences empty), so every
   dominated candidate has an undominated dominator and all of them can go at once (the test
   needs pair tables, so it is skipped past ``MAX_PAIRWISE_CANDIDATES`` candidates). Typical
   cases: a region plus some confident-background pixels, or minus some certain-target ones.
3. Single masks are scored in one vectorised pass (the answer when ``k_max == 1``).
4. Greedy forward selection, then best-improvement local search (add, drop and swap moves),
   gives a first incumbent.
5. Every candidate is bounded as a member of any admissible subset (bound B1 below); those
   that cannot beat the incumbent are dropped.
6. One matrix product of the survivors' masks with their transpose, weighted by ``t`` and by
   1, gives the pair tables ``It[i, j] = t(m_i & m_j)`` and ``|m_i & m_j|``, hence
   ``Ie[i, j] = (1 - t)(m_i & m_j)``. Every pair's union is then scored exactly in one
   vectorised pass: ``A = t(m_i) + t(m_j) - It[i, j]``, ``E`` likewise with ``Ie`` (the answer
   when ``k_max == 2``).
7. For ``k_max >= 3``, a depth-first branch and bound over the survivors. A node is a partial
   subset; its children are visited in decreasing order of bound B1, each with the candidates
   after it as its pool, so that every subset is met once. Children that form a hopeless pair
   with the node's newest member (bound B2) are dropped first. A node with one member reads its
   children's marginal mass and excess off the pair tables (for ``k_max == 3`` all such nodes
   are filtered together in one vectorised pass); deeper nodes filter their children with B1
   on pair-table estimates (B4), then compute the rest exactly (one sparse matrix-vector
   product). A node that may take two more candidates bounds all pairs of its children at once
   (B3) and scores the surviving pairs exactly. Once ``k_min`` is met, a child adding no target
   mass is dropped: the same subset without it is at least as good.

If the search expands more than ``max_exact`` nodes, or more than
:data:`MAX_PAIRWISE_CANDIDATES` candidates survive step 5 (the pair tables take about
``50 n^2`` bytes), the best subset found so far (at least the local-search result) is returned
with ``exact=False``. With ``k_max <= 3`` the search has at most one node per survivor, so
within the default budget it always finishes.

Bounds and why they hold. Write ``D(A, E) = 2 A / (A + E + T)``; it is nondecreasing in ``A``
(``dD/dA = 2 (E + T) / (A + E + T)^2 >= 0``) and decreasing in ``E``, so any upper bound on
``A`` together with any lower bound on ``E`` bounds ``D``. Take a node with union ``U0``,
``A0 = t(U0)``, ``E0 = (1 - t)(U0)``, that may still take ``r`` more candidates from its pool.
For a candidate ``l`` let ``g_l = t(m_l \ U0)`` (marginal mass) and
``e_l = (1 - t)(m_l \ U0)`` (marginal excess).

B1 (a child ``l`` and at most ``r - 1`` more, ``R``). Let ``N = U_R \ (U0 + m_l)``. The final
union has ``A = A0 + g_l + t(N)`` and ``E = E0 + e_l + (1 - t)(N)``. ``N`` lies in ``Q``, the
pixels that the candidates cover outside ``U0``, and ``t(N) <= G``, the sum of the ``r - 1``
largest marginal masses among the other pool candidates (``t >= 0`` is subadditive over a
union, and a candidate's marginal mass outside a larger union is no larger). For an
incumbent ``s`` put ``lam = s / 2``: ``D > s`` iff
``(A0 + g_l) - lam (A0 + E0 + g_l + e_l + T) + (t(N) - lam |N|) > 0``. Maximising
``t(N) - lam |N| = sum_{p in N} (t_p - lam)`` over fractional pixel sets ``N`` in ``Q`` with
``t(N) <= G`` is a fractional knapsack: pixel ``p`` weighs ``t_p`` and is worth
``t_p - lam``, i.e. ``1 - lam / t_p`` per unit of weight, which grows with ``t_p``; so the
optimum takes the pixels worth something (``t > lam``) in decreasing ``t`` until their
weight reaches ``G``, the last one fractionally (an atom weighs ``t`` and is worth
``t - lam w``: atoms go by density ``t / w``, and since ``N`` is made of whole atoms the
fractional optimum still bounds it). If even that maximum leaves the expression
``<= 0`` no completion through ``l`` beats ``s``, and ``l`` is dropped from the node's whole
subtree. The test stays valid with ``g_l`` replaced by any ``g_hat >= g_l`` and ``e_l`` by any
``e_hat <= e_l`` (monotonicity above).

B2 (any subset of survivors containing ``i`` and ``j``; other candidates cannot be part of a
better subset). Let ``N`` be the pixels the other members add to ``m_i + m_j``. With
``A_ij``, ``E_ij`` exact from the pair tables, ``D > s`` iff
``A_ij - lam (A_ij + E_ij + T) + sum_{p in N} (t_p - lam) > 0``. The sum is at most the sum
of ``t_p - lam`` over the pixels with ``t_p > lam`` that survivors cover outside ``m_i``
(likewise outside ``m_j``), and at most ``(1 - lam) t(N)`` since ``t_p <= 1`` (for atoms
``t_p - lam w_p <= (1 - lam) t_p`` since ``t_p <= w_p``), where
``t(N) <= T - A_ij`` and ``t(N)`` is at most the sum of the ``k_max - 2`` largest
``t(m_l \ m_i)`` over survivors ``l`` (likewise for ``j``). A pair that fails the test for
the incumbent of the time fails it for every later, larger incumbent.

B3 (children ``j`` and ``l`` together). The pair adds
``A = A0 + g_j + g_l - t((m_j & m_l) \ U0)`` and ``E = E0 + e_j + e_l - (1 - t)((m_j & m_l) \ U0)``.
Since ``t((m_j & m_l) \ U0) >= It[j, l] - min(t(m_j & U0), t(m_l & U0))`` and
``(1 - t)((m_j & m_l) \ U0) <= min(Ie[j, l], e_j, e_l)``, ``A`` and ``E`` are bounded from
above and below. The pairs that pass are scored exactly by removing from ``It[j, l]`` and
``|m_j & m_l|`` the part of ``m_j & m_l`` inside ``U0``.

B4 (estimates at a node with members ``S``, ``|S| >= 2``). ``g_l <= t(m_l \ m_i)`` for every
``i`` in ``S``, so ``g_hat = t(m_l) - max_i It[i, l]``; and by the union bound
``(1 - t)(m_l & U0) <= sum_i Ie[i, l]``, so ``e_hat = max(0, (1 - t)(m_l) - sum_i Ie[i, l])``.

Pruning compares with the incumbent plus 1e-12, and children whose marginal mass is below
1e-12 T count as adding nothing (as do differences below 1e-12 T in the dominance test);
this is the only slack in "exact".
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

METRICS = ("dice", "iou")
DEFAULT_MAX_EXACT = 5_000
"""Default budget of branch-and-bound nodes."""
MAX_PAIRWISE_CANDIDATES = 2000
"""Most candidates left after pruning for which the exact search builds its pair tables."""
_TOL = 1e-12


@dataclass(frozen=True)
class UnionResult:
    """The chosen subset of proposals.

    Attributes:
        indices: sorted indices into the input masks, ``k_min <= len(indices) <= k_max``.
        score: Dice or IoU of their union against the target, in [0, 1].
        exact: True if ``score`` is the optimum over all admissible subsets (to about 1e-11).
        n_candidates: distinct masks the search worked on after merging copies and dominated
            near-copies and dropping masks without target mass (0 when no mask touches the
            target).
    """

    indices: tuple[int, ...]
    score: float
    exact: bool
    n_candidates: int


def union_score(
    masks: np.ndarray,
    target: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    metric: str = "dice",
    weights: np.ndarray | None = None,
) -> float:
    """Dice or IoU between the union of ``masks[indices]`` and ``target``.

    Args:
        masks: ``(N, H, W)`` or ``(N, P)`` bool.
        target: ``(H, W)`` or ``(P,)`` values in [0, 1] (bool allowed); with ``weights``, the
            target mass of each column, in ``[0, weights]``.
        indices: indices of the masks whose union is scored (may be empty).
        metric: ``"dice"`` (``2 A / (V + T)``) or ``"iou"`` (``A / (V + T - A)``).
        weights: ``(P,)`` pixels each column stands for (:func:`atoms`); None: one each.

    Returns:
        The score in [0, 1]; an empty union against an all-zero target scores 1.
    """
    flat, t, w = _flatten(masks, target, weights)
    _check_metric(metric)
    return _score(flat, t, w, np.asarray(indices, dtype=np.intp), metric)


def atoms(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The atoms of a stack of masks: the classes of pixels that every mask covers alike.

    A union of masks is a union of atoms, so Dice and IoU of any union only need each atom's
    pixel count and target mass (see "Weighted pixels" in the module docstring).

    Args:
        masks: ``(N, H, W)`` or ``(N, P)`` bool.

    Returns:
        ``(N, Q)`` bool, the masks as atoms (distinct columns; the pixels no mask covers, if
        any, are the all-False one); ``(P,)`` int, the atom of each pixel; ``(Q,)`` float64,
        the pixels of each atom. An atom's target mass is ``np.bincount(inverse, t, Q)``.
    """
    masks = np.asarray(masks, dtype=bool)
    if len(masks) == 0:
        pixels = math.prod(masks.shape[1:])
        return np.zeros((0, 1), bool), np.zeros(pixels, np.intp), np.array([float(pixels)])
    flat = masks.reshape(len(masks), -1)
    columns = np.packbits(np.ascontiguousarray(flat.T), axis=1)  # one row of bits per pixel
    rows = columns.view(np.dtype((np.void, columns.shape[1]))).ravel()
    _, first, inverse, counts = np.unique(rows, return_index=True, return_inverse=True, return_counts=True)
    return flat[:, first], inverse.ravel(), counts.astype(np.float64)


def best_union(
    masks: np.ndarray,
    target: np.ndarray,
    k_max: int,
    k_min: int = 1,
    metric: str = "dice",
    max_exact: int = DEFAULT_MAX_EXACT,
    weights: np.ndarray | None = None,
) -> UnionResult:
    """Choose ``k_min..k_max`` masks whose union best overlaps ``target``.

    Args:
        masks: ``(N, H, W)`` or ``(N, P)`` bool candidate regions.
        target: ``(H, W)`` or ``(P,)`` target map with values in [0, 1] (probabilities or a
            bool mask), on the same pixels as the masks.
        k_max: most masks in the union (``>= k_min``).
        k_min: fewest masks in the union (``0 <= k_min <= N``). Copies of a chosen mask and
            masks without target mass may be used to reach it; ``k_min = 0`` allows the empty
            union.
        metric: ``"dice"`` or ``"iou"`` (same optimum, different reported score).
        max_exact: budget of branch-and-bound nodes; past it the best subset found is
            returned with ``exact=False``. ``k_max <= 3`` needs at most one node per candidate
            left after pruning; larger ``k_max`` may need many more.
        weights: ``(P,)`` pixels each column stands for, ``target`` then holding masses in
            ``[0, weights]`` (:func:`atoms`); None: one pixel each.

    Returns:
        :class:`UnionResult`. Ties between equally good subsets are broken arbitrarily but
        deterministically. When no mask touches the target (or the target is all zero), no
        admissible subset beats the ``k_min`` smallest masks, which are returned. Typical cost
        on a 35 x 50 slice with ``k_max <= 3``: a few ms for hundreds of proposals, tens of ms
        for a thousand.

    Raises:
        ValueError: on bad shapes, dtypes, target values, metric or ``k_min``/``k_max``.
        TypeError: if ``k_min`` or ``k_max`` is not an integer.
    """
    flat, t, w = _flatten(masks, target, weights)
    _check_metric(metric)
    n = flat.shape[0]
    k_min, k_max = operator.index(k_min), operator.index(k_max)
    if not 0 <= k_min <= k_max:
        raise ValueError(f"need 0 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    if k_min > n:
        raise ValueError(f"k_min={k_min} exceeds the number of masks ({n})")
    first, group_of, copies = _merge_copies(flat)
    unique = flat[first]
    rows = _csr(unique)
    useful = rows @ t > 0
    if k_max == 0 or not useful.any():
        chosen = np.lexsort((np.arange(n), flat @ w))[:k_min]
        return UnionResult(tuple(sorted(chosen.tolist())), _score(flat, t, w, chosen, metric), True, 0)
    pool = np.arange(len(first)) if k_min >= 2 else _undominated(unique, t, w, np.flatnonzero(useful))
    # the search wants the pixels (atoms) by decreasing target density: its completion bound
    # takes them in that order
    order = np.argsort(-(t / w), kind="stable")
    sub = unique[pool][:, order]
    search = _Search(sub, _csr(sub), t[order], w[order], copies[pool], k_min, k_max, max_exact)
    search.run()
    indices = _pad_with_copies(pool[list(search.best)], group_of, k_min)
    return UnionResult(
        indices, _score(flat, t, w, np.asarray(indices, dtype=np.intp), metric), search.complete, len(pool)
    )


def _flatten(
    masks: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(N, P)`` bool masks, ``(P,)`` float64 target and ``(P,)`` float64 weights from the
    accepted input shapes."""
    masks = np.asarray(masks)
    target = np.asarray(target)
    if masks.dtype != bool or masks.ndim not in (2, 3):
        raise ValueError(f"masks must be a (N, H, W) or (N, P) bool array, got {masks.dtype} {masks.shape}")
    if target.shape != masks.shape[1:]:
        raise ValueError(f"target shape {target.shape} does not match the masks' {masks.shape[1:]}")
    t = target.astype(np.float64).ravel()
    if t.size == 0:
        raise ValueError("the target has no pixels")
    if weights is None:
        w = np.ones_like(t)
        if not np.all((t >= 0) & (t <= 1)):
            raise ValueError("target values must lie in [0, 1]")
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != t.shape or not np.all(w > 0):
            raise ValueError(f"weights must be {t.shape} positive pixel counts, got {w.shape}")
        if not np.all((t >= 0) & (t <= w)):
            raise ValueError("target masses must lie in [0, weights]")
    return masks.reshape(masks.shape[0], t.size), t, w


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def _score(flat: np.ndarray, t: np.ndarray, w: np.ndarray, indices: np.ndarray, metric: str) -> float:
    union = flat[indices].any(axis=0)
    a = float(t[union].sum())
    v = float(w[union].sum())
    total = float(t.sum())
    if v + total == 0:
        return 1.0
    dice = 2 * a / (v + total)
    return dice if metric == "dice" else dice / (2 - dice)


def _undominated(masks: np.ndarray, t: np.ndarray, w: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """The candidates of ``pool`` (indices into the distinct ``(n, P)`` ``masks``) that no other
    dominates (step 2 of the module docstring), in order; all of them when there are too many
    for pair tables (:data:`MAX_PAIRWISE_CANDIDATES`)."""
    if not 2 <= len(pool) <= MAX_PAIRWISE_CANDIDATES:
        return pool
    sub = masks[pool]
    cols = np.flatnonzero(sub.any(axis=0))
    inter_t, inter_w = _intersections(sub[:, cols], t[cols], w[cols])
    mass = np.diag(inter_t).copy()
    excess = np.diag(inter_w) - mass
    tol = _TOL * max(float(t.sum()), 1.0)
    # [i, j]: t(m_j \ m_i) == 0 and (w - t)(m_i \ m_j) == 0, i != j
    dominated = (mass[None, :] - inter_t <= tol) & (excess[:, None] - (inter_w - inter_t) <= tol)
    np.fill_diagonal(dominated, False)
    return pool[~dominated.any(axis=0)]


def _csr(masks: np.ndarray) -> sparse.csr_array:
    """``(n, P)`` bool masks as a sparse 0/1 float64 matrix."""
    n, p = masks.shape
    flat = np.flatnonzero(masks)
    indptr = np.searchsorted(flat, np.arange(n + 1) * p)
    return sparse.csr_array((np.ones(len(flat)), flat % p, indptr), shape=(n, p))


def _merge_copies(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups of identical masks.

    Returns:
        ``first``: ``(G,)`` lowest index of each group, ascending; ``group_of``: ``(N,)`` group
        of each mask; ``copies``: ``(G,)`` group sizes.
    """
    packed = np.ascontiguousarray(np.packbits(flat, axis=1))
    rows = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, first, group_of, copies = np.unique(rows, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[group_of.ravel()], copies[order]


def _pad_with_copies(groups: np.ndarray, group_of: np.ndarray, k_min: int) -> tuple[int, ...]:
    """Lowest index of each chosen group, then further copies of them up to ``k_min`` indices."""
    members = [np.flatnonzero(group_of == g) for g in groups]
    spare = sorted(int(i) for m in members for i in m[1:])
    return tuple(sorted([int(m[0]) for m in members] + spare[: max(0, k_min - len(members))]))


def _top_others(g: np.ndarray, k: int) -> np.ndarray:
    """For each entry, the sum of the ``k >= 1`` largest values among the other entries of ``g``."""
    if len(g) <= k:
        return g.sum() - g
    part = -np.partition(-g, k)[: k + 1]  # the k + 1 largest; part[k] is the (k+1)-th largest
    top = np.sort(part[:k])
    s = top.sum()
    return np.where(g >= top[0], s - g + part[k], s)


def _completion(
    values: np.ndarray, weights: np.ndarray, available: np.ndarray, cap: np.ndarray, lam: float, k: int | None = None
) -> np.ndarray:
    """``max(t(N) - lam w(N))`` over fractional pixel sets ``N`` with ``t(N) <= cap``, per row.

    Args:
        values: ``(L,)`` target masses of all pixels (atoms), in decreasing order of density
            ``values / weights``.
        weights: ``(L,)`` their weights (1 for plain pixels).
        available: ``(m, L)`` bool, the pixels ``N`` may use, one row per problem.
        cap: ``(m, c)`` mass limits, ``c`` of them per row.
        lam: price of one pixel of area, ``> 0``.
        k: the number of pixels with density ``> lam``, if the caller knows it.

    Returns:
        ``(m, c)`` values ``>= 0``: each row's available pixels with density ``> lam`` taken in
        decreasing density until their mass reaches the cap (the last one fractionally).
    """
    if k is None:
        k = int(np.searchsorted(-(values / weights), -lam, side="left"))  # pixels with density > lam
    if k == 0:
        return np.zeros(cap.shape)
    values, weights, available = values[:k], weights[:k], available[:, :k]
    if len(available) == 1:  # one row (the search's nodes): on its available pixels only
        values, weights = values[available[0]], weights[available[0]]
        if not len(values):
            return np.zeros(cap.shape)
        mass, area = np.cumsum(values), np.cumsum(weights)
        cap = np.minimum(cap, mass[-1])
        at = np.searchsorted(mass, cap)
        return cap - lam * (area[at] - weights[at] + (cap - mass[at] + values[at]) / values[at] * weights[at])
    mass = np.cumsum(available * values, axis=1)
    area = np.cumsum(available * weights, axis=1)
    cap = np.minimum(cap, mass[:, -1:])
    # per row, the first pixel at which the mass reaches the cap, by one search over all rows
    # laid end to end (row i shifted by i times more than any row's mass)
    rows = np.arange(len(mass))[:, None]
    shift = rows * (mass[:, -1].max() + 1.0)
    at = np.searchsorted((mass + shift).ravel(), (cap + shift).ravel()).reshape(cap.shape) - rows * k
    before = mass[rows, at] - values[at]  # mass of the pixels before it (if it is available)
    taken = area[rows, at] - weights[at] + (cap - before) / values[at] * weights[at]
    return cap - lam * taken


def _intersections(masks: np.ndarray, t: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(n, n)`` tables ``t(m_i & m_j)`` and ``w(m_i & m_j)`` (the area) of ``(n, P)`` bool masks,
    from one matrix product.

    A sparse-sparse product with complex weights ``t + 1j w`` costs about ``sum_p c_p^2``
    (``c_p``: masks covering pixel ``p``) slow operations; a sparse-dense product with the
    ``t``-weighted and plain transposes side by side costs ``2 n nnz`` fast ones. The cheaper
    is used: the first when masks overlap little, the second when they pile up on a region.
    """
    n = len(masks)
    cover = np.count_nonzero(masks, axis=0).astype(np.float64)
    rows = _csr(masks)
    if 8 * (cover @ cover) < 2 * n * cover.sum():
        weighted = rows.astype(np.complex128)
        weighted.data = t[weighted.indices] + 1j * w[weighted.indices]
        both = (weighted @ rows.T).toarray()
        return both.real.copy(), both.imag.copy()
    dense = masks.T.astype(np.float64)
    both = rows @ np.hstack([dense * t[:, None], dense * w[:, None]])
    return both[:, :n], both[:, n:]


class _Search:
    """Search over distinct candidates (local indices ``0..n-1``) of one problem with ``T > 0``,
    its pixels (atoms) given in decreasing order of target density.

    ``best`` (candidate indices) and ``best_score`` (Dice) hold the incumbent; ``complete``
    turns False when the search gave up before proving it optimal.
    """

    def __init__(
        self,
        masks: np.ndarray,
        rows: sparse.csr_array,
        t: np.ndarray,
        w: np.ndarray,
        copies: np.ndarray,
        k_min: int,
        k_max: int,
        max_nodes: int,
    ):
        self.masks = masks  # (n, P) bool, and the same as a sparse matrix
        self.csr = rows
        # (P,) target masses and weights of the pixels (atoms), by decreasing density t / w
        self.t, self.w = t, w
        self.neg_density = -(t / w)
        self.total = float(t.sum())
        self.mass = self.csr @ t
        self.area = self.csr @ w
        self.copies = copies
        self.k_min, self.k_max = k_min, min(k_max, len(masks))
        self.max_nodes = max_nodes
        self.nodes = 0
        self.complete = True
        self.best: tuple[int, ...] = ()
        self.best_score = 0.0 if k_min == 0 else -1.0

    def run(self) -> None:
        singles = self._dice(0.0, 0.0, self.mass, self.area)
        ok = np.flatnonzero(self.copies >= self.k_min)
        if ok.size:
            i = int(ok[np.argmax(singles[ok])])
            self._offer((i,), float(singles[i]), int(self.copies[i]))
        if self.k_max == 1:
            return
        self._local_search(self._greedy())
        slack = self._slack(0.0, 0.0, self.masks.any(axis=0), self.mass, self.area - self.mass, self.k_max)
        alive = np.flatnonzero(slack > 0)
        if alive.size < 2:
            return
        if alive.size > MAX_PAIRWISE_CANDIDATES:
            self.complete = False
            return
        self._pair_tables(alive)
        self._all_pairs()
        if self.k_max > 2:
            self._hopeful_pairs()
            if self.k_max == 3:
                self._triples()
            else:
                self._expand((), np.zeros(len(self.t), dtype=bool), 0.0, 0.0, 0, np.arange(alive.size), self.k_max)

    # -- scores and bounds ---------------------------------------------------------------

    def _dice(self, a0, v0, gain, area):
        """Dice of unions with ``A = a0 + gain`` and ``V = v0 + area`` (arrays broadcast; ``T > 0``)."""
        return 2 * (a0 + gain) / (v0 + area + self.total)

    def _slack(
        self, a0: float, v0: float, free: np.ndarray, gain: np.ndarray, excess: np.ndarray, r: int
    ) -> np.ndarray:
        """Positive where a child might lead to a subset beating the incumbent (bound B1 in the
        module docstring): ``a0, v0`` describe the node's union, ``free`` ``(P,)`` the pixels
        that pool candidates cover outside it, ``gain >= g_l`` and ``excess <= e_l`` each
        child, and ``r >= 1`` more candidates may be added."""
        lam = (self.best_score + _TOL) / 2
        slack = a0 + gain - lam * (v0 + gain + excess + self.total)
        if r > 1:
            cap = _top_others(gain, r - 1)[None, :]
            k = int(np.searchsorted(self.neg_density, -lam))  # pixels with density > lam
            slack = slack + _completion(self.t, self.w, free[None, :], cap, lam, k)[0]
        return slack

    def _offer(self, members: tuple[int, ...], score: float, copies: int) -> None:
        if copies >= self.k_min and score > self.best_score + _TOL:
            self.best, self.best_score = tuple(sorted(members)), score

    # -- first incumbent -------------------------------------------------------------------

    def _scores(self, members: list[int]) -> tuple[float, np.ndarray, int]:
        """Dice of ``members`` and of ``members`` plus each candidate, and the copies they hold."""
        covered = self.masks[members].any(axis=0)
        outside = np.where(covered, 0.0, 1.0)
        a0, v0 = float(self.t[covered].sum()), float(self.w[covered].sum())
        scores = self._dice(a0, v0, self.csr @ (self.t * outside), self.csr @ (self.w * outside))
        scores[members] = -np.inf
        return 2 * a0 / (v0 + self.total), scores, int(self.copies[members].sum())

    def _greedy(self) -> list[int]:
        """Forward selection: add the best next mask while it helps (or ``k_min`` is unmet)."""
        members: list[int] = []
        while len(members) < self.k_max:
            current, scores, copies = self._scores(members)
            j = int(np.argmax(scores))
            if copies >= self.k_min and scores[j] <= current + _TOL:
                break
            members.append(j)
        return members

    def _local_search(self, members: list[int]) -> None:
        """Best-improvement local search with add, drop and swap moves; offers the result."""
        while True:
            current, scores, copies = self._scores(members)
            move, value = None, current + _TOL
            if len(members) < self.k_max:
                scores[copies + self.copies < self.k_min] = -np.inf
                j = int(np.argmax(scores))
                if scores[j] > value:
                    move, value = members + [j], float(scores[j])
            for i in members:
                rest = [q for q in members if q != i]
                dropped, swaps, kept = self._scores(rest)
                if rest and kept >= self.k_min and dropped > value:
                    move, value = rest, dropped
                swaps[members] = -np.inf
                swaps[kept + self.copies < self.k_min] = -np.inf
                j = int(np.argmax(swaps))
                if swaps[j] > value:
                    move, value = rest + [j], float(swaps[j])
            if move is None:
                break
            members = move
        self._offer(tuple(members), current, copies)

    # -- exact search over the candidates that survive the root bound ----------------------

    def _pair_tables(self, alive: np.ndarray) -> None:
        """Restrict to the survivors ``alive`` and tabulate, for all survivor pairs,
        ``It[i, j] = t(m_i & m_j)`` and ``Ie[i, j] = (1 - t)(m_i & m_j)``."""
        self.alive = alive
        self.sub_masks = self.masks[alive]
        self.sub_cover = self.sub_masks.any(axis=0)
        self.sub_csr = self.csr[alive]
        self.sub_mass = self.mass[alive]
        self.sub_excess = self.area[alive] - self.sub_mass
        self.sub_copies = self.copies[alive]
        cols = np.flatnonzero(self.sub_cover)
        self.inter_t, inter_area = _intersections(self.sub_masks[:, cols], self.t[cols], self.w[cols])
        self.inter_e = inter_area - self.inter_t
        # all pairs j < l of positions, ordered by l: those of the first p positions come first
        self.pair_second = np.repeat(np.arange(len(alive), dtype=np.intp), np.arange(len(alive)))
        self.pair_first = np.arange(len(self.pair_second)) - self.pair_second * (self.pair_second - 1) // 2

    def _all_pairs(self) -> None:
        """Score the union of every pair of survivors exactly."""
        mass, excess, copies = self.sub_mass, self.sub_excess, self.sub_copies
        a = mass[:, None] + mass[None, :] - self.inter_t
        scores = 2 * a / (a + excess[:, None] + excess[None, :] - self.inter_e + self.total)
        feasible = np.triu(copies[:, None] + copies[None, :] >= self.k_min, 1)
        scores = np.where(feasible, scores, -np.inf)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if np.isfinite(scores[i, j]):
            self._offer((int(self.alive[i]), int(self.alive[j])), float(scores[i, j]), int(copies[i] + copies[j]))

    def _hopeful_pairs(self) -> None:
        """``hopeful[i, j]``: False when no subset of survivors containing ``i`` and ``j`` can
        beat the incumbent (bound B2 in the module docstring)."""
        mass, excess = self.sub_mass, self.sub_excess
        lam = (self.best_score + _TOL) / 2
        a = mass[:, None] + mass[None, :] - self.inter_t
        e = excess[:, None] + excess[None, :] - self.inter_e
        outside = mass[None, :] - self.inter_t  # [i, l] = t(m_l \ m_i)
        k = min(self.k_max - 2, len(mass))
        extra = -np.partition(-outside, k - 1, axis=1)[:, :k].sum(axis=1)
        x = np.minimum(np.minimum(extra[:, None], extra[None, :]), self.total - a)
        outside_each = self.sub_cover & ~self.sub_masks
        free = _completion(self.t, self.w, outside_each, extra[:, None], lam)[
            :, 0
        ]  # the best completion outside each mask
        completion = np.minimum(np.minimum(free[:, None], free[None, :]), (1 - lam) * x)
        self.hopeful = a - lam * (a + e + self.total) + completion > 0

    def _triples(self) -> None:
        """``k_max = 3``: the nodes with one member, all at once. Survivor ``i`` is a node when
        its bound B1 allows, in decreasing order of that bound, with the later survivors as its
        pool; B1 with one more candidate filters every node's children in one pass, and
        :meth:`_pairs` scores the surviving children's pairs node by node."""
        n = len(self.alive)
        mass, excess, copies = self.sub_mass, self.sub_excess, self.sub_copies
        slack = self._slack(0.0, 0.0, self.sub_cover, mass, excess, 3)
        order = np.argsort(-slack, kind="stable")[: np.count_nonzero(slack > 0)]
        rank = np.full(n, n)
        rank[order] = np.arange(len(order))
        gain = np.maximum(mass[None, :] - self.inter_t, 0.0)  # [i, j] = t(m_j \ m_i)
        extra = np.maximum(excess[None, :] - self.inter_e, 0.0)  # [i, j] = (1 - t)(m_j \ m_i)
        child = self.hopeful & (rank[:, None] < rank[None, :]) & (rank[None, :] < n)
        child &= (gain > _TOL * self.total) | (copies < self.k_min)[:, None]  # as in _expand
        # B1 caps the third candidate's mass by the largest gain among the node's other children
        gain_of_child = np.where(child, gain, 0.0)
        two = -np.partition(-gain_of_child, 1, axis=1)[:, :2]
        largest = two.max(axis=1)
        caps = np.stack([two.min(axis=1), largest], axis=1)  # for the largest child, for the rest
        lam = (self.best_score + _TOL) / 2
        completion = _completion(self.t, self.w, self.sub_cover & ~self.sub_masks, caps, lam)
        completion = np.where(gain_of_child >= largest[:, None], completion[:, :1], completion[:, 1:])
        a = mass[:, None] + gain
        keep = child & (a - lam * (a + excess[:, None] + extra + self.total) + completion > 0)
        for i in order:
            children = np.flatnonzero(keep[i])
            if children.size < 2:
                continue
            if self.nodes >= self.max_nodes:
                self.complete = False
                return
            self.nodes += 1
            self._pairs(
                (int(i),),
                self.sub_masks[i],
                float(mass[i]),
                float(mass[i] + excess[i]),
                int(copies[i]),
                children,
                gain[i, children],
                extra[i, children],
            )

    def _expand(
        self, members: tuple[int, ...], covered: np.ndarray, a0: float, v0: float, copies: int, pool: np.ndarray, r: int
    ) -> None:
        """Search the subsets made of ``members``, one child from ``pool`` and at most ``r - 1``
        later pool candidates (``r >= 2``); the subsets of up to two candidates are already
        scored. ``members``, ``pool`` and ``covered`` live in the survivors' indexing."""
        if members:  # drop children that form a hopeless pair with the newest member
            pool = pool[self.hopeful[members[-1], pool]]
        if pool.size == 0:
            return
        if self.nodes >= self.max_nodes:
            self.complete = False
            return
        self.nodes += 1
        free = None
        if not members:
            gain, excess = self.sub_mass[pool], self.sub_excess[pool]
        elif len(members) == 1:
            gain = np.maximum(self.sub_mass[pool] - self.inter_t[members[0], pool], 0.0)
            excess = np.maximum(self.sub_excess[pool] - self.inter_e[members[0], pool], 0.0)
        else:
            free = self.sub_cover & ~covered
            idx = list(members)
            gain_hat = self.sub_mass[pool] - self.inter_t[idx][:, pool].max(axis=0)
            excess_hat = np.maximum(self.sub_excess[pool] - self.inter_e[idx][:, pool].sum(axis=0), 0.0)
            pool = pool[self._slack(a0, v0, free, gain_hat, excess_hat, r) > 0]
            if pool.size == 0:
                return
            outside = np.where(covered, 0.0, 1.0)
            gain = (self.sub_csr @ (self.t * outside))[pool]
            excess = (self.sub_csr @ ((self.w - self.t) * outside))[pool]
            scores = self._dice(a0, v0, gain, gain + excess)
            scores[copies + self.sub_copies[pool] < self.k_min] = -np.inf
            j = int(np.argmax(scores))
            self._offer(
                tuple(int(self.alive[c]) for c in (*members, pool[j])),
                float(scores[j]),
                copies + int(self.sub_copies[pool[j]]),
            )
        if copies >= self.k_min:  # a child adding no target mass is beaten by the same subset without it
            useful = gain > _TOL * self.total
            pool, gain, excess = pool[useful], gain[useful], excess[useful]
        if free is None:
            free = self.sub_cover & ~covered
        slack = self._slack(a0, v0, free, gain, excess, r)
        if r == 2:
            keep = slack > 0
            self._pairs(members, covered, a0, v0, copies, pool[keep], gain[keep], excess[keep])
            return
        rest = np.argsort(-slack, kind="stable")[: np.count_nonzero(slack > 0)]
        seen = self.best_score
        while rest.size and self.complete:
            if self.best_score > seen:  # a better incumbent: drop children that cannot beat it
                seen = self.best_score
                rest = rest[self._slack(a0, v0, free, gain[rest], excess[rest], r) > 0]
                if not rest.size:
                    break
            c, child = rest[0], int(pool[rest[0]])
            rest = rest[1:]
            self._expand(
                (*members, child),
                covered | self.sub_masks[child],
                a0 + float(gain[c]),
                v0 + float(gain[c] + excess[c]),
                copies + int(self.sub_copies[child]),
                pool[rest],
                r - 1,
            )

    def _pairs(
        self,
        members: tuple[int, ...],
        covered: np.ndarray,
        a0: float,
        v0: float,
        copies: int,
        pool: np.ndarray,
        gain: np.ndarray,
        excess: np.ndarray,
    ) -> None:
        """Score the subsets ``members + (j, m)`` for all pairs in ``pool``, given each child's
        exact marginal mass ``gain`` and excess ``excess`` outside the node's union."""
        if pool.size < 2:
            return
        count = pool.size * (pool.size - 1) // 2
        j, m = self.pair_first[:count], self.pair_second[:count]
        inter_t, inter_e = self.inter_t[pool[j], pool[m]], self.inter_e[pool[j], pool[m]]
        inside = self.sub_mass[pool] - gain  # t-mass of each child inside the node's union
        a = a0 + gain[j] + gain[m] - np.maximum(inter_t - np.minimum(inside[j], inside[m]), 0.0)
        e = (v0 - a0) + excess[j] + excess[m] - np.minimum(inter_e, np.minimum(excess[j], excess[m]))
        # the node has k_max - 2 members, so adding two more meets k_min
        pick = np.flatnonzero(2 * a > (self.best_score + _TOL) * (a + e + self.total))
        if not pick.size:
            return
        j, m, inter_t, inter_e = j[pick], m[pick], inter_t[pick], inter_e[pick]
        # exact overlap outside the union: pairwise intersection minus its part inside the union
        cols = np.flatnonzero(covered)
        in_union = self.sub_masks[np.ix_(pool, cols)]
        both = in_union[j] & in_union[m]
        inside_t = np.where(both, self.t[cols], 0.0).sum(axis=1)
        inside_v = np.where(both, self.w[cols], 0.0).sum(axis=1)
        a = a0 + gain[j] + gain[m] - (inter_t - inside_t)
        v = v0 + gain[j] + excess[j] + gain[m] + excess[m] - (inter_t + inter_e - inside_v)
        scores = self._dice(0.0, 0.0, a, v)
        best = int(np.argmax(scores))
        chosen = (*members, pool[j[best]], pool[m[best]])
        self._offer(
            tuple(int(self.alive[c]) for c in chosen),
            float(scores[best]),
            copies + int(self.sub_copies[pool[j[best]]] + self.sub_copies[pool[m[best]]]),
        )
