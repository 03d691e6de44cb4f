"""Classical proposal generator: the union of regions from several scikit-image over-segmentations.

SamDSK needs, per 2D slice, candidate regions whose unions can match a model's probability map.
Segment Anything gives such candidates from downloaded weights; this generator gives them with
scikit-image only, so the pipeline runs offline:

- Felzenszwalb graph segmentations at three scales;
- SLIC superpixels at four sizes;
- watersheds of the Sobel gradient seeded by its h-minima (a few depths ``h``) and one compact
  watershed seeded on a grid (full mode only);
- every region of a boundary-weighted merge hierarchy over a fine SLIC over-segmentation (full
  mode only): the superpixels, then each region created by merging the two regions with the
  weakest mean gradient on their common boundary, until one region is left.

Spatial parameters are set for the reference object area (90 px, a hippocampus region on a
35 x 50 slice) and scaled by ``object_area_px / 90`` so that a typical object spans a similar
number of superpixels at any size (intensity parameters and the pixel-noise smoothing are not
scaled). Everything is deterministic (SLIC's k-means starts on a grid).

On hippocampus slices (``benchmarks/proposals.py``, 2 CPU cores) the full mode gives ~880
proposals per slice in ~40 ms CPU, with oracle Dice (best union of at most K proposals against a
labelled region) ~0.75 / 0.82 / 0.86 for K = 1 / 2 / 3; the fast mode ~390 proposals in ~9 ms,
~0.70 / 0.79 / 0.83.
"""

from __future__ import annotations

import math

import numpy as np
import skimage
from skimage.filters import sobel
from skimage.graph import merge_hierarchical, rag_boundary
from skimage.measure import label
from skimage.morphology import h_minima
from skimage.segmentation import felzenszwalb, slic, watershed

from samdsk_plan.proposals.base import Proposals

REFERENCE_AREA_PX = 90.0
"""Object area (pixels) at which the parameters below were tuned: hippocampus, 35 x 50 slices."""

FELZENSZWALB_SCALES = (10.0, 30.0, 100.0)
"""Felzenszwalb ``scale`` (the paper's ``k``) at the reference area."""
FELZENSZWALB_MIN_SIZE_PX = 5.0
"""Felzenszwalb smallest segment (pixels) at the reference area."""
FELZENSZWALB_SIGMA_PX = 0.5
"""Felzenszwalb Gaussian pre-smoothing (pixels, not scaled: it is against pixel noise). The
default 0.8 splits sharp edges into rings of intermediate intensity."""
SLIC_SEGMENT_AREAS_PX = (140.0, 70.0, 35.0, 17.5)
"""Mean SLIC superpixel area (pixels) at the reference area: about 12, 25, 50, 100 segments on
35 x 50. The coarsest (larger than an object) often snaps to a whole object."""
SLIC_COMPACTNESS = 0.3
WATERSHED_H = (0.02, 0.05, 0.1)
"""Depths of the gradient minima that seed the h-minima watersheds (intensity units / pixel)."""
COMPACT_SEGMENT_AREA_PX = 35.0
"""Grid spacing of the compact watershed's seeds, as area per seed (pixels) at the reference."""
COMPACT_WATERSHED_COMPACTNESS = 0.01
HIERARCHY_SEGMENT_AREA_PX = 8.75
"""Mean area (pixels) of the SLIC superpixels the merge hierarchy starts from (200 on 35 x 50)."""
MIN_AREA_FRACTION = 0.03
"""Masks smaller than this fraction of ``object_area_px`` (3 px at the reference) are dropped:
they cannot match a region of typical size, and the tiniest labelled regions are noise-level."""
MAX_SLICE_FRACTION = 0.6
"""Masks covering more than this fraction of the slice are dropped: they are background."""


class ClassicalGenerator:
    """Region proposals from scikit-image over-segmentations (no learned weights).

    Args:
        object_area_px: typical area (pixels) of one labelled region in a slice, e.g. the plan's
            ``samdsk.classes.<c>.region_area_px.<axis>.median``; spatial parameters scale with it.
        fast: Felzenszwalb and SLIC only (about 4x faster, fewer and coarser proposals).
    """

    name = "classical"

    def __init__(self, object_area_px: float = REFERENCE_AREA_PX, fast: bool = False) -> None:
        if not object_area_px > 0:
            raise ValueError(f"object_area_px must be positive, got {object_area_px}")
        self.object_area_px = float(object_area_px)
        self.fast = bool(fast)

    def settings(self) -> dict:
        """JSON-able parameters; equal settings give equal proposals."""
        return {
            "object_area_px": self.object_area_px,
            "fast": self.fast,
            "reference_area_px": REFERENCE_AREA_PX,
            "felzenszwalb_scales": list(FELZENSZWALB_SCALES),
            "felzenszwalb_min_size_px": FELZENSZWALB_MIN_SIZE_PX,
            "felzenszwalb_sigma_px": FELZENSZWALB_SIGMA_PX,
            "slic_segment_areas_px": list(SLIC_SEGMENT_AREAS_PX),
            "slic_compactness": SLIC_COMPACTNESS,
            "watershed_h": [] if self.fast else list(WATERSHED_H),
            "compact_segment_area_px": None if self.fast else COMPACT_SEGMENT_AREA_PX,
            "compact_watershed_compactness": None if self.fast else COMPACT_WATERSHED_COMPACTNESS,
            "hierarchy_segment_area_px": None if self.fast else HIERARCHY_SEGMENT_AREA_PX,
            "min_area_fraction": MIN_AREA_FRACTION,
            "max_slice_fraction": MAX_SLICE_FRACTION,
            "skimage": skimage.__version__,
        }

    def __call__(self, image: np.ndarray) -> Proposals:
        """Proposals for a ``(H, W)`` slice windowed to [0, 1]; all scores are 1."""
        masks = classical_proposals(image, self.object_area_px, self.fast)
        return Proposals(masks, np.ones(len(masks), dtype=np.float32))


