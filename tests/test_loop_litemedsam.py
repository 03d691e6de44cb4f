"""One SamDSK round with LiteMedSAM prompted by the model, on a small synthetic dataset (four
slices per case, so the encoder's seconds per slice stay affordable), from fingerprint to loop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.io import write_image
from samdsk_plan.proposals.cache import ProposalCache
from samdsk_plan.proposals.embeddings import CACHE_ENV
from tests.test_bundle_run_2d import ONE_BOX

pytestmark = pytest.mark.slow  # bundle runs and the real LiteMedSAM

SHAPE = (4, 48, 48)  # slices along axis 0, 4 mm apart: the plan matches along axis 0 only
AFFINE = np.diag([4.0, 1.0, 1.0, 1.0])
TINY = [
    "--epochs",
    "2",
    "--iterations-per-epoch",
    "4",
    "--batch-size",
    "2",
    "--val-interval",
    "1",
    "--threshold",
    "0",
    "--max-accepted",
    "1",
    "--set",
    "num_workers=0",
    "--threads",
    "1",
    "-q",
]


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc of radius 9 px on every slice of a noisy volume, its centre moving by case."""
    rng = np.random.default_rng(seed)
    cy, cx = 18 + seed % 12, 20 + (3 * seed) % 10
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 81
    label = np.repeat(disc[None], SHAPE[0], axis=0).astype(np.uint8)
    image = 100 + 20 * rng.standard_normal(SHAPE) + 200 * label
    return image.astype(np.float32), label


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("discs") / "discs"
    training = []
    for i in range(8):
        image, label = _case(i)
        write_image(root / "imagesTr" / f"disc_{i:03d}.nii.gz", image, AFFINE)
        write_image(root / "labelsTr" / f"disc_{i:03d}.nii.gz", label, AFFINE)
        training.append({"image": f"./imagesTr/disc_{i:03d}.nii.gz", "label": f"./labelsTr/disc_{i:03d}.nii.gz"})
    meta = {
        "name": "discs",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "disc"},
        "numTraining": 8,
        "numTest": 0,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_one_round_with_litemedsam_prompted(dataset, tmp_path):
    work = tmp_path / "work"
    fp, plans, bundle, split, run = (work / n for n in ("fp.json", "plans.json", "bundle", "split.json", "run"))
    assert main(["fingerprint", str(dataset), "-o", str(fp), "-q"]) == 0
    assert main(["plan", str(fp), "-o", str(plans), *ONE_BOX]) == 0
    assert json.loads(plans.read_text())["samdsk"]["axes"] == [0]
    assert main(["emit", str(plans), "-o", str(bundle)]) == 0
    assert main(["split", str(dataset), "--labelled-fraction", "0.5", "--test-fraction", "0.25", "-o", str(split)]) == 0
    pool = [e["case_id"] for e in json.loads(split.read_text())["unlabelled"]]
    assert len(pool) == 2
    cache = Path(os.environ[CACHE_ENV])
    before = set(cache.rglob("*.npy"))
    assert (
        main(
            [
                "loop",
                str(bundle),
                "--data",
                str(dataset),
                "--datalist",
                str(split),
                "-o",
                str(run),
                "--rounds",
                "1",
                "--generator",
                "litemedsam",
                *TINY,
            ]
        )
        == 0
    )

    state = json.loads((run / "state.json").read_text())
    assert state["done"][-2:] == ["1/train", "1/evaluate"] and len(state["rounds"]["1"]["accepted"]) == 1
    # the prompted proposals of round 1 live in the round's folder, with the class and region that prompted each
    for case in pool:
        record = json.loads((run / "round_1" / "matches" / "pool" / f"{case}.json").read_text())
        assert record["generator"] == "litemedsam"
        stored = ProposalCache(run / "round_1" / "proposals").path(case)
        assert stored.is_file()
        with np.load(stored) as data:
            origins = [data[k] for k in data.files if k.startswith("o_")]
        assert origins and all(o.shape[1] == 2 and set(o[:, 0]) <= {1} for o in origins if len(o))
    assert not (run / "proposals").exists() or not any((run / "proposals").iterdir())  # nothing image-only
    # every slice proposed on was encoded once and its embedding kept for later rounds and runs
    assert len(set(cache.rglob("*.npy")) - before) >= 1
    final = json.loads((run / "round_1" / "datalist.json").read_text())
    machine = [e for e in final["training"] if "samdsk" in e]
    assert len(machine) == 1 and machine[0]["samdsk"]["generator"] == "litemedsam"
