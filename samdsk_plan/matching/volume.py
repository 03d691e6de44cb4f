"""3D pseudo-labels from slice-wise matching: match each slice along one or more axes, stack,
fuse the axes by per-voxel vote, keep each class's largest 3D components, and score the result
against the prediction.

Per slice, a class's bounds are the plan's ``regions_per_slice`` for that axis where the model
predicts the class (argmax) somewhere in the slice, and ``(0, 0)`` elsewhere. Slices without
proposals stay background. The case's score per class is the overlap (same metric and target
as the matching) between the assembled label and the prediction in 3D; ``beta`` is its mean
over the foreground classes the model predicts in the case (0 when it predicts none, so an
empty label is never accepted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from scipy import ndimage

from samdsk_plan.fingerprint.components import structuring_element
from samdsk_plan.io.parallel import parallel_map
from samdsk_plan.matching.assign import MatchSettings, SliceMatch, class_targets, match_slice
from samdsk_plan.matching.union import union_score

FUSIONS = ("vote", "vote_with_prediction", "single")


@dataclass(frozen=True)
class VolumeMatch:
    """A case's pseudo-label and its provenance.

    Attributes:
        label: ``(I, J, K)`` int16 pseudo-label.
        scores: per foreground class the model predicts, the 3D overlap of ``label`` with the
            prediction.
        chosen: per slice ``"axis:index"``, the chosen proposal indices per class (only slices
            where a class took a proposal).
        n_slices: slices matched (those with proposals and a class the model predicts).
        n_exact: how many of them were solved exactly.
        floor: the soft targets' probability floor the case was matched under (the settings'
            fixed floor, or the one their ``"background"`` rule took from this case).
    """

    label: np.ndarray
    scores: dict[int, float]
    chosen: dict[str, dict[int, list[int]]]
    n_slices: int
    n_exact: int
    floor: float

    @property
    def exact(self) -> bool:
        """True if every slice's matching was exact."""
        return self.n_exact == self.n_slices

    @property
    def beta(self) -> float:
        """Mean per-class score; 0 when the model predicts no foreground."""
        return float(np.mean(list(self.scores.values()))) if self.scores else 0.0


