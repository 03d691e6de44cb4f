"""Training in several processes: ``torchrun`` with the bundle's ``multi_gpu_train.json``, on the
CPU over gloo (the same overlay takes one GPU per process with NCCL), driven by the loop's
``--nproc``."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.loop.bundle_runner import BundleRunner
from tests.conftest import write_scenes
from tests.test_bundle_run_2d import _bundle, short_loop

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "hippocampus"


def test_training_with_nproc_goes_through_torchrun_and_the_overlay(tmp_path):
    args = {"epochs": 2}
    cpu = BundleRunner(BUNDLE, tmp_path, "cpu", nproc=2).command(["train.json"], args)
    assert cpu[:6] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc_per_node=2",
    ]
    assert cpu[6:10] == ["-m", "monai.bundle", "run", "--config_file"]
    assert cpu[10] == str(["configs/train.json", "configs/multi_gpu_train.json"])
    pairs = dict(zip(cpu[11::2], cpu[12::2], strict=True))
    assert pairs["--device"] == "cpu" and pairs["--dist_backend"] == "gloo" and pairs["--epochs"] == "2"
    rest = BundleRunner(BUNDLE, tmp_path, "cuda", nproc=4).command(["train.json"], args)[11:]
    gpu = dict(zip(rest[0::2], rest[1::2], strict=True))
    assert gpu["--dist_backend"] == "nccl" and "--device" not in gpu  # each process: its LOCAL_RANK's GPU
    # prediction and evaluation stay in one process; so does training with nproc 1
    single = BundleRunner(BUNDLE, tmp_path, "cpu", nproc=2).command(["inference.json"], {})
    assert single[:4] == [sys.executable, "-m", "monai.bundle", "run"]
    assert BundleRunner(BUNDLE, tmp_path, "cpu").command(["train.json"], {})[1:3] == ["-m", "monai.bundle"]


def test_loop_refuses_a_process_count_below_one(tmp_path, capsys):
    args = ["loop", str(BUNDLE), "--data", str(tmp_path), "-o", str(tmp_path / "run"), "--nproc", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--nproc must be positive, got 0" in err and "Traceback" not in err


@pytest.mark.slow
def test_loop_trains_round_0_in_two_gloo_processes(tmp_path):
    """``samdsk-plan loop --nproc 2 --rounds 0``: torchrun starts two CPU processes, each runs
    its iterations on its share of the sampler; rank 0 alone logs the loss (2 epochs x 5 lines)
    and saves the checkpoint, both validate their half of the validation cases and agree on the
    all-reduced Dice, and round 0's single-process evaluation loads the checkpoint."""
    data = write_scenes(tmp_path / "data", 11)
    bundle = _bundle(data, tmp_path)
    entry = lambda i: {"image": f"imagesTr/s_{i:03d}.png", "label": f"labelsTr/s_{i:03d}.png"}  # noqa: E731
    lists = {
        "training": [entry(i) for i in range(6)],
        "validation": [entry(6), entry(7)],
        "testing": [entry(8), entry(9)],
        "unlabelled": [{"image": "imagesTr/s_010.png"}],
    }
    run = short_loop(bundle, data, lists, tmp_path, 0, 5, "--nproc", "2")

    log = (run / "round_0" / "logs" / "train.log").read_text()
    steps = re.findall(r"Epoch: (\d)/2, Iter: (\d)/5", log)
    assert steps == [(str(e), str(i)) for e in (1, 2) for i in range(1, 6)]  # rank 0 only, each once
    best = re.findall(r"Got new best metric of val_mean_dice: ([\d.]+)", log)
    assert best and len(best) % 2 == 0 and best[0::2] == best[1::2]  # both ranks, one reduced value
    assert (run / "round_0" / "models" / "model.pt").is_file()
    state = json.loads((run / "state.json").read_text())
    evaluation = state["rounds"]["0"]["evaluation"]["mean"]
    assert all(evaluation[name]["n"] == 2 and 0 <= evaluation[name]["dice"] <= 1 for name in evaluation)
