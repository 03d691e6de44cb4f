r"""Optimal matching of proposals to classes on one 2D slice (SamDSK, Eq. 1-4).

Given ``N`` proposals ``m_1..m_N`` (boolean masks), the model's softmax maps ``p_0..p_{C-1}``
(channel 0 is the background) and per foreground class ``c`` bounds ``l_c <= |S_c| <= u_c`` on
how many proposals it may take, choose disjoint index sets ``S_1..S_{C-1}`` (each proposal goes
to at most one class) that maximise ``sum_c overlap(t_c, U_c)``, where ``U_c`` is the union of
the proposals in ``S_c`` and ``t_c`` the class's target map:

* ``target="soft"``: ``t_c = p_c`` (0 below a small floor, see :class:`MatchSettings`); ``"iou"``
  is then the soft Jaccard ``sum(min(t, U)) / sum(max(t, U))`` and ``"dice"`` the soft Dice ``2 t(U) / (|U| + t(all))``;
* ``target="hard"``: ``t_c = [argmax_k p_k == c]`` (for two classes the same as ``p_c > 0.5``),
  giving the ordinary IoU / Dice.

An empty union scores 1 against an all-zero target and 0 otherwise. The matching score of the
slice is ``beta = mean_c overlap(t_c, U_c)`` (the paper's Eq. 4).

Solvers, both exact (up to :func:`~samdsk_plan.matching.union.best_union`'s 1e-11):

* every ``u_c <= 1``: a linear assignment between classes and proposals with weight
  ``overlap(t_c, m_k)`` (``scipy.optimize.linear_sum_assignment``), plus one "take nothing"
  column per class;
* otherwise: each class's best union is found on its own (``best_union`` with
  ``k_min = l_c``, ``k_max = u_c``); if no proposal is claimed by two classes that is the
  optimum. Else branch on a proposal ``k`` claimed by classes ``a, b, ...``: one branch per
  claimant, in which ``k`` is forbidden to the other claimants. Every feasible assignment lies
  in some branch, and the sum of the classes' unconstrained optima bounds a branch from above,
  so branches that cannot beat the best full assignment are cut. Past ``max_nodes`` branches
  the best feasible assignment found is returned with ``exact=False``.

A lower bound that cannot be met (fewer usable proposals than ``l_c``) is relaxed: the class
takes what there is, and every assignment that meets all bounds is preferred to one that
does not. Pixels claimed by the unions of two classes go to the class with the higher
probability; pixels in no chosen proposal are background.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from samdsk_plan.matching.union import DEFAULT_MAX_EXACT, METRICS, atoms, best_union, union_score

TARGETS = ("soft", "hard")
FLOOR_RULES = ("fixed", "background")
MAX_FLOOR = 0.99
"""The highest floor the ``"background"`` rule sets (a floor of 1 would empty every target)."""
SOLVERS = ("auto", "assignment", "search")
DEFAULT_MAX_NODES = 64
"""Default budget of conflict branches in the multi-proposal solver."""


@dataclass(frozen=True)
class MatchSettings:
    """How matching scores and searches.

    Attributes:
        metric: ``"iou"`` (the paper's) or ``"dice"``.
        target: ``"soft"`` (probabilities) or ``"hard"`` (argmax), see the module docstring.
        prob_floor: soft targets below the floor count as 0 (the model's confident
            background), so that proposals away from the prediction drop out before the search.
            A softmax never reaches 0 exactly; without a floor every proposal touches every
            class. Under ``floor_rule="fixed"`` this is the floor; under ``"background"`` its
            lower bound.
        floor_rule: ``"fixed"`` (``prob_floor``) or ``"background"``: per case, the level the
            model gives the foreground classes where it predicts background
            (:func:`background_level`) plus ``floor_margin``, at least ``prob_floor`` and at
            most :data:`MAX_FLOOR`. A well-trained model's background level is near 0 and the
            floor stays low; an under-trained one spreads near-uniform mass over the
            background, and the floor rises above it instead of letting that mass into every
            proposal's score (:meth:`for_case`).
        floor_margin: the ``"background"`` rule's margin above the level.
        max_exact: node budget of each class's :func:`best_union` search.
        max_nodes: budget of conflict branches when some ``u_c >= 2``.
        solver: ``"auto"`` (the assignment when every ``u_c <= 1``, else the search),
            ``"assignment"`` (needs every ``u_c <= 1``) or ``"search"``.
    """

    metric: str = "iou"
    target: str = "soft"
    prob_floor: float = 0.05
    floor_rule: str = "fixed"
    floor_margin: float = 0.05
    max_exact: int = DEFAULT_MAX_EXACT
    max_nodes: int = DEFAULT_MAX_NODES
    solver: str = "auto"

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("metric", self.metric, METRICS),
            ("target", self.target, TARGETS),
            ("floor_rule", self.floor_rule, FLOOR_RULES),
            ("solver", self.solver, SOLVERS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not 0 <= self.prob_floor < 1:
            raise ValueError(f"prob_floor must lie in [0, 1), got {self.prob_floor}")
        if not 0 <= self.floor_margin < 1:
            raise ValueError(f"floor_margin must lie in [0, 1), got {self.floor_margin}")

    def floor(self, probs: np.ndarray) -> float:
        """The soft targets' floor for one case's softmax maps ``probs`` ``(C, ...)``."""
        if self.floor_rule == "fixed":
            return self.prob_floor
        return min(MAX_FLOOR, max(self.prob_floor, background_level(probs) + self.floor_margin))

    def for_case(self, probs: np.ndarray) -> MatchSettings:
        """These settings with the floor of the case ``probs`` ``(C, ...)`` fixed, so that every
        slice of a volume is matched under the same floor (fixed settings are returned as
        they are)."""
        if self.floor_rule == "fixed":
            return self
        return replace(self, prob_floor=self.floor(probs), floor_rule="fixed")


def background_level(probs: np.ndarray) -> float:
    """The largest over the foreground classes of the class's median probability on the
    pixels the model predicts background (``probs`` ``(C, ...)`` softmax maps); 0 where it
    predicts no background."""
    probs = np.asarray(probs)
    background = np.argmax(probs, axis=0) == 0
    if not background.any():
        return 0.0
    return max(float(np.median(p[background])) for p in probs[1:])


@dataclass(frozen=True)
class SliceMatch:
    """The optimal assignment on one slice.

    Attributes:
        label: ``(H, W)`` int16 pseudo-label: class per pixel, 0 where no proposal is chosen.
        chosen: per foreground class (``1..C-1``), the sorted indices of its proposals.
        scores: per foreground class, ``overlap(t_c, U_c)`` of its union (the objective terms).
        exact: True if the assignment is optimal (to about 1e-11).
    """

    label: np.ndarray
    chosen: dict[int, tuple[int, ...]]
    scores: dict[int, float]
    exact: bool

    @property
    def objective(self) -> float:
        """Sum of the per-class overlaps (the maximised quantity)."""
        return float(sum(self.scores.values()))

    @property
    def beta(self) -> float:
        """Mean per-class overlap, the paper's matching score (1.0 with no foreground class)."""
        return float(np.mean(list(self.scores.values()))) if self.scores else 1.0


def class_targets(probs: np.ndarray, target: str = "soft", floor: float = 0.0) -> np.ndarray:
    """Target maps ``(C-1, ...)`` of the foreground classes from softmax maps ``(C, ...)``;
    soft targets below ``floor`` count as 0."""
    probs = np.asarray(probs)
    if target == "soft":
        t = np.clip(probs[1:], 0.0, 1.0).astype(np.float64)
        t[t < floor] = 0.0
        return t
    if target == "hard":
        winner = np.argmax(probs, axis=0)
        return np.stack([winner == c for c in range(1, probs.shape[0])]).astype(np.float64)
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def single_scores(
    masks: np.ndarray, target: np.ndarray, metric: str = "iou", weights: np.ndarray | None = None
) -> np.ndarray:
    """``(N,)`` overlap of each mask ``(N, H, W)`` with a target map ``(H, W)`` in [0, 1]; or of
    ``(N, Q)`` atom masks with the atoms' target masses and ``weights`` (pixels per atom)."""
    flat = np.asarray(masks, dtype=bool).reshape(len(masks), -1).astype(np.float64)
    t = np.asarray(target, dtype=np.float64).ravel()
    mass = flat @ t
    area = flat @ (np.ones_like(t) if weights is None else np.asarray(weights, dtype=np.float64))
    total = float(t.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(area + total > 0, 2 * mass / np.maximum(area + total, 1e-300), 1.0)
    return dice if metric == "dice" else dice / (2 - dice)


def match_slice(
    masks: np.ndarray,
    probs: np.ndarray,
    bounds: Sequence[tuple[int, int]],
    settings: MatchSettings | None = None,
    offset: tuple[int, int] = (0, 0),
    scale: int = 1,
    size: tuple[int, int] | None = None,
) -> SliceMatch:
    """Assign proposals to foreground classes under ROI-count bounds.

    The slice is solved on its atoms (:func:`~samdsk_plan.matching.union.atoms`): the pixels
    every proposal covers alike, with their pixel counts and target masses; the pixels outside
    the proposals' window are one more atom that no proposal covers. The optimum is the
    pixel problem's, at a cost that grows with the number of distinct overlaps, not pixels.
    Masks on a coarser grid (``scale > 1``: one mask pixel per ``scale x scale`` block) have
    the same atoms as their pixels, so their blocks are never expanded but to draw the label.

    Args:
        masks: ``(N, h, w)`` bool proposals (``N`` may be 0) on the window of the slice at
            ``offset`` (by default the whole slice, ``(h, w) == (H, W)``); with ``scale > 1``,
            ``(N, ceil(h / scale), ceil(w / scale))`` for a window of ``size`` ``(h, w)``.
        probs: ``(C, H, W)`` softmax maps, channel 0 the background.
        bounds: ``C - 1`` pairs ``(l_c, u_c)``, one per foreground class ``1..C-1``; ``(0, 0)``
            keeps a class empty (e.g. where the model predicts it absent).
        settings: metric, target, floor and search budgets (:class:`MatchSettings`; a
            ``"background"`` floor is taken from this slice's ``probs``).
        offset: ``(row, column)`` of the window in the slice.
        scale: pixels per mask pixel along each axis.
        size: ``(h, w)`` of the window in pixels (needed when ``scale > 1``).

    Returns:
        :class:`SliceMatch` (its label on the whole slice).
    """
    masks = np.asarray(masks)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"probs must be (C, H, W) with C >= 2, got {probs.shape}")
    settings = (settings or MatchSettings()).for_case(probs)
    (r, c), shape = offset, probs.shape[1:]
    if scale < 1 or (scale > 1) != (size is not None):
        raise ValueError(f"a window size is given exactly when the scale exceeds 1, got scale {scale}, size {size}")
    (h, w) = masks.shape[1:] if scale == 1 else size
    if (
        masks.ndim != 3
        or masks.dtype != bool
        or tuple(masks.shape[1:]) != (-(-h // scale), -(-w // scale))
        or not (r >= 0 and c >= 0 and r + h <= shape[0] and c + w <= shape[1])
    ):
        raise ValueError(
            f"masks must be (N, h, w) bool inside the probabilities' grid {shape} at offset {offset}, "
            f"got {masks.dtype} {masks.shape} (scale {scale}, window {(h, w)})"
        )
    window = (slice(r, r + h), slice(c, c + w))
    bounds = _check_bounds(bounds, probs.shape[0] - 1)
    metric, solver = settings.metric, settings.solver
    # the slice as atoms (pixels every proposal covers alike): same optimum, fewer columns
    atom_masks, inverse, weights = atoms(masks)
    blocks = None
    if scale > 1:  # each window pixel's block, then its atom
        blocks = (np.arange(h)[:, None] // scale) * masks.shape[2] + np.arange(w)[None, :] // scale
        inverse = inverse[blocks.ravel()]
        weights = np.bincount(inverse, minlength=len(weights)).astype(np.float64)
    slice_targets = class_targets(probs, settings.target, settings.prob_floor)
    pixel_targets = slice_targets[(slice(None), *window)].reshape(len(slice_targets), -1)
    targets = np.stack([np.bincount(inverse, t, len(weights)) for t in pixel_targets])
    outside = np.prod(shape) - pixel_targets.shape[1]
    if outside:  # the pixels outside the window: an atom no proposal covers
        atom_masks = np.concatenate([atom_masks, np.zeros((len(atom_masks), 1), bool)], axis=1)
        weights = np.append(weights, float(outside))
        rest = slice_targets.copy()
        rest[(slice(None), *window)] = 0.0
        targets = np.concatenate([targets, rest.reshape(len(rest), -1).sum(axis=1)[:, None]], axis=1)
    targets = np.clip(targets, 0.0, weights)  # sums of values <= 1 may round above the count
    single = all(hi <= 1 for _, hi in bounds)
    if solver == "assignment" and not single:
        raise ValueError("the assignment solver needs every upper bound <= 1")
    if solver == "assignment" or (solver == "auto" and single):
        chosen, exact = _assignment(atom_masks, targets, weights, bounds, metric), True
    else:
        chosen, exact = _Conflicts(
            atom_masks, targets, weights, bounds, metric, settings.max_exact, settings.max_nodes
        ).solve()
    scores = {
        c + 1: union_score(atom_masks, targets[c], chosen[c], metric, weights)
        if len(masks)
        else _empty_score(targets[c])
        for c in range(len(bounds))
    }
    label = np.zeros(shape, dtype=np.int16)
    used = sorted({k for s in chosen for k in s})  # only the chosen masks, on the window's pixels
    pixels = (
        masks[used] if blocks is None else masks[used].reshape(len(used), masks.shape[1] * masks.shape[2])[:, blocks]
    )
    local = {k: i for i, k in enumerate(used)}
    label[window] = resolve_overlaps(pixels, probs[(slice(None), *window)], [[local[k] for k in s] for s in chosen])
    return SliceMatch(label, {c + 1: tuple(sorted(s)) for c, s in enumerate(chosen)}, scores, exact)


def resolve_overlaps(masks: np.ndarray, probs: np.ndarray, chosen: Sequence[Sequence[int]]) -> np.ndarray:
    """``(H, W)`` int16 label from each class's union; shared pixels go to the likelier class.

    Args:
        masks: ``(N, H, W)`` bool proposals.
        probs: ``(C, H, W)`` softmax maps.
        chosen: per foreground class ``1..C-1``, the indices of its proposals.
    """
    unions = np.zeros((len(chosen),) + probs.shape[1:], dtype=bool)
    for c, indices in enumerate(chosen):
        if len(indices):
            unions[c] = masks[list(indices)].any(axis=0)
    claimed = np.where(unions, probs[1 : len(chosen) + 1], -np.inf)
    label = (np.argmax(claimed, axis=0) + 1).astype(np.int16)
    label[~unions.any(axis=0)] = 0
    return label


def _check_bounds(bounds: Sequence[tuple[int, int]], n_classes: int) -> list[tuple[int, int]]:
    out = [(operator.index(lo), operator.index(hi)) for lo, hi in bounds]
    if len(out) != n_classes:
        raise ValueError(f"need one (lower, upper) bound per foreground class ({n_classes}), got {len(out)}")
    for lo, hi in out:
        if not 0 <= lo <= hi:
            raise ValueError(f"bounds need 0 <= lower <= upper, got ({lo}, {hi})")
    return out


def _empty_score(target: np.ndarray) -> float:
    return 1.0 if not np.any(target > 0) else 0.0


def _assignment(
    masks: np.ndarray, targets: np.ndarray, weights: np.ndarray, bounds: list[tuple[int, int]], metric: str
) -> list[tuple[int, ...]]:
    """Exact solution when every class takes at most one proposal (``(N, Q)`` atom masks, per
    class the atoms' target masses ``(C-1, Q)``, their pixel counts ``(Q,)``)."""
    chosen: list[tuple[int, ...]] = [() for _ in bounds]
    rows = [c for c, (_, hi) in enumerate(bounds) if hi >= 1]
    if not rows:
        return chosen
    n = len(masks)
    # a relaxed lower bound costs more than any gain in the objective (at most one per class)
    penalty = len(bounds) + 1.0
    gains = np.full((len(rows), n + len(rows)), -2 * penalty)
    for r, c in enumerate(rows):
        if n:
            gains[r, :n] = single_scores(masks, targets[c], metric, weights)
        gains[r, n + r] = _empty_score(targets[c]) - (penalty if bounds[c][0] >= 1 else 0.0)
    row_ind, col_ind = linear_sum_assignment(gains, maximize=True)
    for r, k in zip(row_ind, col_ind, strict=True):
        if k < n:
            chosen[rows[r]] = (int(k),)
    return chosen


class _Conflicts:
    """Branch and bound over proposals claimed by several classes' independent optima, on
    ``(N, Q)`` atom masks with per class the atoms' target masses and their pixel counts."""

    def __init__(
        self,
        masks: np.ndarray,
        targets: np.ndarray,
        weights: np.ndarray,
        bounds: list[tuple[int, int]],
        metric: str,
        max_exact: int,
        max_nodes: int,
    ) -> None:
        self.masks, self.targets, self.weights, self.bounds, self.metric = masks, targets, weights, bounds, metric
        self.max_exact, self.max_nodes = max_exact, max_nodes
        self.penalty = len(bounds) + 1.0
        self.memo: dict[tuple[int, frozenset[int]], tuple[tuple[int, ...], float, bool]] = {}
        self.best: list[tuple[int, ...]] | None = None
        self.best_value = -np.inf
        self.nodes = 0
        self.exact = True

    def solve(self) -> tuple[list[tuple[int, ...]], bool]:
        self._visit(tuple(frozenset() for _ in self.bounds))
        if self.best is None:  # budget spent before any conflict-free node: resolve greedily
            self.best = self._greedy_resolution(tuple(frozenset() for _ in self.bounds))
        return self.best, self.exact

    def _class_best(self, c: int, forbidden: frozenset[int]) -> tuple[tuple[int, ...], float, bool]:
        """Best union for class ``c`` without the ``forbidden`` proposals: (indices, value, exact);
        the value carries the penalty of a relaxed lower bound."""
        key = (c, forbidden)
        if key not in self.memo:
            lo, hi = self.bounds[c]
            allowed = np.array([k for k in range(len(self.masks)) if k not in forbidden], dtype=np.intp)
            if hi == 0 or len(allowed) == 0:
                value = _empty_score(self.targets[c]) - (self.penalty * lo)
                self.memo[key] = ((), value, True)
            else:
                k_min = min(lo, len(allowed))
                res = best_union(
                    self.masks[allowed],
                    self.targets[c],
                    k_max=min(hi, len(allowed)),
                    k_min=k_min,
                    metric=self.metric,
                    max_exact=self.max_exact,
                    weights=self.weights,
                )
                value = res.score - self.penalty * (lo - k_min)
                self.memo[key] = (tuple(int(allowed[i]) for i in res.indices), value, res.exact)
        return self.memo[key]

    def _visit(self, forbidden: tuple[frozenset[int], ...]) -> None:
        self.nodes += 1
        solved = [self._class_best(c, f) for c, f in enumerate(forbidden)]
        self.exact &= all(ex for _, _, ex in solved)
        value = sum(v for _, v, _ in solved)
        if value <= self.best_value + 1e-12:
            return
        claims: dict[int, list[int]] = {}
        for c, (indices, _, _) in enumerate(solved):
            for k in indices:
                claims.setdefault(k, []).append(c)
        conflict = next((k for k, cs in sorted(claims.items()) if len(cs) > 1), None)
        if conflict is None:
            self.best, self.best_value = [s for s, _, _ in solved], value
            return
        if self.nodes >= self.max_nodes:
            self.exact = False
            candidate = self._greedy_resolution(forbidden)
            cand_value = sum(
                union_score(self.masks, self.targets[c], s, self.metric, self.weights) for c, s in enumerate(candidate)
            )
            if cand_value > self.best_value:
                self.best, self.best_value = candidate, cand_value
            return
        claimants = claims[conflict]
        for keep in sorted(claimants, key=lambda c: -solved[c][1]):
            child = tuple(f | {conflict} if (c in claimants and c != keep) else f for c, f in enumerate(forbidden))
            self._visit(child)

    def _greedy_resolution(self, forbidden: tuple[frozenset[int], ...]) -> list[tuple[int, ...]]:
        """A feasible assignment: each contested proposal stays with the class whose target it
        covers most."""
        chosen = [list(self._class_best(c, f)[0]) for c, f in enumerate(forbidden)]
        owner: dict[int, int] = {}
        for c, indices in enumerate(chosen):
            for k in indices:
                mass = float(self.targets[c][self.masks[k]].sum())
                if k not in owner or mass > float(self.targets[owner[k]][self.masks[k]].sum()):
                    owner[k] = c
        return [tuple(k for k in indices if owner[k] == c) for c, indices in enumerate(chosen)]