def slice_bounds(prediction: np.ndarray, bounds: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Per-class bounds on one slice: ``bounds[c-1]`` where ``prediction`` (``(H, W)`` class
    indices) contains class ``c``, else ``(0, 0)``."""
    present = set(np.unique(prediction).tolist())
    return [tuple(b) if c in present else (0, 0) for c, b in enumerate(bounds, start=1)]


def _grid(proposals: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """The masks of a slice's proposals and how they lie on it (:func:`match_slice`'s
    ``offset``, ``scale``, ``size``): a :class:`~samdsk_plan.proposals.base.Proposals`
    (matching does not import the proposals room) or a whole-slice ``(N, H, W)`` array."""
    where = {"offset": (0, 0), "scale": 1, "size": None}
    if not hasattr(proposals, "masks"):  # an array (whose own ``size`` is its element count)
        return np.asarray(proposals), where
    return np.asarray(proposals.masks), {key: getattr(proposals, key) for key in where}


def _match_slice(task: tuple, settings: MatchSettings | None) -> SliceMatch:
    masks, prob_slice, local, where = task
    return match_slice(masks, prob_slice, local, settings, **where)


def match_axis(
    probs: np.ndarray,
    proposals: Mapping[int, Any],
    axis: int,
    bounds: Sequence[tuple[int, int]],
    settings: MatchSettings | None = None,
    workers: int = 1,
) -> tuple[np.ndarray, dict[str, dict[int, list[int]]], int, int]:
    """Match every slice across ``axis`` that has proposals and stack the labels.

    Args:
        probs: ``(C, I, J, K)`` softmax maps.
        proposals: slice index -> ``(N, H, W)`` bool masks of that slice, or its
            :class:`~samdsk_plan.proposals.base.Proposals` (masks on a window of the slice).
        axis: 0, 1 or 2 (a spatial axis of the volume).
        bounds: per foreground class the plan's ``(lower, upper)`` for this axis.
        settings: metric, target and budgets.
        workers: processes the slices are solved in (each slice is independent; the result
            does not depend on it).

    Returns:
        ``(I, J, K)`` int16 label, chosen indices per slice (``"axis:index"``), the number of
        slices matched and of those solved exactly.
    """
    prediction = np.argmax(probs, axis=0)
    label = np.zeros(probs.shape[1:], dtype=np.int16)
    chosen: dict[str, dict[int, list[int]]] = {}
    n_slices = n_exact = 0
    indices, tasks = [], []
    for index, found in sorted(proposals.items()):
        masks, where = _grid(found)
        local = slice_bounds(np.take(prediction, index, axis=axis), bounds)
        if len(masks) == 0 or not any(hi for _, hi in local):
            continue
        indices.append(index)
        tasks.append((masks, np.take(probs, index, axis=axis + 1), local, where))
    results = parallel_map(partial(_match_slice, settings=settings), tasks, workers, progress=False)
    for index, result in zip(indices, results, strict=True):
        n_slices += 1
        n_exact += result.exact
        taken = {c: list(s) for c, s in result.chosen.items() if s}
        if taken:
            chosen[f"{axis}:{index}"] = taken
        view = [slice(None)] * 3
        view[axis] = index
        label[tuple(view)] = result.label
    return label, chosen, n_slices, n_exact


def vote(labels: Sequence[np.ndarray], probs: np.ndarray) -> np.ndarray:
    """Per-voxel majority of several ``(I, J, K)`` labels; ties go to the likelier class
    (``probs`` ``(C, I, J, K)``)."""
    counts = np.zeros(probs.shape, dtype=np.float64)
    for lab in labels:
        for c in range(probs.shape[0]):
            counts[c] += lab == c
    # probabilities lie in [0, 1] and counts are integers: they only break ties
    return np.argmax(counts + 0.5 * probs, axis=0).astype(np.int16)


def keep_largest_components(label: np.ndarray, max_components: Sequence[int], connectivity: str = "full") -> np.ndarray:
    """Keep, per foreground class ``c``, its ``max_components[c-1]`` largest connected
    components (by voxel count); other voxels of the class become background."""
    out = label.copy()
    structure = structuring_element(label.ndim, connectivity)
    for c, keep in enumerate(max_components, start=1):
        components, n = ndimage.label(label == c, structure=structure)
        if n <= keep:
            continue
        sizes = np.bincount(components.ravel())[1:]
        kept = np.argsort(-sizes, kind="stable")[:keep] + 1
        out[(components > 0) & ~np.isin(components, kept)] = 0
    return out


def volume_scores(label: np.ndarray, probs: np.ndarray, settings: MatchSettings | None = None) -> dict[int, float]:
    """3D overlap of ``label == c`` with class ``c``'s target, for the classes the model predicts
    (argmax of ``probs`` ``(C, I, J, K)``) somewhere in the volume."""
    settings = (settings or MatchSettings()).for_case(probs)
    targets = class_targets(probs, settings.target, settings.prob_floor)
    predicted = set(np.unique(np.argmax(probs, axis=0)).tolist())
    return {
        c: union_score((label == c).reshape(1, -1), targets[c - 1].ravel(), [0], settings.metric)
        for c in range(1, probs.shape[0])
        if c in predicted
    }


def match_volume(
    probs: np.ndarray,
    proposals: Mapping[tuple[int, int], Any],
    bounds: Mapping[int, Sequence[tuple[int, int]]],
    max_components: Sequence[int],
    fusion: str = "vote",
    connectivity: str = "full",
    settings: MatchSettings | None = None,
    workers: int = 1,
) -> VolumeMatch:
    """Pseudo-label of one case from its proposals and the model's probabilities.

    Args:
        probs: ``(C, I, J, K)`` softmax maps (channel 0 the background).
        proposals: ``(axis, index)`` -> ``(N, H, W)`` bool masks of that slice, or its
            :class:`~samdsk_plan.proposals.base.Proposals`.
        bounds: axis -> per foreground class ``(lower, upper)`` proposals per slice; its keys are
            the axes matched along. The votes need three axes, ``"single"`` exactly one.
        max_components: per foreground class, the most 3D components kept.
        fusion: ``"vote"`` (per-voxel majority of the three axes' labels, the label is made of
            proposals only, as in the paper), ``"vote_with_prediction"`` (the model's argmax is
            a fourth voter: proposals then refine the prediction where two axes agree against
            it) or ``"single"``.
        connectivity: ``"full"`` or ``"face"`` neighbourhood for the 3D components.
        settings: metric, target, floor and budgets
            (:class:`~samdsk_plan.matching.assign.MatchSettings`; a ``"background"`` floor is
            taken from the whole volume's ``probs``).
        workers: processes each axis's slices are solved in (:func:`match_axis`).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 4:
        raise ValueError(f"probs must be (C, I, J, K), got {probs.shape}")
    settings = (settings or MatchSettings()).for_case(probs)  # one floor for the whole volume
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    axes = sorted(int(a) for a in bounds)
    if fusion == "single" and len(axes) != 1:
        raise ValueError(f"fusion 'single' matches along one axis, got axes {axes}")
    if fusion != "single" and len(axes) != 3:
        raise ValueError(f"fusion {fusion!r} needs the three axes, got {axes}")
    labels, chosen, n_slices, n_exact = [], {}, 0, 0
    for axis in axes:
        per_axis = {index: masks for (a, index), masks in proposals.items() if a == axis}
        lab, ch, n, n_ex = match_axis(probs, per_axis, axis, bounds[axis], settings, workers)
        labels.append(lab)
        chosen.update(ch)
        n_slices, n_exact = n_slices + n, n_exact + n_ex
    if fusion == "vote_with_prediction":
        labels.append(np.argmax(probs, axis=0))
    label = labels[0] if fusion == "single" else vote(labels, probs)
    label = keep_largest_components(label, max_components, connectivity)
    return VolumeMatch(label, volume_scores(label, probs, settings), chosen, n_slices, n_exact, settings.prob_floor)
