"""Slicing volumes and caching proposals: hits, misses on changes, resume after interruption."""

import numpy as np
import pytest

from samdsk_plan.errors import SamdskError
from samdsk_plan.proposals import Proposals
from samdsk_plan.proposals.cache import ProposalCache
from samdsk_plan.proposals.pipeline import propose_case
from samdsk_plan.proposals.volume import get_slice, roi_window, slice_indices, window_to_unit


class ThresholdGenerator:
    """Deterministic stand-in generator: one proposal per threshold (pixels above it); counts calls."""

    name = "threshold"

    def __init__(self, thresholds=(0.25, 0.5), fail_after: int | None = None):
        self.thresholds = tuple(thresholds)
        self.calls = 0
        self.fail_after = fail_after

    def settings(self) -> dict:
        return {"thresholds": list(self.thresholds)}

    def __call__(self, image: np.ndarray) -> Proposals:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        masks = np.stack([image > t for t in self.thresholds])
        return Proposals(masks, np.linspace(1.0, 0.5, len(self.thresholds)).astype(np.float32))


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)


def all_slices(volume):
    return {axis: list(range(volume.shape[axis])) for axis in range(3)}


def test_window_to_unit():
    v = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    w = window_to_unit(v, {"scheme": "zscore"})
    assert w.dtype == np.float32 and w.min() == 0.0 and w.max() == 1.0
    np.testing.assert_allclose(w[5, 0, 0], (500 - 4.995) / (994.005 - 4.995), atol=1e-6)
    ct = window_to_unit(np.array([[[-1000.0, 0.0, 40.0, 2000.0]]]), {"scheme": "ct", "clip": [-40.0, 120.0]})
    np.testing.assert_allclose(ct.ravel(), [0.0, 0.25, 0.5, 1.0])
    assert not window_to_unit(np.full((2, 2, 2), 7.0), {"scheme": "zscore"}).any()


def test_slice_indices_skip_slices_far_from_the_roi():
    roi = np.zeros((10, 4, 4), dtype=bool)
    roi[4:6, 1, 1] = True
    assert slice_indices(roi.shape, 0, roi, margin=2) == [2, 3, 4, 5, 6, 7]
    assert slice_indices(roi.shape, 0, roi, margin=0) == [4, 5]
    assert slice_indices(roi.shape, 1, None) == [0, 1, 2, 3]
    assert slice_indices(roi.shape, 0, np.zeros_like(roi)) == []
    np.testing.assert_array_equal(get_slice(np.arange(24).reshape(2, 3, 4), 1, 2), [[8, 9, 10, 11], [20, 21, 22, 23]])


class CroppingGenerator(ThresholdGenerator):
    """The stand-in as a generator that proposes on each slice's region of interest; records
    the shapes it was given."""

    crops_to_roi = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def __call__(self, image: np.ndarray) -> Proposals:
        self.seen.append(image.shape)
        return super().__call__(image)


def test_roi_window_is_the_box_grown_by_the_margin_and_clipped():
    roi = np.zeros((10, 12), dtype=bool)
    roi[3:5, 6:8] = True  # rows 3-4, columns 6-7
    assert roi_window(roi, 2) == ((1, 4), (6, 6))
    assert roi_window(roi, 5) == ((0, 1), (10, 11))  # clipped at the slice's edges
    assert roi_window(roi, 0) == ((3, 6), (2, 2))
    assert roi_window(np.zeros((4, 4), bool), 3) is None


def test_cropping_generators_see_the_roi_and_a_new_roi_is_a_miss(volume, tmp_path):
    roi = np.zeros(volume.shape, dtype=bool)
    roi[2, 3:5, 1:3] = True
    gen, cache = CroppingGenerator(), ProposalCache(tmp_path)
    out = propose_case("c1", volume, {0: gen}, {0: [1, 2]}, cache, roi=roi, margins={0: 1})
    # slice 2 proposes on rows 2-5 and columns 0-3; slice 1 has no roi there: the whole slice
    assert gen.seen == [(7, 8), (4, 4)]
    found = out[(0, 2)]
    assert found.offset == (2, 0) and found.shape == (7, 8) and found.masks.shape == (2, 4, 4)
    np.testing.assert_array_equal(found.masks[0], volume[2, 2:6, 0:4] > 0.25)
    np.testing.assert_array_equal(found.full_masks()[0, :2], np.zeros((2, 8), bool))
    again = propose_case("c1", volume, {0: gen}, {0: [1, 2]}, cache, roi=roi, margins={0: 1})
    assert gen.calls == 2 and again[(0, 2)].offset == (2, 0), "the stored window is reused"
    np.testing.assert_array_equal(again[(0, 2)].masks, found.masks)
    propose_case("c1", volume, {0: gen}, {0: [1, 2]}, cache, roi=roi, margins={0: 2})
    assert gen.calls == 3 and gen.seen[-1] == (6, 5), "a slice stored for another window is made again"
    # a generator that does not crop, and a None margin, see whole slices
    plain = ThresholdGenerator()
    whole = propose_case("c1", volume, {0: plain}, {0: [2]}, None, roi=roi, margins={0: 1})
    assert whole[(0, 2)].masks.shape == (2, 7, 8) and whole[(0, 2)].frame is None
    whole = propose_case("c1", volume, {0: CroppingGenerator()}, {0: [2]}, None, roi=roi, margins={0: None})
    assert whole[(0, 2)].masks.shape == (2, 7, 8)


