"""The committed hippocampus bundle trains, infers and evaluates through ``monai.bundle run`` on
the CPU, on a few real cases."""

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from samdsk_plan.loop.bundle_runner import bundle_command
from samdsk_plan.loop.warm_start import WarmStarter

pytestmark = pytest.mark.slow  # real data or bundle runs: left out of `make test-fast`

REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "benchmarks" / "splits" / "hippocampus.json"
SMALL_NET = ["--network_def#filters", "[8,16,32,64]"]


@cache
def _warm_starter() -> WarmStarter:
    """This pytest worker's warm-start server (the loop's way of starting bundle runs on the CPU)."""
    warm = WarmStarter(os.environ, "tests-run-bundle")
    atexit.register(warm.close)
    return warm


def run_bundle(bundle: Path, configs: list[str], *args: str, overrides: dict | None = None, fresh: bool = False) -> str:
    """``python -m monai.bundle run`` of ``configs`` in ``bundle`` on the CPU with ``overrides``
    (``--KEY VALUE`` each) and ``args``; asserts it succeeds and returns its output (stdout and
    stderr). ``fresh``: in a new interpreter, the README's command as typed; else forked from this
    worker's warm-start server, which spares the 8-12 s import of MONAI per run and gives the same
    result (test_bundle_run_2d checks the weights)."""
    cmd = bundle_command(configs, {"device": "cpu", "num_workers": 0, **(overrides or {})}) + list(args)
    if fresh:
        done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        return done.stdout + done.stderr
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "run.log"
        returncode = _warm_starter().run(cmd[3:], bundle, log, os.environ)
        output = log.read_text(errors="replace")
    assert returncode == 0, output[-8000:]
    return output


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("bundle") / "hippocampus"
    shutil.copytree(REPO / "bundles" / "hippocampus", dst)
    return dst


def datalist(path: Path, n_train: int, n_test: int, n_unlabelled: int) -> Path:
    """A datalist from the committed split: training cases from the labelled part and, when more
    are asked for, from the hidden-label pool; test and unlabelled cases from their parts."""
    split = json.loads(SPLIT.read_text())
    labelled = split["training"] + [
        {"image": e["image"], "label": e["hidden_label"]} for e in split["unlabelled"][:182]
    ]
    path.write_text(
        json.dumps(
            {
                "training": labelled[:n_train],
                "testing": split["testing"][:n_test],
                "unlabelled": [{"image": e["image"]} for e in split["unlabelled"][:n_unlabelled]],
            }
        )
    )
    return path


def hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    """Symmetric 95th-percentile surface distance (mm), computed directly with scipy."""
    edge_a = a & ~ndimage.binary_erosion(a)
    edge_b = b & ~ndimage.binary_erosion(b)
    to_b = ndimage.distance_transform_edt(~edge_b, sampling=spacing)[edge_a]
    to_a = ndimage.distance_transform_edt(~edge_a, sampling=spacing)[edge_b]
    return max(np.percentile(to_b, 95), np.percentile(to_a, 95))


def test_short_training_learns_then_infers_and_evaluates(bundle, hippocampus, tmp_path):
    """20 cases, 200 iterations of batch 2 with a slim network (8..64 filters, ~70 s on 2 CPU
    cores): inference writes segmentations and probabilities in the images' geometry, and the
    evaluation's per-case Dice and HD95 are those computed here from its predictions; the held-out
    mean Dice must exceed 0.5. An untrained network scores about 0.05 (predicting every class
    everywhere); measured runs of this setting reached 0.6-0.7."""
    data = datalist(tmp_path / "learn.json", n_train=20, n_test=6, n_unlabelled=2)
    common = ["--dataset_dir", str(hippocampus), "--datalist", str(data), "--ckpt_dir", str(tmp_path / "models")]
    common += SMALL_NET
    train = ["--epochs", "8", "--iterations_per_epoch", "25", "--batch_size", "2", "--val_interval", "8"]
    log = run_bundle(bundle, ["train.json"], *common, *train)
    assert "Epoch[8] Complete" in log and "val_mean_dice" in log
    assert (tmp_path / "models" / "model.pt").is_file()

    run_bundle(
        bundle, ["inference.json"], *common, "--output_dir", str(tmp_path / "pred"), "--save_probabilities", "True"
    )
    unlabelled = json.loads(data.read_text())["unlabelled"]
    for entry in unlabelled:
        image = nib.load(hippocampus / entry["image"])
        stem = Path(entry["image"]).name.removesuffix(".nii.gz")
        seg = nib.load(tmp_path / "pred" / f"{stem}_seg.nii.gz")
        prob = nib.load(tmp_path / "pred" / f"{stem}_prob.nii.gz")
        assert seg.shape == image.shape and prob.shape == (*image.shape, 3)
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
        p = prob.get_fdata()
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(seg.dataobj), p.argmax(-1))
    assert len(list((tmp_path / "pred").iterdir())) == 2 * len(unlabelled)

    run_bundle(bundle, ["train.json", "evaluate.json"], *common, "--output_dir", str(tmp_path / "eval"))
    run_bundle(bundle, ["inference.json"], *common, "--output_dir", str(tmp_path / "test_pred"), "--data_part", "test")
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "case,class,dice,hd95" and len(rows) == 1 + 6 * 2
    for entry in json.loads(data.read_text())["testing"]:
        stem = Path(entry["image"]).name.removesuffix(".nii.gz")
        pred = np.asarray(nib.load(tmp_path / "test_pred" / f"{stem}_seg.nii.gz").dataobj)
        label = nib.load(hippocampus / entry["label"])
        truth = np.asarray(label.dataobj).astype(int)
        for value, name in ((1, "Anterior"), (2, "Posterior")):
            a, b = pred == value, truth == value
            dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            got = report["cases"][stem][name]
            assert got["dice"] == pytest.approx(dice, abs=1e-5)
            if a.any():
                assert got["hd95"] == pytest.approx(hd95(a, b, label.header.get_zooms()), abs=1e-3)
    mean = report["mean"]
    for name in ("Anterior", "Posterior"):
        dices = [report["cases"][c][name]["dice"] for c in report["cases"]]
        assert mean[name]["dice"] == pytest.approx(np.mean(dices), abs=1e-5) and mean[name]["n"] == 6
    assert (mean["Anterior"]["dice"] + mean["Posterior"]["dice"]) / 2 > 0.5, mean
