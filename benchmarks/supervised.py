"""Supervised baseline on hippocampus: the emitted bundle trained on 10 % vs 100 % of the labels.

For each ``--settings`` entry, a MONAI datalist is written to a temporary folder from the committed
split ``benchmarks/splits/hippocampus.json``:

- ``10``: the split's ``training`` cases (26 labelled, 10 % of the dataset);
- ``100``: those plus the hidden-label pool (the first 182 ``unlabelled`` entries, with their
  ``hidden_label`` as label), i.e. 208 cases;

both with the split's 52 ``testing`` cases. A copy of ``bundles/hippocampus`` is then trained on the
CPU through ``python -m monai.bundle run`` (``--iterations`` batches in epochs of 50 iterations; the
bundle validates on 20 % of the training list every ``--val-interval`` epochs and keeps the best
checkpoint), evaluated on the test cases, and one table row is printed per setting: Dice and HD95
per class on the test cases, next to nnU-Net's reported Dice with all labels.

Run it (~10-15 min per setting with the slim network on 2 CPU cores):

    .venv/bin/python benchmarks/supervised.py --iterations 1500 [--settings 10,100] [--filters 8,16,32,64]
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
from pathlib import Path

from samdsk_plan.loop.bundle_runner import bundle_command

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundles" / "hippocampus"
SPLIT = REPO / "benchmarks" / "splits" / "hippocampus.json"
ITERATIONS_PER_EPOCH = 50
N_HIDDEN = 182
NNUNET_DICE = {"Anterior": 0.90, "Posterior": 0.89}  # nnU-Net (Isensee et al. 2021), all labels
CLASSES = ("Anterior", "Posterior")


def write_datalist(setting: str, path: Path) -> int:
    """Write the datalist of one setting to ``path``; returns its number of training cases."""
    split = json.loads(SPLIT.read_text())
    training = list(split["training"])
    if setting == "100":
        training += [{"image": e["image"], "label": e["hidden_label"]} for e in split["unlabelled"][:N_HIDDEN]]
    elif setting != "10":
        sys.exit(f"unknown setting {setting!r}: choose 10 or 100")
    path.write_text(json.dumps({"training": training, "testing": split["testing"]}, indent=1))
    return len(training)


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


def run_setting(setting: str, args: argparse.Namespace, work: Path) -> dict:
    """Train and evaluate one setting in ``work``; returns its table row."""
    bundle = work / "bundle"
    shutil.copytree(BUNDLE, bundle)
    n_train = write_datalist(setting, work / "datalist.json")
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
        "setting": f"{setting} %",
        "n_train": n_train,
        "iterations": epochs * ITERATIONS_PER_EPOCH,
        "train_s": train_s,
        "eval_s": eval_s,
        "mean": mean,
        "n_test": mean["Anterior"]["n"],
        "best_val": f"{float(best[-1][0]):.3f} ({best[-1][1]})" if best else "-",
    }


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict]) -> None:
    print(
        f"{'setting':<8} {'n train':>7} {'iters':>6} {'train [s]':>9} {'eval [s]':>8} {'best val (ep)':>13} "
        f"{'Dice Ant':>8} {'Dice Post':>9} {'Dice mean':>9} {'HD95 Ant':>8} {'HD95 Post':>9}"
    )
    for r in rows:
        dice = [r["mean"][c]["dice"] for c in CLASSES]
        mean_dice = None if None in dice else sum(dice) / len(dice)
        print(
            f"{r['setting']:<8} {r['n_train']:>7} {r['iterations']:>6} {r['train_s']:>9.0f} {r['eval_s']:>8.0f} "
            f"{r['best_val']:>13} {fmt(dice[0], 3):>8} {fmt(dice[1], 3):>9} "
            f"{fmt(mean_dice, 3):>9} {fmt(r['mean']['Anterior']['hd95'], 2):>8} "
            f"{fmt(r['mean']['Posterior']['hd95'], 2):>9}"
        )
    print(
        f"{'nnU-Net (all labels, reported)':<56} {NNUNET_DICE['Anterior']:>8.2f} "
        f"{NNUNET_DICE['Posterior']:>9.2f} {sum(NNUNET_DICE.values()) / 2:>9.3f}"
    )
    print(
        f"Test cases: {rows[0]['n_test']}; Dice and HD95 [mm] are means over test cases "
        "(HD95 leaves out cases with an empty prediction); best val = mean validation Dice of the kept checkpoint."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".." / "shared" / "data" / "hippocampus")
    parser.add_argument("--iterations", type=int, default=1500, help="training iterations per run")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--filters", default="8,16,32,64", help="DynUNet filters (the plan's: 32,64,128,256)")
    parser.add_argument("--val-interval", type=int, default=5, help="validate every N epochs of 50 iterations")
    parser.add_argument("--settings", default="10,100", help="comma-separated label fractions in percent: 10, 100")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    args = parser.parse_args()
    print(
        f"data {args.data.resolve()}; {args.iterations} iterations of batch {args.batch_size}; filters "
        f"[{args.filters}]; {args.threads} threads; CPU",
        flush=True,
    )
    rows = []
    for setting in (s.strip() for s in args.settings.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"supervised_{setting}_") as tmp:
            rows.append(run_setting(setting, args, Path(tmp)))
        r = rows[-1]
        print(f"setting {r['setting']}: trained in {r['train_s']:.0f} s, evaluated in {r['eval_s']:.0f} s", flush=True)
    print_table(rows)


if __name__ == "__main__":
    main()