def classical_proposals(image: np.ndarray, object_area_px: float = REFERENCE_AREA_PX, fast: bool = False) -> np.ndarray:
    """Unique candidate regions of ``image``.

    Args:
        image: ``(H, W)`` float intensities in [0, 1].
        object_area_px: typical object area (pixels); see :class:`ClassicalGenerator`.
        fast: Felzenszwalb and SLIC only.

    Returns:
        ``(N, H, W)`` bool masks, each non-empty, unique, at least ``MIN_AREA_FRACTION *
        object_area_px`` pixels and at most ``MAX_SLICE_FRACTION`` of the slice, in order of
        first appearance (Felzenszwalb, SLIC, h-minima watersheds, compact watershed, hierarchy).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {image.shape}")
    scale = object_area_px / REFERENCE_AREA_PX
    partitions = [
        felzenszwalb(
            image,
            scale=k * scale,
            sigma=FELZENSZWALB_SIGMA_PX,
            min_size=max(1, round(FELZENSZWALB_MIN_SIZE_PX * scale)),
        )
        for k in FELZENSZWALB_SCALES
    ]
    partitions += [_slic(image, area * scale) for area in SLIC_SEGMENT_AREAS_PX]
    hierarchy = np.zeros((0, *image.shape), dtype=bool)
    if not fast:
        gradient = sobel(image)
        partitions += [h_minima_watershed(gradient, h) for h in WATERSHED_H]
        seeds = _n_segments(image, COMPACT_SEGMENT_AREA_PX * scale)
        # The compactness term grows with seed distance, i.e. with sqrt(area): divide it back.
        partitions.append(
            watershed(gradient, markers=seeds, compactness=COMPACT_WATERSHED_COMPACTNESS / np.sqrt(scale))
        )
        hierarchy = merge_hierarchy(_slic(image, HIERARCHY_SEGMENT_AREA_PX * scale), gradient)
    masks = np.concatenate([partition_masks(p) for p in partitions] + [hierarchy])
    return unique_masks(
        masks, min_area=max(1, round(MIN_AREA_FRACTION * object_area_px)), max_area=int(MAX_SLICE_FRACTION * image.size)
    )


def _n_segments(image: np.ndarray, segment_area_px: float) -> int:
    return max(1, round(image.size / segment_area_px))


def _slic(image: np.ndarray, segment_area_px: float) -> np.ndarray:
    """SLIC labels (from 1) with superpixels of about ``segment_area_px`` pixels."""
    return slic(
        image,
        n_segments=_n_segments(image, segment_area_px),
        compactness=SLIC_COMPACTNESS,
        channel_axis=None,
        start_label=1,
    )


def h_minima_watershed(gradient: np.ndarray, h: float) -> np.ndarray:
    """Watershed of ``gradient`` ``(H, W)`` seeded by its minima at least ``h`` deep; int labels."""
    return watershed(gradient, markers=label(h_minima(gradient, h)))


def partition_masks(labels: np.ndarray) -> np.ndarray:
    """One ``(H, W)`` bool mask per distinct value of ``labels``: ``(N, H, W)``."""
    values = np.unique(labels)
    return labels[None] == values[:, None, None]


def merge_hierarchy(labels: np.ndarray, edge_map: np.ndarray) -> np.ndarray:
    """Every region of a greedy boundary merge of the over-segmentation ``labels``.

    Adjacent regions are merged in order of the mean of ``edge_map`` on their common boundary
    (boundary lengths weight the means of merged boundaries) until one region is left.

    Args:
        labels: ``(H, W)`` int over-segmentation.
        edge_map: ``(H, W)`` float boundary strength, e.g. the gradient magnitude.

    Returns:
        ``(N, H, W)`` bool: the initial regions, then each merged region in merge order.
    """
    initial = partition_masks(labels)
    if len(initial) < 2:
        return initial
    rag = rag_boundary(labels, edge_map)
    region = {node: labels == node for node in rag.nodes}
    merged = []

    def merge(graph, src: int, dst: int) -> None:
        region[dst] = region.pop(src) | region[dst]
        merged.append(region[dst])

    merge_hierarchical(
        labels, rag, thresh=np.inf, rag_copy=False, in_place_merge=True, merge_func=merge, weight_func=_boundary_weight
    )
    return np.concatenate([initial, np.asarray(merged, dtype=bool).reshape(-1, *labels.shape)])


def _boundary_weight(graph, src: int, dst: int, neighbor: int) -> dict:
    """Edge from the merge of ``src`` and ``dst`` to ``neighbor``: boundary-length-weighted mean."""
    edges = [graph[node][neighbor] for node in (src, dst) if graph.has_edge(node, neighbor)]
    count = sum(e["count"] for e in edges)
    return {"count": count, "weight": sum(e["count"] * e["weight"] for e in edges) / count}


def unique_masks(masks: np.ndarray, min_area: int, max_area: int) -> np.ndarray:
    """Masks ``(N, H, W)`` bool with ``min_area <= area <= max_area`` pixels, duplicates removed
    (first occurrence kept, order preserved)."""
    area = masks.sum(axis=(1, 2))
    masks = masks[(area >= max(min_area, 1)) & (area <= max_area)]
    packed = np.packbits(masks.reshape(len(masks), math.prod(masks.shape[1:])), axis=1)
    first: dict[bytes, int] = {}
    for i, row in enumerate(packed):
        first.setdefault(row.tobytes(), i)
    return masks[list(first.values())]
