"""Oracle scores: the best Dice that matching can reach on a slice when it is given the truth.

Matching chooses at most ``k`` proposals whose union becomes the pseudo-label. With the
ground-truth region as the target, the best such union (:func:`best_union`) is the ceiling of
what any matching can reach with these proposals and this ``k``: it separates the proposals'
quality from the quality of the probability maps they are matched against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from samdsk_plan.matching import best_union
from samdsk_plan.matching.union import DEFAULT_MAX_EXACT


@dataclass(frozen=True)
class OracleRow:
    """The oracle on one slice for one class and one ``k``.

    Attributes:
        slice_index: position of the slice along the axis.
        label: the class value.
        k: most proposals allowed in the union.
        dice: Dice of the best union with the class region (1.0 when the class is absent: the
            empty union matches it).
        exact: False if the search hit its budget, so that ``dice`` is only a lower bound.
        target_area: pixels of the class in the slice.
        union_area: pixels of the chosen union.
        overlap: pixels in both.
    """

    slice_index: int
    label: int
    k: int
    dice: float
    exact: bool
    target_area: int
    union_area: int
    overlap: int


def oracle_dice(
    proposals_masks: np.ndarray, target: np.ndarray, k: int, *, max_exact: int = DEFAULT_MAX_EXACT
) -> float:
    """Best Dice between the union of at most ``k`` proposals and a ground-truth region.

    Args:
        proposals_masks: ``(N, H, W)`` bool candidate regions of one slice.
        target: ``(H, W)`` bool ground-truth region of one class.
        k: most proposals in the union (``>= 0``; none may be chosen).
        max_exact: search budget passed to :func:`best_union`; past it the value is a lower
            bound on the ceiling (see :func:`oracle_table` for the flag).

    Returns:
        Dice in [0, 1]; 1.0 for an empty target (choosing nothing matches it), 0.0 for a
        non-empty target that no proposal touches.
    """
    return _best(proposals_masks, target, k, max_exact)[0].score


def oracle_table(
    labels: np.ndarray,
    proposals: Sequence[np.ndarray],
    classes: Sequence[int],
    ks: Sequence[int],
    axis: int = 0,
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
) -> list[OracleRow]:
    """The oracle on every slice of a labelled volume along one axis.

    Args:
        labels: ``(D, H, W)`` integer label volume.
        proposals: one ``(N_s, ...)`` bool stack per slice along ``axis``
            (``len(proposals) == labels.shape[axis]``), each mask shaped like the slice.
        classes: label values to score.
        ks: limits on the number of proposals in the union.
        axis: the slicing axis (0, 1 or 2).
        max_exact: search budget per problem, see :func:`best_union`.

    Returns:
        One :class:`OracleRow` per slice, class and ``k``, in that nesting order.

    Raises:
        ValueError: if the number of proposal stacks or their mask shape does not match.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D volume, got shape {labels.shape}")
    if len(proposals) != labels.shape[axis]:
        raise ValueError(f"{len(proposals)} proposal stacks for {labels.shape[axis]} slices along axis {axis}")
    rows = []
    for index, masks in enumerate(proposals):
        region_map = np.take(labels, index, axis=axis)
        for label in classes:
            region = region_map == label
            for k in ks:
                result, union = _best(masks, region, k, max_exact)
                rows.append(
                    OracleRow(
                        index,
                        int(label),
                        int(k),
                        result.score,
                        result.exact,
                        int(region.sum()),
                        int(union.sum()),
                        int((union & region).sum()),
                    )
                )
    return rows


def summarise_oracle(rows: Sequence[OracleRow]) -> list[dict]:
    """Per class and ``k``: how close matching could get, over the slices of :func:`oracle_table`.

    Returns:
        One dict per ``(label, k)``, sorted: ``label``, ``k``, ``slices`` (slices containing
        the class), ``mean_dice`` (mean oracle Dice over those slices, ``None`` if there are
        none), ``pooled_dice`` (``2 sum(overlap) / sum(union_area + target_area)`` over all
        slices: the Dice of the stacked oracle unions with the class in the volume, 1.0 when
        both are empty) and ``exact`` (every slice solved exactly).
    """
    groups: dict[tuple[int, int], list[OracleRow]] = {}
    for row in rows:
        groups.setdefault((row.label, row.k), []).append(row)
    summary = []
    for (label, k), group in sorted(groups.items()):
        present = [row.dice for row in group if row.target_area > 0]
        sizes = sum(row.union_area + row.target_area for row in group)
        summary.append(
            {
                "label": label,
                "k": k,
                "slices": len(present),
                "mean_dice": float(np.mean(present)) if present else None,
                "pooled_dice": 2 * sum(row.overlap for row in group) / sizes if sizes else 1.0,
                "exact": all(row.exact for row in group),
            }
        )
    return summary


def _best(proposals_masks: np.ndarray, target: np.ndarray, k: int, max_exact: int):
    """:func:`best_union` of at most ``k`` proposals with a bool region, and the chosen union."""
    masks = np.asarray(proposals_masks)
    target = np.asarray(target)
    if masks.ndim != 3 or target.dtype != bool:
        raise ValueError(
            f"need (N, H, W) proposal masks and a bool (H, W) target, got "
            f"{masks.shape} and {target.dtype} {target.shape}"
        )
    result = best_union(masks, target, k_max=k, k_min=0, max_exact=max_exact)
    union = masks[list(result.indices)].any(axis=0) if result.indices else np.zeros(target.shape, dtype=bool)
    return result, union
