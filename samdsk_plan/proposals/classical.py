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
scaled). When even the smallest class's regions (``smallest_area_px``) are larger than
``work_area_px`` (twice the reference), the slice is segmented shrunk by the integer factor
``f = floor(sqrt(smallest_area_px / work_area_px))`` (block means), so that those regions
still span at least ``work_area_px`` pixels, and the masks are blown back up by ``f``: the
cost per slice stops growing with the resolution, at the price of region boundaries on an
``f``-pixel grid. Everything is deterministic (SLIC's k-means starts on a grid).

On hippocampus slices (``benchmarks/proposals.py``, 2 CPU cores) the full mode gives ~880
proposals per slice in ~40 ms CPU, with oracle Dice (best union of at most K proposals against a
labelled region) ~0.75 / 0.82 / 0.86 for K = 1 / 2 / 3; the fast mode ~390 proposals in ~9 ms,
~0.70 / 0.79 / 0.83.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import skimage
from scipy import ndimage
from skimage.filters import sobel
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
WORK_AREA_PX = 2 * REFERENCE_AREA_PX
"""Area (pixels) the smallest class's regions keep on a shrunk slice: slices whose smallest
regions are at least 4x larger are segmented shrunk (see the module docstring)."""
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
        smallest_area_px: typical area of the smallest class's regions (default
            ``object_area_px``), which decides the shrink factor.
        work_area_px: the area (pixels) the smallest regions keep when the slice is shrunk
            (see the module docstring); None: always full resolution.
    """

    name = "classical"
    crops_to_roi = True  # the pipeline gives it each slice's region of interest, not the whole slice

    def __init__(
        self,
        object_area_px: float = REFERENCE_AREA_PX,
        fast: bool = False,
        smallest_area_px: float | None = None,
        work_area_px: float | None = WORK_AREA_PX,
    ) -> None:
        if not object_area_px > 0:
            raise ValueError(f"object_area_px must be positive, got {object_area_px}")
        if smallest_area_px is not None and not smallest_area_px > 0:
            raise ValueError(f"smallest_area_px must be positive, got {smallest_area_px}")
        if work_area_px is not None and not work_area_px > 0:
            raise ValueError(f"work_area_px must be positive or None, got {work_area_px}")
        self.object_area_px = float(object_area_px)
        self.fast = bool(fast)
        self.smallest_area_px = float(smallest_area_px) if smallest_area_px is not None else self.object_area_px
        self.work_area_px = None if work_area_px is None else float(work_area_px)

    @property
    def shrink(self) -> int:
        """The integer factor per axis the slice is shrunk by before segmenting (1: none)."""
        if self.work_area_px is None:
            return 1
        return max(1, math.floor(math.sqrt(self.smallest_area_px / self.work_area_px)))

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
            "shrink": self.shrink,
            "skimage": skimage.__version__,
        }

    def __call__(self, image: np.ndarray) -> Proposals:
        """Proposals for a ``(H, W)`` slice windowed to [0, 1]; all scores are 1."""
        f = self.shrink
        if f == 1:
            masks = classical_proposals(image, self.object_area_px, self.fast)
            return Proposals(masks, np.ones(len(masks), dtype=np.float32))
        # kept on the shrunk grid (Proposals.scale): every small pixel's block starts inside
        # the slice (the padding only completes the last blocks), so they stay distinct and
        # non-empty on the slice's pixels
        small = classical_proposals(shrink(image, f), self.object_area_px / f**2, self.fast)
        return Proposals(small, np.ones(len(small), dtype=np.float32), scale=f, size=tuple(image.shape))


def shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """``(H, W)`` image shrunk by an integer ``factor`` per axis: means of ``factor x factor``
    blocks (the last blocks padded by repeating the edge), ``(ceil(H / f), ceil(W / f))``."""
    h, w = image.shape
    padded = np.pad(image, ((0, -h % factor), (0, -w % factor)), mode="edge")
    return padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor).mean(axis=(1, 3))


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


def boundary_edges(labels: np.ndarray, edge_map: np.ndarray) -> dict[tuple[int, int], tuple[int, float]]:
    """The region adjacency of ``labels`` with boundary strengths, as scikit-image's
    ``graph.rag_boundary`` defines them.

    Every pixel next to another label (8-neighbourhood) pairs its label with the smallest and
    with the largest label around it; a pair of labels ``(a, b)``, ``a < b``, gets the number
    ``n`` of such pixel pairings and the sum ``s`` of ``edge_map`` over them (its mean boundary
    strength is ``s / n``).

    Args:
        labels: ``(H, W)`` int over-segmentation.
        edge_map: ``(H, W)`` float boundary strength.

    Returns:
        ``{(a, b): (n, s)}`` for every pair of adjacent labels.
    """
    footprint = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    eroded = ndimage.grey_erosion(labels, footprint=footprint)
    dilated = ndimage.grey_dilation(labels, footprint=footprint)
    low, high = eroded != labels, dilated != labels
    small = np.concatenate([eroded[low], labels[high]]).astype(np.int64)
    large = np.concatenate([labels[low], dilated[high]]).astype(np.int64)
    strength = np.concatenate([edge_map[low], edge_map[high]]).astype(np.float64)
    base = int(large.max(initial=0)) + 1
    codes, inverse, counts = np.unique(small * base + large, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.ravel(), strength, len(codes))
    return {(int(c // base), int(c % base)): (int(n), float(v)) for c, n, v in zip(codes, counts, sums, strict=True)}


def merge_hierarchy(labels: np.ndarray, edge_map: np.ndarray) -> np.ndarray:
    """Every region of a greedy boundary merge of the over-segmentation ``labels``.

    Starting from :func:`boundary_edges`, the two adjacent regions whose common boundary has
    the lowest mean ``edge_map`` are merged (ties: the lower pair of region ids; a merged region
    takes the next free id), the merged region's boundary with each neighbour pools the two
    boundaries it replaces (counts and sums add, so the mean is boundary-length weighted), and
    so on until no two regions are adjacent. This is scikit-image's ``merge_hierarchical`` with
    a boundary-weighted mean, on a plain heap instead of a networkx graph (3-5 times faster
    on 20-120 px slices; the same regions wherever no two boundary means tie).

    Args:
        labels: ``(H, W)`` int over-segmentation.
        edge_map: ``(H, W)`` float boundary strength, e.g. the gradient magnitude.

    Returns:
        ``(N, H, W)`` bool: the initial regions (in label order), then each merged region in
        merge order.
    """
    initial = partition_masks(labels)
    if len(initial) < 2:
        return initial
    values = np.unique(labels)
    region = {int(v): m for v, m in zip(values, initial, strict=True)}
    neighbours: dict[int, dict[int, tuple[int, float]]] = {int(v): {} for v in values}
    heap = []
    for (a, b), (n, total) in boundary_edges(labels, edge_map).items():
        neighbours[a][b] = neighbours[b][a] = (n, total)
        heap.append((total / n, a, b))
    heapq.heapify(heap)
    next_id = int(values.max()) + 1
    merged = []
    while heap:
        _, a, b = heapq.heappop(heap)
        if a not in neighbours or b not in neighbours:
            continue  # one side was merged since (two live regions have one entry, never changed)
        new = next_id
        next_id += 1
        region[new] = region.pop(a) | region.pop(b)
        merged.append(region[new])
        pooled: dict[int, tuple[int, float]] = {}
        for side in (a, b):
            for other, (n, total) in neighbours.pop(side).items():
                del neighbours[other][side]
                if other not in (a, b):
                    m, t = pooled.get(other, (0, 0.0))
                    pooled[other] = (m + n, t + total)
        neighbours[new] = pooled
        for other, (n, total) in pooled.items():
            neighbours[other][new] = (n, total)
            heapq.heappush(heap, (total / n, other, new))
    return np.concatenate([initial, np.asarray(merged, dtype=bool).reshape(-1, *labels.shape)])


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
