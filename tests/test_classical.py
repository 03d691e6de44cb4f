"""The classical proposal generator: known answers on synthetic slices, oracle Dice on hippocampus."""

import json

import numpy as np
import pytest

from samdsk_plan.io import read_image
from samdsk_plan.proposals import ProposalGenerator, Proposals
from samdsk_plan.proposals.classical import ClassicalGenerator, merge_hierarchy, unique_masks
from samdsk_plan.proposals.volume import window_to_unit

# the per-image window the pipeline uses for non-CT data (0.5 / 99.5 percentiles)
PER_IMAGE = {"scheme": "zscore"}


def dice(masks: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dice of each of ``masks`` ``(N, H, W)`` with ``target`` ``(H, W)``: ``(N,)``."""
    inter = (masks & target).sum(axis=(1, 2))
    return 2 * inter / (masks.sum(axis=(1, 2)) + target.sum())


def two_discs(zoom: int = 1, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A ``(48 z, 64 z)`` dark slice with Gaussian noise and two bright discs of radius ``6 z``
    (about ``113 z^2`` px each); returns the slice in [0, 1] and the two disc masks."""
    yy, xx = np.mgrid[: 48 * zoom, : 64 * zoom] / zoom
    discs = [(yy - 20) ** 2 + (xx - 18) ** 2 <= 36, (yy - 28) ** 2 + (xx - 44) ** 2 <= 36]
    image = 0.2 + 0.5 * (discs[0] | discs[1]) + np.random.default_rng(seed).normal(0, 0.05, yy.shape)
    return np.clip(image, 0, 1).astype(np.float32), discs


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("zoom", [1, 3])
def test_each_disc_has_a_matching_proposal(fast, zoom):
    image, discs = two_discs(zoom)
    proposals = ClassicalGenerator(object_area_px=113.0 * zoom**2, fast=fast)(image)
    for disc in discs:
        assert dice(proposals.pixel_masks(), disc).max() >= 0.9


def test_output_is_well_formed_and_deterministic():
    image, _ = two_discs(seed=1)
    generator = ClassicalGenerator(object_area_px=113.0)
    assert isinstance(generator, ProposalGenerator) and generator.name == "classical"
    proposals = generator(image)
    assert isinstance(proposals, Proposals)
    masks = proposals.pixel_masks()
    assert masks.dtype == bool and masks.shape[1:] == image.shape and len(masks) > 50
    area = masks.sum(axis=(1, 2))
    assert area.min() >= 3 and area.max() <= 0.6 * image.size
    assert len({m.tobytes() for m in masks}) == len(masks)
    assert proposals.scores.dtype == np.float32 and np.all(proposals.scores == 1)
    again = ClassicalGenerator(object_area_px=113.0)(image.copy())
    assert np.array_equal(again.pixel_masks(), masks)


def test_fast_mode_gives_a_subset():
    image, _ = two_discs(seed=2)
    full = {m.tobytes() for m in ClassicalGenerator(113.0)(image).pixel_masks()}
    fast = {m.tobytes() for m in ClassicalGenerator(113.0, fast=True)(image).pixel_masks()}
    assert fast < full


def test_settings_are_json_and_tell_generators_apart():
    settings = [
        ClassicalGenerator(90.0).settings(),
        ClassicalGenerator(90.0, fast=True).settings(),
        ClassicalGenerator(400.0).settings(),
    ]
    dumped = [json.dumps(s, sort_keys=True) for s in settings]
    assert json.loads(dumped[0]) == settings[0]
    assert len(set(dumped)) == 3
    assert ClassicalGenerator(90.0).settings() == settings[0]


def test_larger_objects_give_coarser_segmentations():
    image, _ = two_discs(zoom=3)
    coarse, fine = (len(ClassicalGenerator(area, fast=True)(image)) for area in (1000.0, 100.0))
    assert coarse < fine / 3


@pytest.mark.parametrize("shape", [(35, 50), (3, 4), (1, 1)])
def test_flat_and_tiny_slices_give_well_formed_output(shape):
    for fast in (False, True):
        proposals = ClassicalGenerator(90.0, fast=fast)(np.full(shape, 0.3, dtype=np.float32))
        assert proposals.pixel_masks().shape[1:] == shape and proposals.masks.dtype == bool


def test_merge_hierarchy_has_every_merged_region():
    # Four quadrant regions; the vertical boundary is weaker than the horizontal one, so left and
    # right halves merge first, then the two halves: 4 + 3 regions.
    labels = np.repeat(np.repeat(np.array([[1, 2], [3, 4]]), 4, axis=0), 4, axis=1)
    edges = np.zeros((8, 8))
    edges[:, 3:5] = 0.1
    edges[3:5, :] = 1.0
    regions = merge_hierarchy(labels, edges)
    assert regions.shape == (7, 8, 8)
    assert [r.sum() for r in regions] == [16, 16, 16, 16, 32, 32, 64]
    assert {r[:, :4].any() and r[:, 4:].any() for r in regions[4:6]} == {True}


def skimage_merge_hierarchy(labels: np.ndarray, edge_map: np.ndarray) -> np.ndarray:
    """The reference: scikit-image's RAG merge with a boundary-length-weighted mean."""
    from skimage.graph import merge_hierarchical, rag_boundary

    rag = rag_boundary(labels, edge_map)
    region = {node: labels == node for node in rag.nodes}
    merged = []

    def merge(graph, src, dst):
        region[dst] = region.pop(src) | region[dst]
        merged.append(region[dst])

    def weight(graph, src, dst, neighbor):
        edges = [graph[node][neighbor] for node in (src, dst) if graph.has_edge(node, neighbor)]
        count = sum(e["count"] for e in edges)
        return {"count": count, "weight": sum(e["count"] * e["weight"] for e in edges) / count}

    merge_hierarchical(labels, rag, np.inf, False, True, merge, weight)
    initial = np.stack([labels == v for v in np.unique(labels)])
    return np.concatenate([initial, np.asarray(merged, dtype=bool).reshape(-1, *labels.shape)])


def test_merge_hierarchy_equals_scikit_image_rag_merge():
    from skimage.filters import sobel
    from skimage.segmentation import slic

    rng = np.random.default_rng(0)
    for _ in range(8):
        shape = tuple(int(n) for n in rng.integers(20, 90, 2))
        image = np.clip(rng.random(shape) * 0.3 + (np.indices(shape)[0] > shape[0] // 2) * 0.5, 0, 1)
        labels = slic(image, n_segments=int(rng.integers(5, 150)), compactness=0.3, channel_axis=None, start_label=1)
        np.testing.assert_array_equal(
            merge_hierarchy(labels, sobel(image)), skimage_merge_hierarchy(labels, sobel(image))
        )


def test_unique_masks_filters_and_keeps_first_order():
    a, b, tiny = np.zeros((3, 4, 4), dtype=bool)
    a[:2] = True
    b[2:] = True
    tiny[0, 0] = True
    kept = unique_masks(np.stack([b, a, b, tiny, np.ones((4, 4), bool)]), min_area=2, max_area=12)
    assert np.array_equal(kept, np.stack([b, a]))


def labelled_slices(root, n_cases: int = 10, per_case: int = 2):
    """Per axis, ``n_cases * per_case`` (image, label) slices evenly spaced over the slices with
    foreground of the first ``n_cases`` labelled hippocampus cases."""
    out = {axis: [] for axis in range(3)}
    for path in sorted((root / "labelsTr").glob("*.nii.gz"))[:n_cases]:
        label = np.asarray(read_image(path).array)
        image = window_to_unit(read_image(root / "imagesTr" / path.name).array, PER_IMAGE)
        for axis in range(3):
            present = np.flatnonzero(np.moveaxis(label, axis, 0).any(axis=(1, 2)))
            for k in present[np.linspace(0, len(present) - 1, per_case + 2).round().astype(int)[1:-1]]:
                out[axis].append((np.take(image, k, axis=axis), np.take(label, k, axis=axis)))
    return out


# Measured K=1 oracle Dice (mean over the sampled slices with >= 10 px of the class: 41 anterior,
# 47 posterior; scikit-image 0.26): full 0.752 anterior, 0.762 posterior; fast 0.687, 0.727.
# Larger random samples (12 cases, 25 slices per axis) give 0.74 / 0.78 (full), 0.69 / 0.75 (fast),
# so this sample is typical. A single proposal stays near 0.75 because a hippocampus part is
# rarely one region of any over-segmentation (unions of 2 proposals reach ~0.83). The output is
# deterministic; the thresholds sit ~0.04 below the measurements as a margin for other
# scikit-image versions and small parameter changes, while dropping the watersheds and merge
# hierarchy from the full mode (i.e. the fast mode's levels) fails the anterior threshold.
THRESHOLDS = {False: {1: 0.71, 2: 0.72}, True: {1: 0.65, 2: 0.69}}


@pytest.mark.parametrize("fast", [False, True])
def test_hippocampus_single_proposal_oracle(hippocampus, fast):
    slices = labelled_slices(hippocampus)
    best = {1: [], 2: []}
    generator = ClassicalGenerator(object_area_px=90.0, fast=fast)
    for pairs in slices.values():
        for image, label in pairs:
            masks = generator(image).pixel_masks()
            for c in best:
                if (label == c).sum() >= 10:
                    best[c].append(dice(masks, label == c).max())
    measured = {c: float(np.mean(v)) for c, v in best.items()}
    assert all(len(v) >= 35 for v in best.values()), {c: len(v) for c, v in best.items()}
    assert all(measured[c] >= THRESHOLDS[fast][c] for c in best), measured


def test_proposals_in_the_region_of_interest_match_exactly_on_real_slices(hippocampus):
    """Classical proposals made inside each slice's region of interest (the pipeline's window)
    and matched on that window: the same optimum and label as the pixel-level search over the
    whole slice with the same proposals."""
    from scipy import ndimage

    from samdsk_plan.matching import best_union, match_slice
    from samdsk_plan.proposals.volume import roi_window

    gen = ClassicalGenerator(90.0)
    slices = labelled_slices(hippocampus, n_cases=3, per_case=1)
    checked = 0
    for image, label in slices[0] + slices[2]:
        region = label == 1
        if region.sum() < 10:
            continue
        prob = ndimage.gaussian_filter(ndimage.binary_erosion(region).astype(float), 1.0)
        probs = np.stack([1 - prob, prob])
        (r, c), (h, w) = roi_window(region, 10)
        crop = gen(image[r : r + h, c : c + w]).pixel_masks()
        windowed = match_slice(crop, probs, [(1, 3)], offset=(r, c))
        full = np.zeros((len(crop), *image.shape), bool)
        full[:, r : r + h, c : c + w] = crop
        target = np.where(prob < 0.05, 0.0, prob)  # the default soft target and floor
        pixels = best_union(full, target, 3, metric="iou")
        assert windowed.exact and pixels.exact
        assert windowed.scores[1] == pytest.approx(pixels.score, abs=1e-9)
        np.testing.assert_array_equal(windowed.label == 1, full[list(pixels.indices)].any(axis=0))
        checked += 1
    assert checked >= 3


def test_shrink_is_the_block_mean_with_edge_padding():
    from samdsk_plan.proposals.classical import shrink

    image = np.arange(15, dtype=float).reshape(3, 5)
    small = shrink(image, 2)
    # blocks [[0,1],[5,6]], [[2,3],[7,8]], [[4,4],[9,9]] (edge column repeated), then the last row doubled
    np.testing.assert_allclose(small, [[3.0, 5.0, 6.5], [10.5, 12.5, 14.0]])
    assert shrink(image, 1).shape == (3, 5)


def test_large_objects_are_segmented_on_a_shrunk_slice_and_blown_back_up():
    from samdsk_plan.proposals.classical import WORK_AREA_PX

    image, discs = two_discs(zoom=4)  # discs of about 1800 px: 3x shrink at the default work area
    generator = ClassicalGenerator(113.0 * 16, fast=True)
    assert generator.shrink == 3 == int(np.sqrt(113.0 * 16 / WORK_AREA_PX))
    # the smallest class decides: regions of 400 px allow only 1x
    assert ClassicalGenerator(113.0 * 16, smallest_area_px=400.0).shrink == 1
    found = generator(image)
    assert found.scale == 3 and found.masks.shape[1:] == (64, 86) and found.size == image.shape  # kept on blocks
    masks = found.pixel_masks()
    assert masks.shape[1:] == image.shape and masks.any(axis=(1, 2)).all()
    # every mask is constant on the 3 x 3 blocks (the last, partial ones included)
    blocks = masks[:, ::3, ::3]
    np.testing.assert_array_equal(masks, np.repeat(np.repeat(blocks, 3, axis=1), 3, axis=2)[:, :192, :256])
    full = ClassicalGenerator(113.0 * 16, fast=True, work_area_px=None)
    assert full.shrink == 1 and full.settings() != generator.settings()
    for disc in discs:  # the discs are still found, to within the block boundaries
        assert dice(masks, disc).max() > 0.9
