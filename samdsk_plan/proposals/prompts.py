"""Box prompts for the promptable foundation models, from the model's prediction or a grid.

Boxes are ``(x_min, y_min, x_max, y_max)`` in slice pixels with inclusive corners, ``x`` the
column and ``y`` the row of an ``(H, W)`` slice (SAM's and MedSAM's convention). Plain
functions on arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from samdsk_plan.fingerprint.components import structuring_element

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class BoxPrompt:
    """One box prompt and what it came from.

    Attributes:
        label: the foreground class whose predicted region prompted it (0 for a grid box).
        region: index of that region among the class's regions in the slice (row-major order
            of their first pixel), or of the grid box.
        box: ``(x_min, y_min, x_max, y_max)``, slice px.
    """

    label: int
    region: int
    box: Box


def region_boxes(mask: np.ndarray, connectivity: str = "full", limit: int | None = None) -> list[Box]:
    """The bounding box of each connected region of a ``(H, W)`` bool mask, in row-major order of
    the regions' first pixels; only the ``limit`` largest regions (by pixel count, ties in that
    order) when ``limit`` is given."""
    labels, n = ndimage.label(mask, structure=structuring_element(2, connectivity))
    slices = ndimage.find_objects(labels)
    keep = range(n)
    if limit is not None and n > limit:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        keep = sorted(sorted(range(n), key=lambda i: (-sizes[i], i))[:limit])
    return [
        (float(s[1].start), float(s[0].start), float(s[1].stop - 1), float(s[0].stop - 1))
        for s in map(slices.__getitem__, keep)
    ]


def clip_box(box: Box, shape: tuple[int, int]) -> Box:
    """``box`` clipped to an ``(H, W)`` slice (at least one pixel wide and high)."""
    h, w = shape
    x0, y0 = min(max(box[0], 0.0), w - 1.0), min(max(box[1], 0.0), h - 1.0)
    x1, y1 = min(max(box[2], x0), w - 1.0), min(max(box[3], y0), h - 1.0)
    return (x0, y0, x1, y1)


def box_variants(box: Box, shape: tuple[int, int], scales: Sequence[float] = (1.0,), shift: float = 0.0) -> list[Box]:
    """``box`` scaled about its centre by each of ``scales`` and, at scale 1, moved by ``shift``
    times its width (left, right) and its height (up, down); clipped to the slice, duplicates
    dropped, in that order."""
    x0, y0, x1, y1 = box
    cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0 + 1, y1 - y0 + 1
    out = [(cx - s * bw / 2 + 0.5, cy - s * bh / 2 + 0.5, cx + s * bw / 2 - 0.5, cy + s * bh / 2 - 0.5) for s in scales]
    if shift > 0:
        dx, dy = shift * bw, shift * bh
        out += [(x0 + mx, y0 + my, x1 + mx, y1 + my) for mx, my in ((-dx, 0), (dx, 0), (0, -dy), (0, dy))]
    unique: list[Box] = []
    for b in out:
        b = tuple(round(v, 3) for v in clip_box(b, shape))
        if b not in unique:
            unique.append(b)
    return unique


def prompts_from_prediction(
    probs: np.ndarray,
    scales: Sequence[float] = (1.0,),
    shift: float = 0.0,
    lower_cut: float | None = None,
    connectivity: str = "full",
    max_regions: int | None = None,
) -> list[BoxPrompt]:
    """Box prompts for the predicted regions of every foreground class of one slice.

    Args:
        probs: ``(C, H, W)`` softmax probabilities (class 0 the background).
        scales, shift: the variants of each region's box (:func:`box_variants`).
        lower_cut: also prompt with the regions of ``probs[c] > lower_cut`` (a looser reading
            of the prediction: regions the argmax misses or cuts short); None: argmax only.
        connectivity: region connectivity (``"full"`` or ``"face"``).
        max_regions: prompt only the largest that many regions of each class (of the argmax,
            and as many of ``probs[c] > lower_cut``); None: every region, however small.

    Returns:
        The prompts, class by class; none for a class the slice does not predict.
    """
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"probs must be (C, H, W) with C >= 2, got {probs.shape}")
    shape = probs.shape[1:]
    argmax = np.argmax(probs, axis=0)
    out: list[BoxPrompt] = []
    for c in range(1, probs.shape[0]):
        boxes = region_boxes(argmax == c, connectivity, max_regions)
        if lower_cut is not None:
            loose = region_boxes(probs[c] > lower_cut, connectivity, max_regions)
            boxes += [b for b in loose if b not in boxes]
        seen: set[Box] = set()
        for region, box in enumerate(boxes):
            for variant in box_variants(box, shape, scales, shift):
                if variant not in seen:
                    seen.add(variant)
                    out.append(BoxPrompt(c, region, variant))
    return out


@dataclass(frozen=True)
class PromptRecipe:
    """How a prompted generator turns a slice's prediction into box prompts (the plan's
    ``samdsk.proposals.prompts`` and connectivity): see :func:`prompts_from_prediction`."""

    scales: tuple[float, ...] = (1.0,)
    shift: float = 0.0
    lower_cut: float | None = None
    max_regions: int | None = None
    connectivity: str = "full"

    def prompts(self, probs: np.ndarray) -> list[BoxPrompt]:
        """The box prompts for ``probs`` ``(C, H, W)``."""
        return prompts_from_prediction(
            probs, self.scales, self.shift, self.lower_cut, self.connectivity, self.max_regions
        )

    def settings(self) -> dict:
        """The recipe as plain data, for cache keys."""
        return {
            "scales": list(self.scales),
            "shift": self.shift,
            "lower_cut": self.lower_cut,
            "max_regions": self.max_regions,
            "connectivity": self.connectivity,
        }


# every region prompted, its box alone
DEFAULT_RECIPE = PromptRecipe()


def grid_prompts(
    shape: tuple[int, int], sizes: Sequence[float], overlap: float = 0.5, max_boxes: int = 64
) -> list[BoxPrompt]:
    """Square boxes of each side in ``sizes`` (px) tiling an ``(H, W)`` slice with ``overlap``
    (the fraction of a side shared by neighbours), for a model without a prediction to prompt
    it. The stride grows until there are at most ``max_boxes`` per size; below the four boxes
    that reach every edge, an evenly spread subset of those is kept."""
    h, w = shape
    out: list[BoxPrompt] = []
    for side in sizes:
        side = float(min(max(side, 2.0), h, w))
        stride = max(1.0, side * (1 - overlap))
        while len(_starts(h, side, stride)) * len(_starts(w, side, stride)) > max_boxes and stride < max(h, w):
            stride *= 1.25
        boxes = [(x, y, x + side - 1, y + side - 1) for y in _starts(h, side, stride) for x in _starts(w, side, stride)]
        if len(boxes) > max_boxes:
            boxes = [boxes[i] for i in np.linspace(0, len(boxes) - 1, max_boxes).round().astype(int)]
        out += [BoxPrompt(0, len(out) + i, b) for i, b in enumerate(boxes)]
    return out


def _starts(length: int, side: float, stride: float) -> list[float]:
    """Box starts along an axis of ``length`` px: every ``stride`` from 0, the last flush with the end."""
    last = length - side
    starts = [float(s) for s in np.arange(0.0, last, stride)] + [last]
    return sorted({round(s, 3) for s in starts})


def interior_point(mask: np.ndarray, box: Box) -> tuple[float, float]:
    """``(x, y)`` of the pixel of ``mask`` inside ``box`` farthest from the mask's border (the
    region's most interior pixel, a positive point prompt; of equally deep pixels the one nearest
    their mean); the box's centre when the mask has no pixel there."""
    x0, y0, x1, y1 = (round(v) for v in box)
    inside = np.zeros_like(mask, dtype=bool)
    inside[y0 : y1 + 1, x0 : x1 + 1] = mask[y0 : y1 + 1, x0 : x1 + 1]
    if not inside.any():
        return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    depth = ndimage.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
    ys, xs = np.nonzero(depth == depth.max())
    nearest = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))  # ties: the middle one
    return (float(xs[nearest]), float(ys[nearest]))
