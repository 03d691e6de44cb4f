"""Synthetic datasets with known answers, written in each supported layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from samdsk_plan.io import write_image

# One OpenMP / torch thread per process, in the tests and in every child they start (bundle runs,
# the loop's workers; set before any test module imports torch): `make test` runs one pytest-xdist
# worker per core, and a second thread per process would only fight the other worker for its core.
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
SHAPE = (20, 24, 28)
SPACING = (1.0, 1.5, 2.0)
LABELS = {0: "background", 1: "spheres", 2: "box", 3: "u_shape"}
# Lattice points with x^2 + y^2 + z^2 <= 9: a radius-3 voxel ball.
BALL_VOXELS = 123
# Its slices at offsets -3..3 are discs with these pixel counts.
BALL_SLICE_AREAS = [1, 21, 25, 29, 25, 21, 1]
BOX_VOXELS = 4 * 6 * 6
U_VOXELS = 120
INTENSITY = {0: 5.0, 1: 110.0, 2: 120.0, 3: 130.0}  # inside the non-zero box, per label


def affine_for(spacing=SPACING, origin=(-10.0, 20.0, 5.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def ball(center, radius=3, shape=SHAPE) -> np.ndarray:
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, center, strict=True)) <= radius**2


def case_arrays(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``"full"``: two balls (class 1), one box (class 2), a U (class 3, one region in 3D but two
    per slice along axis 2 where its arms are apart). ``"partial"``: one ball, no box, the U."""
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[ball((5, 6, 6))] = 1
    if kind == "full":
        label[ball((14, 6, 6))] = 1
        label[10:14, 14:20, 14:20] = 2
    label[2:5, 14:16, 2:10] = 3  # arm
    label[2:5, 20:22, 2:10] = 3  # arm
    label[2:5, 14:22, 2:4] = 3  # bottom joining the arms
    image = np.zeros(SHAPE, dtype=np.float32)
    image[1:19, 2:22, :] = INTENSITY[0]  # zero outside: crop to [18, 20, 28]
    for value in (1, 2, 3):
        image[label == value] = INTENSITY[value]
    return image, label


CASES = {"c_001": "full", "c_002": "partial"}
UNLABELLED = {"c_100": "full"}


