"""SAM loading and the SAM proposal generator, with a tiny randomly initialised SAM.

The tiny model's predicted IoUs are about 0.2-0.25, so the paper's thresholds (0.5) keep nothing:
the end-to-end tests switch the IoU and stability filters off (0) and raise the box-NMS
threshold so that several proposals survive.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from samdsk_plan.errors import SamdskError
from samdsk_plan.io import read_image
from samdsk_plan.proposals import Proposals
from samdsk_plan.proposals.prompts import PromptRecipe
from samdsk_plan.proposals.sam import SamGenerator
from samdsk_plan.proposals.sam_checkpoint import (
    CHECKPOINT_ENV,
    build_sam,
    checkpoint_digest,
    load_sam,
    model_type_of,
    resolve_checkpoint,
)
from tests.conftest import HIPPOCAMPUS

TINY = {
    "model_type": "tiny",
    "img_size": 128,
    "patch_size": 16,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": [1],
    "window_size": 4,
    "prompt_embed_dim": 32,
    "mask_in_chans": 8,
    "decoder_depth": 2,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}
OPEN = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}  # filters off


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model is far faster on one thread than on cores shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_sam(TINY).state_dict()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_state) -> Path:
    path = tmp_path_factory.mktemp("sam") / "tiny.pt"
    torch.save({"architecture": TINY, "model": tiny_state}, path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    return load_sam(tiny_checkpoint, "auto")


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """hippocampus_001 windowed to [0, 1] by its 0.5 / 99.5 percentiles, ``(35, 51, 35)``."""
    array = read_image(HIPPOCAMPUS / "imagesTr" / "hippocampus_001.nii.gz").array.astype(np.float32)
    lo, hi = np.percentile(array, [0.5, 99.5])
    return np.clip((array - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def assert_same(a: Proposals, b: Proposals) -> None:
    assert np.array_equal(a.masks, b.masks)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)


def test_architecture_checkpoint_round_trip(tiny_checkpoint, tiny_state, tiny_model):
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(tensor, tiny_state[name]), name
    assert tiny_model.image_encoder.img_size == 128
    assert model_type_of(tiny_model) == "custom(embed_dim=32, depth=2, img_size=128)"
    load_sam(tiny_checkpoint, "tiny")  # the stored model type is accepted too
    with pytest.raises(SamdskError, match="carries its own architecture") as err:
        load_sam(tiny_checkpoint, "vit_b")
    assert str(tiny_checkpoint) in str(err.value)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: {"architecture": TINY, "model": {f"module.{k}": v for k, v in s.items()}},
        lambda s: {"architecture": TINY, "model": {"state_dict": s}},
        lambda s: {"architecture": TINY, "state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},
    ],
    ids=["module-prefix", "nested-model-state_dict", "lightning-style"],
)
def test_wrapped_state_dicts_load(tmp_path, tiny_state, wrap):
    path = tmp_path / "wrapped.pt"
    torch.save(wrap(tiny_state), path)
    loaded = load_sam(path, "auto").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_state.items())


def test_generator_end_to_end(tiny_model, tiny_checkpoint, volume):
    image = volume[17]
    gen = SamGenerator(tiny_model, box_nms_thresh=0.9, checkpoint_id=checkpoint_digest(tiny_checkpoint), **OPEN)
    proposals = gen(image)
    assert isinstance(proposals, Proposals)
    assert proposals.masks.dtype == bool and proposals.masks.shape[1:] == image.shape
    # the network sees the 51 x 35 slice transposed; the masks come back on the slice's grid
    assert len(proposals) >= 1 and proposals.masks.any(axis=(1, 2)).all()
    assert proposals.scores.dtype == np.float32
    assert ((proposals.scores >= 0) & (proposals.scores <= 1)).all()
    assert (np.diff(proposals.scores) <= 0).all()
    assert_same(gen(image), proposals)  # deterministic

    settings = gen.settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["checkpoint"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert settings["model_type"].startswith("custom(")
    assert settings["points_per_side"] == 4 and settings["box_nms_thresh"] == 0.9
    assert (
        SamGenerator(tiny_model, **OPEN).settings()
        != SamGenerator(tiny_model, **{**OPEN, "pred_iou_thresh": 0.1}).settings()
    )
    assert gen.name == "sam"


def test_paper_thresholds_reject_random_weights(tiny_model, volume):
    proposals = SamGenerator(tiny_model, points_per_side=4)(volume[17])
    assert len(proposals) == 0 and proposals.masks.shape == (0, *volume[17].shape)


def test_generate_batch_matches_slice_by_slice(tiny_model, volume):
    # Two slice shapes, batches of 2 then 1; NMS off so every grid point's masks are compared.
    images = [volume[17], volume[:, :, 17], volume[10]]
    gen = SamGenerator(tiny_model, box_nms_thresh=1.0, **OPEN)
    batched = gen.generate_batch(images, batch_size=2)
    assert len(batched) == len(images)
    for image, proposals in zip(images, batched, strict=True):
        assert len(proposals) == 3 * 4 * 4  # three masks per point
        assert_same(proposals, gen(image))


def test_generate_batch_with_crop_layers(tiny_model, volume):
    gen = SamGenerator(tiny_model, crop_n_layers=1, box_nms_thresh=0.9, **OPEN)
    [batched] = gen.generate_batch([volume[17]])
    assert_same(batched, gen(volume[17]))


def test_missing_checkpoint(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(SamdskError, match="does not exist") as err:
        load_sam(path)
    assert str(path) in str(err.value)
    with pytest.raises(SamdskError, match="is not a file"):
        load_sam(tmp_path)


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SamdskError, match="cannot be read as a PyTorch checkpoint") as err:
        load_sam(path)
    assert str(path) in str(err.value)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(SamdskError, match="holds no state dict") as err:
        load_sam(path)
    assert str(path) in str(err.value)


def test_wrong_model_type(tmp_path, tiny_state):
    path = tmp_path / "flat_tiny.pth"
    torch.save(tiny_state, path)
    with pytest.raises(SamdskError, match="does not match the requested model type 'vit_b'") as err:
        load_sam(path, "vit_b")
    assert str(path) in str(err.value) and "width 32 matches no standard SAM type" in str(err.value)
    with pytest.raises(SamdskError, match="cannot infer the model type"):
        load_sam(path, "auto")
    with pytest.raises(SamdskError, match="unknown SAM model type 'vit_x'") as err:
        load_sam(path, "vit_x")
    assert str(path) in str(err.value)


def test_wrong_model_type_names_the_likely_type(tmp_path):
    # Only the patch embedding of a vit_l: enough for the check, which runs before any model is built.
    path = tmp_path / "vit_l_like.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 1, 1)}, path)
    with pytest.raises(SamdskError, match="looks like a vit_l checkpoint") as err:
        load_sam(path, "vit_b")
    assert str(path) in str(err.value)


def test_invalid_architecture(tmp_path, tiny_state):
    path = tmp_path / "bad_arch.pt"
    torch.save({"architecture": {k: v for k, v in TINY.items() if k != "depth"}, "model": tiny_state}, path)
    with pytest.raises(SamdskError, match="invalid architecture") as err:
        load_sam(path, "auto")
    assert str(path) in str(err.value) and "depth" in str(err.value)


def test_weights_that_do_not_fit_the_stored_architecture(tmp_path, tiny_state):
    path = tmp_path / "mismatch.pt"
    torch.save({"architecture": {**TINY, "depth": 3}, "model": tiny_state}, path)
    with pytest.raises(SamdskError, match="does not match the architecture stored in it") as err:
        load_sam(path, "auto")
    assert str(path) in str(err.value) and "missing" in str(err.value)


def test_resolve_checkpoint(monkeypatch, tmp_path, tiny_checkpoint):
    monkeypatch.delenv(CHECKPOINT_ENV, raising=False)
    with pytest.raises(SamdskError, match=CHECKPOINT_ENV):
        resolve_checkpoint(None)
    monkeypatch.setenv(CHECKPOINT_ENV, str(tiny_checkpoint))
    assert resolve_checkpoint(None) == tiny_checkpoint
    assert resolve_checkpoint(tmp_path / "given.pth") == tmp_path / "given.pth"  # the argument wins
    gen = SamGenerator.from_checkpoint(None, "auto", **OPEN)
    assert gen.settings()["checkpoint"] == checkpoint_digest(tiny_checkpoint)


def _two_regions(shape: tuple[int, int]) -> np.ndarray:
    """Probabilities predicting class 1 in two squares and class 2 nowhere."""
    label = np.zeros(shape, np.int64)
    label[4:12, 4:12] = 1
    label[20:28, 30:40] = 1
    probs = np.full((3, *shape), 0.05, np.float32)
    for c in range(3):
        probs[c][label == c] = 0.9
    return probs


@pytest.mark.parametrize(("point", "multimask", "per_prompt"), [(True, True, 3), (False, True, 3), (True, False, 1)])
def test_prompted_sam_answers_each_box_prompt(tiny_model, point, multimask, per_prompt):
    from samdsk_plan.proposals.sam import SamPromptedGenerator

    gen = SamPromptedGenerator(tiny_model, "digest", PromptRecipe((1.0, 1.25)), point=point, multimask=multimask)
    image = np.random.default_rng(3).random((32, 48), dtype=np.float32)
    found = gen(image, _two_regions(image.shape))
    assert found.masks.shape[1:] == image.shape and found.origins.shape == (len(found), 2)
    # 2 regions x 2 box scales x SAM's masks per prompt, less any empty mask; all from class 1
    assert 0 < len(found) <= 2 * 2 * per_prompt and set(found.origins[:, 0]) == {1}
    assert set(found.origins[:, 1]) <= {0, 1} and np.all((found.scores >= 0) & (found.scores <= 1))
    assert gen.settings()["point"] is point and gen.prompted
    swapped = gen(image, _two_regions(image.shape)[[0, 2, 1]])  # the two squares now predicted class 2
    assert set(swapped.origins[:, 0]) == {2}
