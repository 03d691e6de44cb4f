"""The fingerprint of 2D images in its own form: regions per image, region areas in pixels and mm²,
area fraction and presence, stated as ``dimensions`` 2; the same data as grayscale PNG, RGB PNG and
2D NIfTI with spacing give the same knowledge. A 3D dataset keeps its 3D form."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from samdsk_plan.cli.main import main
from samdsk_plan.fingerprint import compute_fingerprint
from samdsk_plan.io import load_dataset
from samdsk_plan.io.schemas import schema_problems, validate_fingerprint
from samdsk_plan.planning import plan_from_fingerprint
from samdsk_plan.planning.planner import is_2d, samdsk_settings

WIDTH, HEIGHT = 12, 10  # x, y: an image of 10 rows and 12 columns
GRAY = {0: 10, 1: 90, 2: 130}  # pixel value per label
NIFTI_SPACING = (0.5, 0.25)
IMAGE_KEYS = {"name", "n_cases_present", "present_fraction", "area_fraction", "regions_per_image", "region_area"}


def _labels() -> list[np.ndarray]:
    """Three label planes indexed [x, y]. Class 1: squares of 4x4 and 2x3 pixels, then one of 3x3,
    then regions of 1, 2x2 and 5x1 pixels. Class 2: two pixels touching at a corner (one region
    with full connectivity, two with face), absent, then a 3x2 rectangle."""
    planes = [np.zeros((WIDTH, HEIGHT), np.uint8) for _ in range(3)]
    planes[0][1:5, 1:5] = 1
    planes[0][7:9, 1:4] = 1
    planes[0][2, 7] = planes[0][3, 8] = 2
    planes[1][4:7, 3:6] = 1
    planes[2][0, 0] = 1
    planes[2][3:5, 0:2] = 1
    planes[2][6:11, 8] = 1
    planes[2][1:4, 5:7] = 2
    return planes


def _gray(label: np.ndarray) -> np.ndarray:
    return np.vectorize(GRAY.get)(label).astype(np.uint8)


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.stack([gray, 255 - gray, gray // 2], axis=-1)


def _dataset(root: Path, kind: str) -> Path:
    """An MSD-layout dataset of the three images (``"gray"``, ``"rgb"`` PNG or ``"nifti"``) and one
    unlabelled image."""
    suffix = ".nii.gz" if kind == "nifti" else ".png"
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True)

    def save(path: Path, plane: np.ndarray) -> None:  # plane is [x, y] (RGB [x, y, c])
        if kind == "nifti":
            nib.save(nib.Nifti1Image(plane, np.diag([*NIFTI_SPACING, 1.0, 1.0])), path)
        else:
            Image.fromarray(np.ascontiguousarray(plane.swapaxes(0, 1))).save(path)  # rows are y

    def image(label: np.ndarray) -> np.ndarray:
        return _rgb(_gray(label)) if kind == "rgb" else _gray(label)

    training = []
    for i, label in enumerate(_labels()):
        save(root / "imagesTr" / f"c_{i}{suffix}", image(label))
        save(root / "labelsTr" / f"c_{i}{suffix}", label)
        training.append({"image": f"./imagesTr/c_{i}{suffix}", "label": f"./labelsTr/c_{i}{suffix}"})
    save(root / "imagesTs" / f"u_0{suffix}", image(_labels()[1]))
    meta = {
        "name": "flat",
        "modality": {"0": "R", "1": "G", "2": "B"} if kind == "rgb" else {"0": "US"},
        "labels": {"0": "background", "1": "blobs", "2": "pair"},
        "numTraining": 3,
        "numTest": 1,
        "training": training,
        "test": [f"./imagesTs/u_0{suffix}"],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def fingerprints(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("flat")
    return {
        kind: compute_fingerprint(load_dataset(_dataset(root / kind, kind)), progress=False)
        for kind in ("gray", "rgb", "nifti")
    }


def test_a_2d_dataset_states_its_dimensions_and_conventions(fingerprints):
    for kind, fp in fingerprints.items():
        assert validate_fingerprint(fp, kind) is fp
        assert fp["dimensions"] == 2, kind
        conventions = fp["conventions"]
        assert conventions["images"].startswith("2D images")
        assert conventions["connectivity"] == {"name": "full", "neighbours_2d": 8}
        assert "1 px, its size in mm unknown" in conventions["spacing_unit"]
        assert fp["n_cases"] == {"labelled": 3, "unlabelled": 1}
        assert fp["shape"]["median"] == [WIDTH, HEIGHT, 1]
    assert fingerprints["gray"]["spacing"]["median"] == [1.0, 1.0, 1.0]
    assert fingerprints["nifti"]["spacing"]["median"][:2] == list(NIFTI_SPACING)
    # in-plane only: the one slice's spacing says nothing of a 2D image
    assert fingerprints["gray"]["anisotropy"] == {"ratio": 1.0, "coarsest_axis": 0, "finest_axis": 0}
    assert fingerprints["nifti"]["anisotropy"] == {"ratio": 2.0, "coarsest_axis": 0, "finest_axis": 1}


def test_regions_per_image_and_areas_are_known(fingerprints):
    for kind, fp in fingerprints.items():
        blobs, pair = fp["classes"]["1"], fp["classes"]["2"]
        assert set(blobs) == set(pair) == IMAGE_KEYS, kind
        assert (blobs["n_cases_present"], blobs["present_fraction"]) == (3, 1.0)
        assert (pair["n_cases_present"], pair["present_fraction"]) == (2, pytest.approx(2 / 3))
        # 2, 1 and 3 regions of class 1; the corner-touching pair is one region (8-neighbours)
        assert blobs["regions_per_image"] == {
            "n": 3,
            "histogram": {"1": 1, "2": 1, "3": 1},
            "min": 1,
            "max": 3,
            "mode": 1,
            "p95": 3,
            "mean": 2.0,
        }
        assert pair["regions_per_image"]["histogram"] == {"1": 2}
        areas = blobs["region_area"]["pixels"]
        assert (areas["n"], areas["min"], areas["max"]) == (6, 1.0, 16.0)
        assert areas["median"] == np.median([16, 6, 9, 1, 4, 5]) and areas["mean"] == pytest.approx(41 / 6)
        assert pair["region_area"]["pixels"]["median"] == 4.0  # areas 2 and 6
        fractions = np.array([16 + 6, 9, 1 + 4 + 5]) / (WIDTH * HEIGHT)
        assert blobs["area_fraction"]["min"] == pytest.approx(fractions.min())
        assert blobs["area_fraction"]["mean"] == pytest.approx(fractions.mean())
        assert pair["area_fraction"]["min"] == 0.0  # absent from the second image
        assert fp["cases"]["c_0"]["classes"] == {"1": {"pixels": 22, "regions": 2}, "2": {"pixels": 2, "regions": 1}}
        assert set(fp["cases"]["c_1"]["classes"]) == {"1"}


def test_mm2_is_pixels_times_the_in_plane_spacing(fingerprints):
    pixel_mm2 = {"gray": 1.0, "rgb": 1.0, "nifti": NIFTI_SPACING[0] * NIFTI_SPACING[1]}
    assert pixel_mm2["nifti"] == 0.125
    for kind, fp in fingerprints.items():
        for cls in fp["classes"].values():
            pixels, mm2 = cls["region_area"]["pixels"], cls["region_area"]["mm2"]
            assert mm2 == {k: v if k == "n" else pytest.approx(v * pixel_mm2[kind]) for k, v in pixels.items()}


def test_grayscale_rgb_and_nifti_give_the_same_knowledge(fingerprints):
    gray, rgb, nifti = (fingerprints[k] for k in ("gray", "rgb", "nifti"))
    for fp in (rgb, nifti):
        for cls, other in zip(fp["classes"].values(), gray["classes"].values(), strict=True):
            assert {k: v for k, v in cls.items() if k != "region_area"} == {
                k: v for k, v in other.items() if k != "region_area"
            }
            assert cls["region_area"]["pixels"] == other["region_area"]["pixels"]
        assert fp["cases"]["c_2"]["classes"] == gray["cases"]["c_2"]["classes"]
    assert nifti["foreground_intensity_properties_per_channel"] == gray["foreground_intensity_properties_per_channel"]


def test_per_channel_intensity_of_the_rgb_images(fingerprints):
    counts = {1: 16 + 6 + 9 + 1 + 4 + 5, 2: 2 + 6}  # foreground pixels of labelled images per class
    foreground = np.repeat([GRAY[1], GRAY[2]], [counts[1], counts[2]])
    channels = _rgb(foreground.astype(np.uint8)).T.astype(float)
    stats = fingerprints["rgb"]["foreground_intensity_properties_per_channel"]
    assert list(stats) == ["0", "1", "2"]
    for c, values in enumerate(channels):
        got = stats[str(c)]
        assert got["n_voxels"] == values.size == 49
        assert got["mean"] == pytest.approx(values.mean()) and got["std"] == pytest.approx(values.std())
        assert (got["min"], got["max"]) == (values.min(), values.max())
    assert (stats["1"]["min"], stats["1"]["max"]) == (255 - GRAY[2], 255 - GRAY[1])


def test_face_connectivity_splits_the_corner_pair(tmp_path):
    fp = compute_fingerprint(load_dataset(_dataset(tmp_path / "d", "gray")), connectivity="face", progress=False)
    assert fp["conventions"]["connectivity"] == {"name": "face", "neighbours_2d": 4}
    pair = fp["classes"]["2"]
    assert pair["regions_per_image"]["histogram"] == {"1": 1, "2": 1}
    assert pair["region_area"]["pixels"]["n"] == 3 and pair["region_area"]["pixels"]["min"] == 1.0
    assert fp["cases"]["c_0"]["classes"]["2"] == {"pixels": 2, "regions": 2}


def test_a_3d_dataset_keeps_its_3d_form(msd_dataset):
    fp = compute_fingerprint(load_dataset(msd_dataset), progress=False)
    assert fp["dimensions"] == 3
    assert set(fp["classes"]["1"]) == {
        "name",
        "n_cases_present",
        "present_fraction",
        "volume_fraction",
        "components_3d",
        "regions_per_slice",
        "component_size",
        "region_area",
    }
    assert set(fp["classes"]["1"]["region_area"]) == set(fp["classes"]["1"]["regions_per_slice"]) == {"0", "1", "2"}
    assert set(fp["cases"]["c_001"]["classes"]["1"]) == {"voxels", "components_3d", "max_regions_per_slice"}
    # fingerprints written before dimensions was stated are 3D
    del fp["dimensions"]
    assert schema_problems(fp, "fingerprint") == []


def test_the_schema_holds_each_form_to_its_own_keys(fingerprints, msd_dataset):
    flat = json.loads(json.dumps(fingerprints["gray"]))
    flat["classes"]["1"]["components_3d"] = flat["classes"]["1"]["regions_per_image"]
    assert [str(p) for p in schema_problems(flat, "fingerprint")] == [
        "classes.1: Additional properties are not allowed ('components_3d' was unexpected)"
    ]
    volume = compute_fingerprint(load_dataset(msd_dataset), progress=False)
    volume["dimensions"] = 2
    assert any(
        str(p).startswith("classes.1: 'area_fraction' is a required property")
        for p in schema_problems(volume, "fingerprint")
    )
    volume["dimensions"] = 1
    assert "dimensions: 1 is not one of [2, 3]" in [str(p) for p in schema_problems(volume, "fingerprint")]


def test_the_planner_reads_the_per_image_form(fingerprints):
    fp = fingerprints["gray"]
    assert is_2d(fp) and not is_2d({**fp, "dimensions": 3})
    classes = plan_from_fingerprint(fp)["samdsk"]["classes"]
    # at most 3 regions of class 1 per image (the count covering 99% of images); 1 of class 2
    assert {v: (c["regions_per_slice"], c["max_components_3d"]) for v, c in classes.items()} == {
        "1": ({"2": {"lower": 1, "upper": 3}}, 3),
        "2": ({"2": {"lower": 1, "upper": 1}}, 1),
    }
    assert classes["1"]["region_area_px"] == {"2": fp["classes"]["1"]["region_area"]["pixels"]}


def test_regions_kept_count_the_images_without_the_class():
    """As components_3d did: a class with 2 regions in 1 of 100 labelled images keeps 1 region (the
    count covering 99% of the images, 0 in 99 of them), though an image may hold 2."""
    per_image = {"n": 1, "histogram": {"2": 1}, "min": 2, "max": 2, "mode": 2, "p95": 2, "mean": 2.0}
    stats = {"name": "c", "n_cases_present": 1, "regions_per_image": per_image, "region_area": {"pixels": {"n": 0}}}
    fp = {"dimensions": 2, "n_cases": {"labelled": 100}, "classes": {"1": stats}}
    cls = samdsk_settings(fp, [1.0, 1.0, 1.0])["classes"]["1"]
    assert cls["regions_per_slice"] == {"2": {"lower": 1, "upper": 2}} and cls["max_components_3d"] == 1


def test_the_cli_says_it_is_a_2d_dataset(tmp_path, capsys):
    out = tmp_path / "fp.json"
    assert main(["fingerprint", str(_dataset(tmp_path / "d", "rgb")), "-o", str(out), "-q"]) == 0
    assert "3 labelled + 1 unlabelled 2D images, 2 classes" in capsys.readouterr().out