def test_proposals_on_windows_concatenate_on_the_window_holding_both():
    a = Proposals(np.ones((1, 2, 2), bool), np.ones(1, np.float32), None, (1, 1), (6, 6))
    b = Proposals(np.ones((2, 1, 3), bool), np.full(2, 0.5, np.float32), None, (4, 2), (6, 6))
    both = Proposals.concatenate([a, b])
    assert both.offset == (1, 1) and both.masks.shape == (3, 4, 4) and both.shape == (6, 6)
    np.testing.assert_array_equal(both.full_masks(), np.concatenate([a.full_masks(), b.full_masks()]))
    whole = Proposals(np.zeros((1, 6, 6), bool), np.ones(1, np.float32))
    assert Proposals.concatenate([whole, a]).frame is None
    with pytest.raises(ValueError, match="share"):
        Proposals.concatenate([a, Proposals(np.ones((1, 2, 2), bool), np.ones(1, np.float32), None, (0, 0), (5, 5))])
    with pytest.raises(ValueError, match="does not fit"):
        Proposals(np.ones((1, 3, 3), bool), np.ones(1, np.float32), None, (4, 4), (6, 6))


def test_cache_hit_returns_identical_proposals(volume, tmp_path):
    gen = ThresholdGenerator()
    cache = ProposalCache(tmp_path)
    first = propose_case("c1", volume, {a: gen for a in range(3)}, all_slices(volume), cache)
    assert gen.calls == 6 + 7 + 8
    again = propose_case("c1", volume, {a: gen for a in range(3)}, all_slices(volume), cache)
    assert gen.calls == 21, "a cache hit must not call the generator"
    assert first.keys() == again.keys()
    for k in first:
        np.testing.assert_array_equal(first[k].masks, again[k].masks)
        np.testing.assert_array_equal(first[k].scores, again[k].scores)
    np.testing.assert_array_equal(again[(1, 3)].masks[0], get_slice(volume, 1, 3) > 0.25)


def test_settings_or_image_change_is_a_miss(volume, tmp_path):
    cache = ProposalCache(tmp_path)
    propose_case("c1", volume, {0: ThresholdGenerator()}, {0: [0, 1]}, cache)
    other = ThresholdGenerator(thresholds=(0.3,))
    propose_case("c1", volume, {0: other}, {0: [0, 1]}, cache)
    assert other.calls == 2
    same = ThresholdGenerator(thresholds=(0.3,))
    changed = volume.copy()
    changed[0, 0, 0] += 0.5
    propose_case("c1", changed, {0: same}, {0: [0, 1]}, cache)
    assert same.calls == 2
    propose_case("c1", changed, {0: same}, {0: [0, 1]}, cache)
    assert same.calls == 2


def test_missing_slices_are_added_to_a_valid_cache(volume, tmp_path):
    cache = ProposalCache(tmp_path)
    gen = ThresholdGenerator()
    propose_case("c1", volume, {0: gen}, {0: [1, 2]}, cache)
    out = propose_case("c1", volume, {0: gen}, {0: [0, 1, 2, 3]}, cache)
    assert gen.calls == 4 and sorted(out) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def test_resume_after_interruption(volume, tmp_path):
    cache = ProposalCache(tmp_path)
    # Interrupted while proposing on axis 2 (after 6 + 7 slices of axes 0 and 1 and 3 of axis 2).
    broken = ThresholdGenerator(fail_after=16)
    with pytest.raises(KeyboardInterrupt):
        propose_case("c1", volume, {a: broken for a in range(3)}, all_slices(volume), cache)
    assert [p.name for p in tmp_path.iterdir()] == ["c1.npz"], "no temporary file left behind"
    resumed = ThresholdGenerator()
    out = propose_case("c1", volume, {a: resumed for a in range(3)}, all_slices(volume), cache)
    assert resumed.calls == 8, "axes 0 and 1 were finished and saved; only axis 2 is redone"
    reference = propose_case("c1", volume, {a: ThresholdGenerator() for a in range(3)}, all_slices(volume), None)
    for k in reference:
        np.testing.assert_array_equal(out[k].masks, reference[k].masks)


