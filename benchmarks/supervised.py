"""Supervised baselines: the emitted bundle trained on few labels vs all labels, same CPU budget.

``--dataset hippocampus`` (3D, the committed ``bundles/hippocampus``) or ``psfhs`` (2D ultrasound;
its bundle is emitted into the work folder by fingerprint -> plan -> emit). For each
``--settings`` entry a MONAI datalist is written from the committed split
``benchmarks/splits/DATASET.json``:

- ``few``: the split's ``training`` cases (hippocampus: 26, 10 %; psfhs: 67, 5 %);
- ``all``: those plus the hidden-label pool (the ``unlabelled`` entries with a ``hidden_label``,
  used as labels): hippocampus 208, psfhs 1083 cases;

both with the split's ``testing`` cases (52; 275). The bundle is trained on the CPU through
``python -m monai.bundle run`` (``--iterations`` batches in epochs of 50 iterations; it validates
on 20 % of the training list every ``--val-interval`` epochs and keeps the best checkpoint),
evaluated on the test cases, and one row is printed per setting: Dice and HD95 per class. The
comparison rows: a fixed "mean mask" (each class where more than half of the ``all`` training
labels have it; what a model must beat to have learnt anything image-specific) and, for
hippocampus, nnU-Net's reported Dice with all labels.

Run it (~10-15 min per setting with the slim networks on 2 CPU cores):

    .venv/bin/python benchmarks/supervised.py --dataset hippocampus --iterations 1500
    .venv/bin/python benchmarks/supervised.py --dataset psfhs --iterations 1500 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samdsk_plan.io.images import read_image
from samdsk_plan.loop.bundle_runner import bundle_command

REPO = Path(__file__).resolve().parent.parent
ITERATIONS_PER_EPOCH = 50
# nnU-Net (Isensee et al. 2021), all labels; no comparable published PSFHS figure at this budget
REPORTED = {"hippocampus": ("nnU-Net (all labels, reported)", {"Anterior": 0.90, "Posterior": 0.89})}
FILTERS = {"hippocampus": "8,16,32,64", "psfhs": "8,16,32,64,64,64,64"}


def training_cases(split: dict, setting: str) -> list[dict]:
    """The training entries of ``setting`` (``few`` or ``all``) of ``split``."""
    training = list(split["training"])
    if setting == "all":
        training += [
            {"case_id": e["case_id"], "image": e["image"], "label": e["hidden_label"]}
            for e in split["unlabelled"]
            if "hidden_label" in e
        ]
    elif setting != "few":
        sys.exit(f"unknown setting {setting!r}: choose few or all")
    return training


def write_datalist(split: dict, setting: str, path: Path) -> int:
    """Write the datalist of one setting to ``path``; returns its number of training cases."""
    training = training_cases(split, setting)
    path.write_text(json.dumps({"training": training, "testing": split["testing"]}, indent=1))
    return len(training)


def default_data(dataset: str) -> Path:
    """The shared folder of ``dataset`` (``../shared/data/DATASET``), resolved."""
    return (REPO.parent / "shared" / "data" / dataset).resolve()


def prepare_bundle(dataset: str, data: Path, work: Path, plan_sets: Sequence[str] = ()) -> Path:
    """The bundle to train: a copy of ``bundles/DATASET`` when ``data`` is the shared folder it
    was emitted from and no plan setting is changed, else one emitted from ``data`` (fingerprint
    -> plan with ``--set`` of each of ``plan_sets`` -> emit in ``work``), so another folder given as
    ``--data`` never trains a bundle planned for other images."""
    bundle = work / "bundle"
    committed = REPO / "bundles" / dataset
    if committed.is_dir() and Path(data).resolve() == default_data(dataset) and not plan_sets:
        shutil.copytree(committed, bundle)
        return bundle
    cli = [sys.executable, "-m", "samdsk_plan"]
    sets = [a for s in plan_sets for a in ("--set", s)]
    for step in (
        ["fingerprint", str(data), "-o", str(work / "fp.json"), "-q"],
        ["plan", str(work / "fp.json"), "-o", str(work / "plans.json"), *sets],
        ["emit", str(work / "plans.json"), "-o", str(bundle)],
    ):
        code = subprocess.run(cli + step, stdout=subprocess.DEVNULL).returncode
        if code:  # its own message (a bad --set, an unreadable image) is on stderr above
            sys.exit(f"samdsk-plan {step[0]} failed (exit {code}) while preparing the bundle in {work}")
    return bundle


def mean_mask_row(split: dict, data: Path, labels: dict[int, str]) -> dict:
    """Dice of a fixed mask on the test cases: each class where more than half of the ``all``
    training labels have it (labels of one shape only; None when shapes differ)."""
    stack = [np.asarray(read_image(data / e["label"]).array) for e in training_cases(split, "all")]
    if len({a.shape for a in stack}) > 1:
        return {}
    masks = {v: np.mean([a == v for a in stack], axis=0) > 0.5 for v in labels}
    mask = np.zeros(stack[0].shape, np.uint8)
    for v, m in masks.items():
        mask[m] = v
    per_class = {name: [] for name in labels.values()}
    for e in split["testing"]:
        truth = np.asarray(read_image(data / e["label"]).array)
        for v, name in labels.items():
            a, b = mask == v, truth == v
            per_class[name].append(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
    return {name: float(np.mean(d)) for name, d in per_class.items()}


def run_bundle(bundle: Path, configs: list[str], args: list[str], threads: int, log: Path) -> float:
    """Run ``monai.bundle run`` in ``bundle``; returns its wall time and exits with the log tail on failure."""
    cmd = bundle_command(configs, {"device": "cpu", "num_workers": 0}) + args
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(cmd, cwd=bundle, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    elapsed = time.perf_counter() - start
    if code != 0:
        sys.exit(f"FAILED (exit {code}): {' '.join(cmd)}\n{log.read_text()[-5000:]}")
    return elapsed


def run_setting(setting: str, split: dict, args: argparse.Namespace, work: Path) -> dict:
    """Train and evaluate one setting in ``work``; returns its table row."""
    bundle = prepare_bundle(args.dataset, args.data, work)
    n_train = write_datalist(split, setting, work / "datalist.json")
    epochs = max(1, args.iterations // ITERATIONS_PER_EPOCH)
    common = [
        "--dataset_dir",
        str(args.data.resolve()),
        "--datalist",
        str(work / "datalist.json"),
        "--ckpt_dir",
        str(work / "models"),
        "--network_def#filters",
        f"[{args.filters}]",
    ]
    train_s = run_bundle(
        bundle,
        ["train.json"],
        [
            *common,
            "--epochs",
            str(epochs),
            "--iterations_per_epoch",
            str(ITERATIONS_PER_EPOCH),
            "--batch_size",
            str(args.batch_size),
            "--val_interval",
            str(min(args.val_interval, epochs)),
        ],
        args.threads,
        work / "train.log",
    )
    best = re.findall(r"best value: ([\d.]+) at epoch: (\d+)", (work / "train.log").read_text())
    eval_s = run_bundle(
        bundle,
        ["train.json", "evaluate.json"],
        [*common, "--output_dir", str(work / "eval")],
        args.threads,
        work / "eval.log",
    )
    mean = json.loads((work / "eval" / "metrics.json").read_text())["mean"]
    return {
        "setting": setting,
        "n_train": n_train,
        "iterations": epochs * ITERATIONS_PER_EPOCH,
        "train_s": train_s,
        "eval_s": eval_s,
        "mean": mean,
        "n_test": next(iter(mean.values()))["n"],
        "best_val": f"{float(best[-1][0]):.3f} ({best[-1][1]})" if best else "-",
    }


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict], classes: list[str], peers: list[tuple[str, dict]]) -> None:
    head = "".join(f" {'Dice ' + c[:10]:>16}" for c in classes) + "".join(f" {'HD95 ' + c[:10]:>16}" for c in classes)
    print(f"{'setting':<8} {'n train':>7} {'iters':>6} {'train [s]':>9} {'eval [s]':>8} {'best val (ep)':>13}{head}")
    for r in rows:
        dice = "".join(f" {fmt(r['mean'][c]['dice'], 3):>16}" for c in classes)
        hd = "".join(f" {fmt(r['mean'][c]['hd95'], 2):>16}" for c in classes)
        print(
            f"{r['setting']:<8} {r['n_train']:>7} {r['iterations']:>6} {r['train_s']:>9.0f} {r['eval_s']:>8.0f} "
            f"{r['best_val']:>13}{dice}{hd}"
        )
    for name, dice in peers:
        print(f"{name:<56}" + "".join(f" {fmt(dice.get(c), 3):>16}" for c in classes))
    print(
        f"Test cases: {rows[0]['n_test']}; Dice and HD95 (mm, or pixels for natural images) are means over test "
        "cases (HD95 leaves out cases with an empty prediction); best val = validation Dice of the kept checkpoint."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="hippocampus", choices=("hippocampus", "psfhs"))
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: ../shared/data/DATASET)")
    parser.add_argument("--iterations", type=int, default=1500, help="training iterations per run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--filters", default=None, help="DynUNet filters (default: a slim network per dataset)")
    parser.add_argument("--val-interval", type=int, default=5, help="validate every N epochs of 50 iterations")
    parser.add_argument("--settings", default="few,all", help="comma-separated: few (the split's labels), all")
    parser.add_argument("--split", type=Path, default=None, help="split file (default: benchmarks/splits/DATASET.json)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    args = parser.parse_args()
    args.data = (args.data or default_data(args.dataset)).resolve()
    args.filters = args.filters or FILTERS[args.dataset]
    split = json.loads((args.split or REPO / "benchmarks" / "splits" / f"{args.dataset}.json").read_text())
    labels = {int(k): v for k, v in split["labels"].items() if int(k)}
    print(
        f"{args.dataset}: data {args.data}; {args.iterations} iterations of batch {args.batch_size}; filters "
        f"[{args.filters}]; {args.threads} threads; CPU",
        flush=True,
    )
    rows = []
    for setting in (s.strip() for s in args.settings.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"supervised_{setting}_") as tmp:
            rows.append(run_setting(setting, split, args, Path(tmp)))
        r = rows[-1]
        print(f"setting {r['setting']}: trained in {r['train_s']:.0f} s, evaluated in {r['eval_s']:.0f} s", flush=True)
    peers = [("mean mask (fixed, from all training labels)", mean_mask_row(split, args.data, labels))]
    peers += [REPORTED[args.dataset]] if args.dataset in REPORTED else []
    print_table(rows, list(labels.values()), peers)


if __name__ == "__main__":
    main()
