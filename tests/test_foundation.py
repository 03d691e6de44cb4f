"""Prompted generators, unions and where their proposals are cached, with a stand-in model
whose answer to a box is known (the box itself); the real LiteMedSAM is in test_litemedsam.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samdsk_plan.errors import SamdskError
from samdsk_plan.proposals.base import Proposals
from samdsk_plan.proposals.cache import ProposalCache
from samdsk_plan.proposals.embeddings import EmbeddingCache
from samdsk_plan.proposals.foundation import LiteMedSamGenerator, LiteMedSamGridGenerator, UnionGenerator
from samdsk_plan.proposals.pipeline import propose_case
from samdsk_plan.proposals.prompts import PromptRecipe

EMBEDDING = (2, 4, 4)


class BoxModel:
    """Answers each box with the filled box (empty for a box whose left edge is at x >= 30)
    and counts encoder calls."""

    name = "boxmodel"
    digest = "0" * 64

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, image: np.ndarray) -> np.ndarray:
        self.encoded += 1
        return np.full(EMBEDDING, image.mean(), np.float16)

    def decode(self, embedding, shape, boxes):
        masks = np.zeros((len(boxes), *shape), bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes, strict=True):
            if x0 < 30:
                m[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1] = True
        return masks, np.full(len(boxes), 0.5, np.float32)


class Constant:
    """An image-only generator: one fixed region; counts its calls."""

    name, prompted = "constant", False

    def __init__(self) -> None:
        self.calls = 0

    def settings(self) -> dict:
        return {}

    def __call__(self, image: np.ndarray) -> Proposals:
        self.calls += 1
        mask = np.zeros((1, *image.shape), bool)
        mask[0, :2, :2] = True
        return Proposals(mask, np.ones(1, np.float32))


def _probs(shape: tuple[int, ...], regions: list[tuple[int, slice, slice]]) -> np.ndarray:
    """Two-class probabilities: class 1 at 0.9 inside each ``(slice index, rows, columns)``."""
    p1 = np.full(shape, 0.1, np.float32)
    for index, rows, cols in regions:
        p1[index, rows, cols] = 0.9
    return np.stack([1 - p1, p1])


def test_prompted_proposals_come_from_the_predicted_regions_with_their_origin(tmp_path):
    model = BoxModel()
    gen = LiteMedSamGenerator(model, EmbeddingCache(tmp_path, {"m": 1}, 1.0, EMBEDDING), PromptRecipe((1.0, 2.0)))
    probs = _probs((1, 40, 40), [(0, slice(2, 6), slice(2, 8)), (0, slice(20, 24), slice(32, 36))])[:, 0]
    image = np.random.default_rng(0).random((40, 40), dtype=np.float32)
    found = gen(image, probs)
    # region 0: its box and the doubled box; region 1 lies at x >= 30, where the model answers nothing
    assert found.origins.tolist() == [[1, 0], [1, 0]]
    assert found.masks[0].sum() == 4 * 6 and found.masks[0][2:6, 2:8].all()
    # doubled about the centre (4.5, 3.5): x -1..10, y 0..7, clipped at the left edge: 11 x 8 px
    assert found.masks[1].sum() == 11 * 8
    assert gen(image, probs).masks.shape == found.masks.shape and model.encoded == 1  # embedding reused
    empty = gen(image, _probs((1, 40, 40), [])[:, 0])
    assert len(empty) == 0 and empty.origins.shape == (0, 2) and model.encoded == 1  # no prompt: no encoding


def test_grid_generator_needs_no_prediction():
    gen = LiteMedSamGridGenerator(BoxModel(), sizes_px=[10.0], overlap=0.0)
    found = gen(np.zeros((20, 20), np.float32))
    assert len(found) == 4 and found.masks.sum(axis=(1, 2)).tolist() == [100] * 4
    assert found.origins[:, 0].tolist() == [0] * 4 and gen.prompted is False


def test_union_is_the_prompted_part_then_the_image_only_part():
    prompted = LiteMedSamGenerator(BoxModel())
    union = UnionGenerator(prompted, Constant())
    probs = _probs((1, 20, 20), [(0, slice(5, 9), slice(5, 9))])[:, 0]
    found = union(np.zeros((20, 20), np.float32), probs)
    assert len(found) == 2 and found.origins.tolist() == [[1, 0], [-1, -1]]
    with pytest.raises(ValueError, match="one prompted and one image-only"):
        UnionGenerator(Constant(), prompted)


def test_union_parts_are_cached_apart(tmp_path):
    """The image-only part once across rounds; the prompted part per round, redone for new probabilities."""
    volume = np.random.default_rng(1).random((3, 20, 20), dtype=np.float32)
    fixed, model = Constant(), BoxModel()
    gens = {0: UnionGenerator(LiteMedSamGenerator(model), fixed)}
    slices = {0: [0, 1, 2]}
    shared, round1, round2 = (ProposalCache(tmp_path / d) for d in ("shared", "round_1", "round_2"))
    probs1 = _probs(volume.shape, [(i, slice(3, 7), slice(3, 7)) for i in range(3)])
    first = propose_case("c", volume, gens, slices, shared, probs1, round1)
    assert fixed.calls == 3 and model.encoded == 3
    assert (tmp_path / "shared" / "c.npz").is_file() and (tmp_path / "round_1" / "c.npz").is_file()
    assert all(len(p) == 2 for p in first.values())
    # the same round again (a resumed run): everything from the two caches
    again = propose_case("c", volume, gens, slices, shared, probs1, round1)
    assert fixed.calls == 3 and model.encoded == 3
    assert all(np.array_equal(again[k].masks, first[k].masks) for k in first)
    assert again[(0, 0)].origins.tolist() == [[1, 0], [-1, -1]]
    # the next round's prediction: new prompted proposals, the classical part reused
    probs2 = _probs(volume.shape, [(i, slice(10, 15), slice(10, 15)) for i in range(3)])
    second = propose_case("c", volume, gens, slices, shared, probs2, round2)
    assert fixed.calls == 3 and second[(0, 0)].masks[0].sum() == 25
    with pytest.raises(ValueError, match="need the model's probabilities"):
        propose_case("c", volume, gens, slices, shared)


def test_propose_entries_prompts_with_the_bundles_probability_files(tmp_path):
    """``propose --prob-dir``: each case's IMAGE_prob.nii.gz prompts the generator and picks the
    slices; prompted proposals go to CACHE/prompted/."""
    from samdsk_plan.io import write_image
    from samdsk_plan.planning import Plans
    from samdsk_plan.proposals.pipeline import propose_entries

    plans = Plans.load(Path(__file__).resolve().parents[1] / "bundles" / "hippocampus" / "configs" / "plans.json")
    rng = np.random.default_rng(2)
    volume = rng.random((6, 20, 20)).astype(np.float32)
    label = np.zeros(volume.shape, np.int64)
    label[2:4, 5:9, 5:9] = 1  # class 1 on slices 2 and 3 of axis 0
    probs = np.stack([(label == c).astype(np.float32) * 0.8 + 0.1 for c in range(3)], axis=-1)
    write_image(tmp_path / "data" / "c.nii.gz", volume, np.eye(4))
    write_image(tmp_path / "pred" / "c_prob.nii.gz", probs, np.eye(4))
    model = BoxModel()
    gens = {axis: LiteMedSamGenerator(model) for axis in plans.samdsk.axes}
    entries = [{"case_id": "c", "image": str(tmp_path / "data" / "c.nii.gz")}]
    with pytest.raises(SamdskError, match="propose --prob-dir"):
        propose_entries(entries, plans, tmp_path / "cache", gens, progress=False)
    summary = propose_entries(entries, plans, tmp_path / "cache", gens, prob_dir=tmp_path / "pred", progress=False)
    # slices within the plan's margin (2) of the predicted foreground: axis 0 -> 0..5 (6), axes 1, 2 -> 3..10 (8 each)
    assert summary[0].n_slices == 6 + 8 + 8
    assert (tmp_path / "cache" / "prompted" / "c.npz").is_file() and not (tmp_path / "cache" / "c.npz").exists()
    # one prompt box per predicted region, each answered with the filled box: 4 slices with foreground per axis
    assert summary[0].n_proposals == 2 + 4 + 4