@pytest.mark.parametrize("damage", ["random", "empty", "truncated"])
def test_corrupt_cache_file_is_recomputed(volume, tmp_path, damage, caplog):
    good = propose_case("c1", volume, {0: ThresholdGenerator()}, {0: [0, 1]}, ProposalCache(tmp_path))
    data = (tmp_path / "c1.npz").read_bytes()
    broken = {"random": b"not a cache file", "empty": b"", "truncated": data[: len(data) // 2]}[damage]
    (tmp_path / "c1.npz").write_bytes(broken)
    gen = ThresholdGenerator()
    with caplog.at_level("WARNING"):
        out = propose_case("c1", volume, {0: gen}, {0: [0, 1]}, ProposalCache(tmp_path))
    assert gen.calls == 2, "every slice of the unreadable file is recomputed"
    assert str(tmp_path / "c1.npz") in caplog.text and "recomputing" in caplog.text
    for k in good:
        np.testing.assert_array_equal(out[k].masks, good[k].masks)
    assert ProposalCache(tmp_path).load("c1", "wrong key") == {}


def test_proposals_on_blocks_blow_up_concatenate_and_survive_the_cache(tmp_path):
    """A 3 x 3-block grid on a 5 x 7 window at (1, 2) of an 8 x 10 slice: pixels repeat each
    block's value, the last blocks cut at the window's edge; concatenating with a pixel-grid
    part goes to pixels, with a part on the same grid stays on blocks; the cache keeps the grid."""
    coarse = np.array([[[1, 0, 0], [0, 1, 1]], [[0, 0, 1], [1, 0, 0]]], bool)  # (2, 2, 3) blocks
    props = Proposals(coarse, np.ones(2, np.float32), None, (1, 2), (8, 10), scale=3, size=(5, 7))
    pixels = props.pixel_masks()
    assert pixels.shape == (2, 5, 7) and props.window_size == (5, 7) and props.shape == (8, 10)
    assert pixels[0, :3, :3].all() and not pixels[0, :3, 3:].any() and pixels[0, 3:, 3:].all()
    assert pixels[1, 3:, :3].all() and pixels[1, :3, 6].all() and not pixels[1, 3:, 3:].any()
    np.testing.assert_array_equal(props.full_masks()[:, 1:6, 2:9], pixels)
    assert not props.full_masks()[:, 6:].any() and not props.full_masks()[:, :, :2].any()
    other = Proposals(np.ones((1, 2, 2), bool), np.ones(1, np.float32), None, (0, 0), (8, 10))
    mixed = Proposals.concatenate([props, other])
    assert mixed.scale == 1 and mixed.offset == (0, 0) and mixed.window_size == (6, 9)
    np.testing.assert_array_equal(mixed.full_masks(), np.concatenate([props.full_masks(), other.full_masks()]))
    same = Proposals.concatenate([props, props])
    assert same.scale == 3 and same.masks.shape == (4, 2, 3) and same.size == (5, 7)
    cache = ProposalCache(tmp_path)
    cache.save("c", "k", {(0, 4): props, (1, 0): other})
    back = cache.load("c", "k")
    assert back[(0, 4)].scale == 3 and back[(0, 4)].size == (5, 7) and back[(0, 4)].offset == (1, 2)
    np.testing.assert_array_equal(back[(0, 4)].masks, coarse)
    assert back[(1, 0)].scale == 1 and back[(1, 0)].frame == (8, 10)
    with pytest.raises(ValueError, match="do not cover"):
        Proposals(coarse, np.ones(2, np.float32), scale=3, size=(7, 7))
    with pytest.raises(ValueError, match="exactly when"):
        Proposals(coarse, np.ones(2, np.float32), scale=3)


def test_stored_reads_any_key_and_names_a_missing_or_unreadable_file(volume, tmp_path):
    cache = ProposalCache(tmp_path)
    written = propose_case("c1", volume, {0: ThresholdGenerator()}, {0: [0, 1]}, cache)
    stored = cache.stored("c1")
    assert stored.keys() == written.keys()
    for k in written:
        np.testing.assert_array_equal(stored[k].masks, written[k].masks)
    with pytest.raises(SamdskError, match=r"c2\.npz: no proposal cache file for case c2"):
        cache.stored("c2")
    data = (tmp_path / "c1.npz").read_bytes()
    (tmp_path / "c1.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SamdskError, match=r"c1\.npz: unreadable proposal cache file"):
        cache.stored("c1")