def write_msd(root: Path, suffix: str = ".nii.gz") -> Path:
    """An MSD dataset: two labelled cases, one unlabelled."""
    training, test = [], []
    for case_id, kind in CASES.items():
        image, label = case_arrays(kind)
        write_image(root / "imagesTr" / f"{case_id}{suffix}", image, affine_for())
        write_image(root / "labelsTr" / f"{case_id}{suffix}", label, affine_for())
        training.append({"image": f"./imagesTr/{case_id}{suffix}", "label": f"./labelsTr/{case_id}{suffix}"})
    for case_id, kind in UNLABELLED.items():
        write_image(root / "imagesTs" / f"{case_id}{suffix}", case_arrays(kind)[0], affine_for())
        test.append(f"./imagesTs/{case_id}{suffix}")
    meta = {
        "name": "synth",
        "modality": {"0": "MRI"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def write_nnunet(root: Path, file_ending: str = ".nii.gz") -> Path:
    """The same cases in nnU-Net v2 raw layout."""
    for case_id, kind in CASES.items():
        image, label = case_arrays(kind)
        write_image(root / "imagesTr" / f"{case_id}_0000{file_ending}", image, affine_for())
        write_image(root / "labelsTr" / f"{case_id}{file_ending}", label, affine_for())
    for case_id, kind in UNLABELLED.items():
        write_image(root / "imagesTs" / f"{case_id}_0000{file_ending}", case_arrays(kind)[0], affine_for())
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {v: k for k, v in LABELS.items()},
        "numTraining": len(CASES),
        "file_ending": file_ending,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def write_datalist(root: Path) -> Path:
    """The same cases as a MONAI datalist in ``root/lists/datalist.json`` with images in
    ``root/data`` (so relative paths need the base dir)."""
    data = root / "data"
    training, testing = [], []
    for case_id, kind in CASES.items():
        image, label = case_arrays(kind)
        write_image(data / f"{case_id}.nii.gz", image, affine_for())
        write_image(data / f"{case_id}_seg.nii.gz", label, affine_for())
        training.append({"image": f"{case_id}.nii.gz", "label": f"{case_id}_seg.nii.gz", "fold": 0})
    for case_id, kind in UNLABELLED.items():
        write_image(data / f"{case_id}.nii.gz", case_arrays(kind)[0], affine_for())
        testing.append({"image": f"{case_id}.nii.gz"})
    meta = {
        "modality": {"0": "MRI"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "training": training,
        "testing": testing,
    }
    (root / "lists").mkdir(parents=True)
    path = root / "lists" / "datalist.json"
    path.write_text(json.dumps(meta, indent=1))
    return path


@pytest.fixture
def msd_dataset(tmp_path: Path) -> Path:
    return write_msd(tmp_path / "synth")


@pytest.fixture
def nnunet_dataset(tmp_path: Path) -> Path:
    return write_nnunet(tmp_path / "nnunet" / "synth")


HIPPOCAMPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hippocampus"


@pytest.fixture(scope="session")
def hippocampus() -> Path:
    assert (HIPPOCAMPUS / "dataset.json").is_file(), (
        f"the hippocampus dataset is expected at {HIPPOCAMPUS} (the shared/ folder beside the repository)"
    )
    return HIPPOCAMPUS


PSFHS = HIPPOCAMPUS.parent / "psfhs"


@pytest.fixture(scope="session")
def psfhs() -> Path:
    assert (PSFHS / "dataset.json").is_file(), f"the PSFHS data are expected at {PSFHS} (read-only)"
    return PSFHS


@pytest.fixture(autouse=True, scope="session")
def _embedding_cache(tmp_path_factory) -> None:
    """LiteMedSAM's embedding cache of the whole session in a temporary folder (not ~/.cache);
    bundle runs inherit it through the environment."""
    from samdsk_plan.proposals.embeddings import CACHE_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("embeddings"))


# 2D scenes: H x W pixels (non-square, so a transposed axis shows), a disc (class 1) and a bar (class 2)
SCENE_HW = (40, 56)
SCENE_LABELS = {0: "background", 1: "disc", 2: "bar"}


def scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grayscale ``H x W`` uint8 image (rows, columns as on screen) and its label: a disc
    of radius 6 (class 1) and a 5 x 16 bar (class 2), placed by ``seed``, never touching."""
    rng = np.random.default_rng(seed)
    h, w = SCENE_HW
    label = np.zeros((h, w), np.uint8)
    cy, cx = rng.integers(8, h - 8), rng.integers(8, 20)
    rows, cols = np.indices((h, w))
    label[(rows - cy) ** 2 + (cols - cx) ** 2 <= 36] = 1
    top, left = rng.integers(4, h - 9), rng.integers(30, w - 20)
    label[top : top + 5, left : left + 16] = 2
    image = np.where(label == 1, 200, np.where(label == 2, 120, 40)) + rng.normal(0, 8, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_scenes(root: Path, n: int, n_unlabelled: int = 0, rgb: bool = False, first_seed: int = 0) -> Path:
    """An MSD-layout 2D PNG dataset of ``n`` labelled scenes (``s_000`` ...) and ``n_unlabelled``
    more in imagesTs; RGB stores (v, 255 - v, v // 2) with modality R, G, B."""
    from PIL import Image

    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    training, test = [], []
    for i in range(n + n_unlabelled):
        image, label = scene(first_seed + i)
        pixels = np.stack([image, 255 - image, image // 2], axis=-1) if rgb else image
        name = f"s_{i:03d}.png"
        if i < n:
            Image.fromarray(pixels).save(root / "imagesTr" / name)
            Image.fromarray(label).save(root / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            Image.fromarray(pixels).save(root / "imagesTs" / name)
            test.append(f"./imagesTs/{name}")
    meta = {
        "name": "scenes",
        "modality": {"0": "R", "1": "G", "2": "B"} if rgb else {"0": "US"},
        "labels": {str(k): v for k, v in SCENE_LABELS.items()},
        "numTraining": n,
        "numTest": n_unlabelled,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def nifti_twin(png_root: Path, root: Path, spacing: tuple[float, float] = (1.0, 1.0)) -> Path:
    """The labelled part of an MSD-layout PNG dataset with every PNG stored as a 2D NIfTI
    ``X x Y`` of ``spacing`` mm (identity affine otherwise); no unlabelled images."""
    import nibabel as nib
    from PIL import Image

    meta = json.loads((png_root / "dataset.json").read_text())
    for entry in meta["training"]:
        for key in ("image", "label"):
            plane = np.asarray(Image.open(png_root / entry[key])).T  # [row, column] -> [x, y]
            entry[key] = entry[key].replace(".png", ".nii.gz")
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(plane, np.diag([*spacing, 1.0, 1.0])), root / entry[key])
    meta["test"], meta["numTest"] = [], 0
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
