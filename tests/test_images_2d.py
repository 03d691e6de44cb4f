"""2D images as one-slice volumes: natural formats and 2D NIfTI / MHA read alike, labels, verify."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from samdsk_plan.io import load_dataset, read_image, verify_dataset, write_image
from samdsk_plan.io.images import label_plane
from tests.conftest import affine_for, case_arrays, nifti_twin


def _gray(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (12, 20), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_grayscale_natural_images_are_one_slice_volumes(tmp_path, suffix):
    path = tmp_path / f"a{suffix}"
    Image.fromarray(_gray()).save(path)  # 12 rows, 20 columns
    img = read_image(path)
    # [x, y] = [column, row], as ITK and MONAI index it
    assert img.array.shape == (20, 12, 1) and np.array_equal(img.array[:, :, 0], _gray().T)
    assert img.is_2d and img.spacing == (1.0, 1.0, 1.0) and np.array_equal(img.affine, np.eye(4))


def test_rgb_is_three_channels_and_alpha_is_dropped_with_a_note(tmp_path):
    rgb = np.stack([_gray(0), _gray(1), _gray(2)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = read_image(tmp_path / "rgb.png")
    assert img.array.shape == (20, 12, 1, 3) and np.array_equal(img.array[:, :, 0], rgb.swapaxes(0, 1))
    assert not img.notes
    rgba = np.concatenate([rgb, np.full((12, 20, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    img = read_image(tmp_path / "rgba.png")
    assert img.array.shape == (20, 12, 1, 3) and np.array_equal(img.array[:, :, 0], rgb.swapaxes(0, 1))
    assert img.notes == ("its alpha channel was dropped (RGBA image)",)


def test_2d_nifti_and_mha_keep_their_spacing(tmp_path):
    plane = _gray().astype(np.int16)
    affine = np.diag([0.5, 0.25, 1.0, 1.0])
    nib.save(nib.Nifti1Image(plane, affine), tmp_path / "a.nii.gz")
    nib.save(nib.Nifti1Image(plane[:, :, None], affine), tmp_path / "b.nii.gz")
    mha = sitk.GetImageFromArray(plane.T.copy())  # ITK arrays are [y, x]
    mha.SetSpacing((0.5, 0.25))
    sitk.WriteImage(mha, str(tmp_path / "c.mha"))
    for name in ("a.nii.gz", "b.nii.gz", "c.mha"):
        img = read_image(tmp_path / name)
        assert img.is_2d and img.array.shape == (12, 20, 1), name
        assert np.array_equal(img.array[:, :, 0], plane) and img.spacing[:2] == (0.5, 0.25), name
    assert not read_image(write_image(tmp_path / "v.nii.gz", np.zeros((4, 5, 6)), np.eye(4))).is_2d


def test_labels_equal_rgb_planes_are_one_plane_colour_labels_are_refused():
    plane = np.array([[0, 1], [2, 1]], np.uint8)[:, :, None]
    same = np.repeat(plane[..., None], 3, axis=-1)
    assert np.array_equal(label_plane(same), plane)
    colour = same.copy()
    colour[0, 0, 0, 2] = 255
    with pytest.raises(ValueError, match=r"colour label .* single-channel image"):
        label_plane(colour)


def test_png_labels_round_trip_and_lossy_labels_are_refused(tmp_path):
    label = np.array([[0, 1, 2], [2, 2, 0]], np.int64)[:, :, None]
    assert np.array_equal(read_image(write_image(tmp_path / "l.png", label, np.eye(4))).array, label)
    # on disk as 2 columns x 3 rows: x is the column
    assert np.array_equal(np.asarray(Image.open(tmp_path / "l.png")), label[:, :, 0].T)
    with pytest.raises(ValueError, match="lossy"):
        write_image(tmp_path / "l.jpg", label, np.eye(4))
    assert not list(tmp_path.glob(".l*"))  # no temporary file left behind


def _png_dataset(root: Path, rgb: bool = False, colour_label: bool = False) -> Path:
    """An MSD-layout 2D dataset: three 20 x 24 PNG images (slice 5 along axis 2 of the conftest cases)."""
    training = []
    for i, kind in enumerate(("full", "partial", "full")):
        image, label = case_arrays(kind)
        plane = np.clip(image[:, :, 5], 0, 255).astype(np.uint8)
        pixels = np.stack([plane, 255 - plane, plane // 2], axis=-1) if rgb else plane
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "imagesTr" / f"c_{i}.png")
        lab = label[:, :, 5].astype(np.uint8)
        if colour_label and i == 1:
            lab = np.stack([lab, lab, 255 * (lab > 0).astype(np.uint8)], axis=-1)
        Image.fromarray(lab).save(root / "labelsTr" / f"c_{i}.png")
        training.append({"image": f"./imagesTr/c_{i}.png", "label": f"./labelsTr/c_{i}.png"})
    modality = {"0": "R", "1": "G", "2": "B"} if rgb else {"0": "US"}
    meta = {
        "name": "flat",
        "modality": modality,
        "labels": {"0": "background", "1": "spheres", "2": "box", "3": "u_shape"},
        "numTraining": 3,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("rgb", [False, True])
def test_verify_accepts_a_png_dataset(tmp_path, rgb):
    report = verify_dataset(load_dataset(_png_dataset(tmp_path / "d", rgb=rgb)), progress=False)
    assert report.ok, report.format()


def test_verify_names_a_colour_label(tmp_path):
    root = _png_dataset(tmp_path / "d", colour_label=True)
    report = verify_dataset(load_dataset(root), progress=False)
    assert [str(p) for p in report.errors] == [
        f"error: {root / 'labelsTr' / 'c_1.png'}: is a colour label (its red, green and blue planes differ); store "
        "one integer value per class in a single-channel image (e.g. a grayscale or palette PNG with values 0, 1, "
        "2, ...)"
    ]


def _with_a_volume(root: Path) -> Path:
    """The 2D dataset ``root`` with a 3D NIfTI case ``v`` added."""
    image, label = case_arrays("full")
    write_image(root / "imagesTr" / "v.nii.gz", image, affine_for())
    write_image(root / "labelsTr" / "v.nii.gz", label, affine_for())
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/v.nii.gz", "label": "./labelsTr/v.nii.gz"})
    meta["numTraining"] = 4
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_verify_refuses_a_dataset_mixing_2d_and_3d(tmp_path):
    root = _with_a_volume(_png_dataset(tmp_path / "d"))
    errors = [str(p) for p in verify_dataset(load_dataset(root), progress=False).errors]
    assert errors == [
        f"error: {root / 'dataset.json'}: the dataset mixes 2D images (3, e.g. c_0) and 3D volumes "
        "(1, e.g. v); keep one kind per dataset"
    ]


def test_png_and_2d_nifti_give_the_same_fingerprint(tmp_path):
    from scipy import ndimage

    from samdsk_plan.fingerprint import compute_fingerprint

    png = _png_dataset(tmp_path / "png")
    nifti = nifti_twin(png, tmp_path / "nifti")
    fps = [compute_fingerprint(load_dataset(root), progress=False) for root in (png, nifti)]
    for fp in fps:
        fp.pop("provenance")
        fp.pop("name")
    assert fps[0] == fps[1]
    fp = fps[0]
    # 20 rows x 24 columns: [x, y] = 24 x 20
    assert fp["shape"]["median"] == [24.0, 20.0, 1.0] and fp["spacing"]["median"] == [1.0, 1.0, 1.0]
    # the image-level knowledge: the regions of each image
    label = np.asarray(Image.open(png / "labelsTr" / "c_0.png"))
    for value in (1, 3):
        count = ndimage.label(label == value, structure=np.ones((3, 3)))[1]
        assert fp["cases"]["c_0"]["classes"][str(value)]["regions"] == count


def test_fingerprint_refuses_mixed_2d_and_3d(tmp_path):
    from samdsk_plan.fingerprint import FingerprintError, compute_fingerprint

    root = _with_a_volume(_png_dataset(tmp_path / "d"))
    with pytest.raises(FingerprintError) as info:
        compute_fingerprint(load_dataset(root), progress=False)
    assert "mixes 2D images (3, e.g. c_0) and 3D volumes (1, e.g. v)" in str(info.value.problems[0])


@pytest.mark.parametrize("rgb", [False, True])
def test_a_2d_dataset_gets_a_2d_plan(tmp_path, rgb):
    from samdsk_plan.cli.main import main

    root = _png_dataset(tmp_path / "d", rgb=rgb)
    fp, plans = tmp_path / "fp.json", tmp_path / "plans.json"
    assert main(["fingerprint", str(root), "-o", str(fp), "-q"]) == 0
    assert main(["plan", str(fp), "-o", str(plans)]) == 0
    plan = json.loads(plans.read_text())
    assert list(plan["configurations"]) == ["2d"] and plan["configurations"]["2d"]["slice_axis"] == 2
    # the median (cropped) image, each side padded up to a multiple of what the poolings need
    cfg = plan["configurations"]["2d"]
    median = json.loads(fp.read_text())["shape_after_crop"]["median"][:2]
    sizes = zip(cfg["patch_size"], median, cfg["network"]["divisible_by"], strict=True)
    assert all(p == math.ceil(m / d) * d for p, m, d in sizes)
    samdsk = plan["samdsk"]
    assert samdsk["axes"] == [2] and samdsk["fusion"] == "single"
    # regions per image from the fingerprint; the U (class 3) has two in this slice of the "full" case
    counts = json.loads(fp.read_text())["classes"]
    for value, cls in samdsk["classes"].items():
        assert list(cls["regions_per_slice"]) == ["2"]
        seen = [int(k) for k in counts[value]["regions_per_image"]["histogram"]]
        assert cls["regions_per_slice"]["2"]["upper"] == max([1, *seen])
    assert samdsk["classes"]["3"]["regions_per_slice"]["2"]["upper"] == 2
    assert [n["scheme"] for n in plan["normalization"]] == (["rgb_to_0_1"] * 3 if rgb else ["zscore"])
    assert plan["dataset"]["dimensions"] == 2
