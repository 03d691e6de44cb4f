"""SamDSK on hippocampus with 10 % of the labels, against supervised and self-training peers.

All arms train with the same budget through the emitted bundle (``bundles/hippocampus``, slim
DynUNet, one torch thread each, two jobs side by side on a 2-core machine) on the committed
split ``benchmarks/splits/hippocampus.json`` and are evaluated on its 52 test cases:

- **supervised 10 %**: the labelled training cases (round 0 of the SamDSK run);
- **supervised 100 %**: those plus the 182 hidden-label pool cases with their true labels;
- **SamDSK as planned**: ``samdsk-plan loop`` with classical proposals, three-axis vote, the
  threshold calibrated on the validation cases, ``--rounds`` rounds;
- from the same round-0 model and round-1 probabilities: **SamDSK, top N by beta** (fixed
  size, matched labels) against **self-training, top N by confidence** (the model's own
  thresholded predictions, no proposals), and **SamDSK with the prediction as a fourth
  voter** (``fusion: vote_with_prediction``, calibrated).

Also printed: per round the cases accepted, the threshold and the true Dice of the accepted
pseudo-labels against the hidden labels, of the raw predictions of the same cases and of as
many confidence-selected predictions; on the whole round-1 pool, label and prediction Dice
of the top cases by beta and by confidence; and the solver's time per slice (median, p95) on
``--solver-timing`` cases, with brute force on slices cut to ``--brute-n`` proposals.

    .venv/bin/python benchmarks/samdsk.py --out /tmp/samdsk-bench [--rounds 2] [--epochs 15] [--top-n 46]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from samdsk_plan.io import read_image
from samdsk_plan.io.atomic import atomic_write_json
from samdsk_plan.io.datalists import prediction_file
from samdsk_plan.loop import Loop, LoopSettings
from samdsk_plan.loop.bundle_runner import BundleRunner
from samdsk_plan.loop.pseudolabel import read_probabilities
from samdsk_plan.matching import MatchSettings, match_slice, union_score
from samdsk_plan.matching.assign import class_targets
from samdsk_plan.matching.volume import slice_bounds
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.cache import ProposalCache
from samdsk_plan.proposals.pipeline import case_key, make_generators, windowed_volume

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundles" / "hippocampus"
SPLIT = REPO / "benchmarks" / "splits" / "hippocampus.json"
DATA = REPO.parent / "shared" / "data" / "hippocampus"
CLASSES = ("Anterior", "Posterior")
N_HIDDEN = 182


def train_and_evaluate(runner: BundleRunner, folder: Path, datalist: dict, train_args: dict) -> dict:
    """Train on ``datalist`` in ``folder`` and evaluate on its test cases; returns the mean metrics."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "datalist.json"
    atomic_write_json(path, datalist)
    start = time.perf_counter()
    if not (folder / "eval" / "metrics.json").is_file():
        runner.run(["train.json"], folder / "train.log", datalist=path, ckpt_dir=folder / "models", **train_args)
        runner.run(
            ["train.json", "evaluate.json"],
            folder / "evaluate.log",
            datalist=path,
            ckpt_dir=folder / "models",
            output_dir=folder / "eval",
            data_part="test",
        )
    mean = json.loads((folder / "eval" / "metrics.json").read_text())["mean"]
    return {"n_train": len(datalist["training"]), "mean": mean, "seconds": time.perf_counter() - start}


def supervised_100(out: Path, runner: BundleRunner, train_args: dict, results: dict) -> None:
    split = json.loads(SPLIT.read_text())
    full = {
        "training": split["training"]
        + [{"image": e["image"], "label": e["hidden_label"]} for e in split["unlabelled"][:N_HIDDEN]],
        "testing": split["testing"],
    }
    results["supervised 100 %"] = train_and_evaluate(runner, out / "supervised_100", full, train_args)


def self_training(out: Path, runner: BundleRunner, train_args: dict, n: int, results: dict) -> None:
    """Round 0's predictions of the ``n`` most confident pool cases join the training set."""
    run = out / "samdsk"
    records = [json.loads(p.read_text()) for p in (run / "round_1" / "matches" / "pool").glob("*.json")]
    chosen = sorted(records, key=lambda r: (-r["confidence"], r["case_id"]))[:n]
    preds = run / "round_1" / "predictions" / "pool"
    r0 = json.loads((run / "round_0" / "datalist.json").read_text())
    added = [{"image": r["image"], "label": str(preds / f"{r['case_id']}_seg.nii.gz")} for r in chosen]
    datalist = {"training": r0["training"] + added, "validation": r0["validation"], "testing": r0["testing"]}
    results[f"self-training, top {n} by confidence"] = train_and_evaluate(
        runner, out / f"self_training_{n}", datalist, train_args
    )


def seeded_loop(source: Path, run_dir: Path, bundle: Path, settings: LoopSettings, with_matches: bool) -> Loop:
    """A loop that starts from ``source``'s round 0 and round-1 predictions (and matches): the
    same model and probabilities, so arms differ only in what they match or accept."""
    loop = Loop(bundle, DATA, run_dir, SPLIT, settings, "cpu", threads=1, progress=False, log=print)
    if not loop.state.done("0/prepare"):
        shutil.copy(source / "hidden_labels.json", run_dir / "hidden_labels.json")
        shutil.copytree(source / "round_0", run_dir / "round_0")
        shutil.copytree(source / "round_1" / "predictions", run_dir / "round_1" / "predictions")
        steps = ["0/prepare", "0/train", "0/evaluate", "1/predict"]
        if with_matches:
            shutil.copytree(source / "round_1" / "matches", run_dir / "round_1" / "matches")
            steps.append("1/match")
        loop.state.data["rounds"]["0"] = json.loads((source / "state.json").read_text())["rounds"]["0"]
        for step in steps:
            loop.state.mark(step)
    return loop


def pool_analysis(run: Path) -> None:
    """True Dice of round 1's matched labels and of the predictions on the whole pool, for the
    top fractions of cases ranked by beta and by the model's confidence."""
    split = json.loads(SPLIT.read_text())
    hidden = {
        Path(e["image"]).name.removesuffix(".nii.gz"): DATA / e["hidden_label"]
        for e in split["unlabelled"]
        if "hidden_label" in e
    }
    rows = []
    for path in sorted((run / "round_1" / "matches" / "pool").glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["case_id"] not in hidden:
            continue
        truth = np.asarray(read_image(hidden[rec["case_id"]]).array)
        label = np.asarray(read_image(rec["label"]).array)
        pred = np.asarray(read_image(run / "round_1" / "predictions" / "pool" / f"{rec['case_id']}_seg.nii.gz").array)
        dice = [
            np.mean(
                [union_score((x == c).reshape(1, -1), (truth == c).ravel().astype(float), [0], "dice") for c in (1, 2)]
            )
            for x in (label, pred)
        ]
        rows.append((rec["beta"], rec["confidence"], *dice))
    a = np.asarray(rows)
    print(
        f"\nround-1 pool ({len(a)} cases with hidden labels): matched labels beat the prediction in "
        f"{100 * np.mean(a[:, 2] > a[:, 3]):.0f} % of cases; "
        f"corr(beta, label Dice) {np.corrcoef(a[:, 0], a[:, 2])[0, 1]:.2f}, "
        f"corr(confidence, prediction Dice) {np.corrcoef(a[:, 1], a[:, 3])[0, 1]:.2f}"
    )
    print("top share  n    by beta: label | prediction    by confidence: label | prediction")
    for share in (0.1, 0.25, 0.5, 1.0):
        n = max(1, round(share * len(a)))
        b, c = np.argsort(-a[:, 0], kind="stable")[:n], np.argsort(-a[:, 1], kind="stable")[:n]
        print(
            f"{share:8.0%} {n:3d}   {a[b, 2].mean():13.4f} | {a[b, 3].mean():.4f}   "
            f"{a[c, 2].mean():19.4f} | {a[c, 3].mean():.4f}"
        )


def brute_force(masks: np.ndarray, probs: np.ndarray, bounds, settings) -> float:
    targets = class_targets(probs, settings.target, settings.prob_floor)
    best = -1.0
    for owners in itertools.product(range(len(bounds) + 1), repeat=len(masks)):
        sets = [[k for k, o in enumerate(owners) if o == c + 1] for c in range(len(bounds))]
        if all(lo <= len(s) <= hi for s, (lo, hi) in zip(sets, bounds, strict=True)):
            best = max(best, sum(union_score(masks, targets[c], s, settings.metric) for c, s in enumerate(sets)))
    return best


def solver_timing(run: Path, plans: Plans, n_cases: int, brute_n: int, fast: bool, brute_slices: int = 100) -> None:
    """Per-slice solver time on round 1's pool (proposals from the cache, probabilities of round 0)."""
    bounds, settings = plans.samdsk.bounds, MatchSettings(**plans.samdsk.matching)
    generators = make_generators(plans, "classical", fast=fast)
    cache = ProposalCache(run / "proposals")
    times, brute_times, gaps, sizes = [], [], [], []
    records = sorted((run / "round_1" / "matches" / "pool").glob("*.json"))[:n_cases]
    for rec_path in records:
        rec = json.loads(rec_path.read_text())
        volume, _ = windowed_volume(rec["image"], plans)
        probs = read_probabilities(
            prediction_file(run / "round_1" / "predictions" / "pool", rec, "prob"), volume.shape, plans.n_classes
        )
        pred = np.argmax(probs, axis=0)
        for (axis, index), props in cache.load(rec["case_id"], case_key(volume, generators)).items():
            local = slice_bounds(np.take(pred, index, axis=axis), bounds[axis])
            if not any(hi for _, hi in local) or not len(props):
                continue
            p = np.take(probs, index, axis=axis + 1)
            start = time.perf_counter()
            match_slice(props.masks, p, local, settings)
            times.append(time.perf_counter() - start)
            sizes.append(len(props))
            if len(brute_times) >= brute_slices:
                continue
            # brute force on the brute_n proposals that overlap the foreground most
            fg = class_targets(p, settings.target, settings.prob_floor).sum(axis=0)
            keep = np.argsort(-(props.masks.reshape(len(props), -1) @ fg.ravel()))[:brute_n]
            small = props.masks[np.sort(keep)]
            start = time.perf_counter()
            fast = match_slice(small, p, local, settings)
            solver_small = time.perf_counter() - start
            start = time.perf_counter()
            exact = brute_force(small, p, local, settings)
            brute_times.append((solver_small, time.perf_counter() - start))
            gaps.append(exact - fast.objective)
    t = np.asarray(times) * 1000
    bt = np.asarray(brute_times) * 1000
    print(
        f"\nsolver on {len(t)} slices of {len(records)} cases ({np.median(sizes):.0f} proposals per slice, median):"
        f" median {np.median(t):.1f} ms, p95 {np.percentile(t, 95):.1f} ms"
    )
    print(
        f"on {len(bt)} of those slices cut to {brute_n} proposals: solver median {np.median(bt[:, 0]):.2f} ms, "
        f"brute force median {np.median(bt[:, 1]):.1f} ms (p95 {np.percentile(bt[:, 1], 95):.1f} ms); "
        f"largest objective gap brute - solver {max(gaps):.2e}"
    )


def print_arms(state_rows: list[tuple[str, dict]], results: dict, filters: str, epochs: int) -> None:
    print(
        f"\nhippocampus, 10 % labelled ({epochs * 50} iterations of batch 2 per training, filters [{filters}], "
        "CPU); Dice on the 52 test cases"
    )
    print(f"{'arm':44s} {'n train':>7s} {'Dice Ant':>9s} {'Dice Post':>9s} {'mean':>7s}")
    for name, summary in state_rows:
        mean = summary["evaluation"]["mean"]
        d = [mean[c]["dice"] for c in CLASSES]
        print(f"{name:44s} {'':>7s} {d[0]:9.4f} {d[1]:9.4f} {np.mean(d):7.4f}")
    for name, res in results.items():
        d = [res["mean"][c]["dice"] for c in CLASSES]
        print(f"{name:44s} {res['n_train']:7d} {d[0]:9.4f} {d[1]:9.4f} {np.mean(d):7.4f}")


def print_rounds(name: str, state: dict) -> None:
    print(
        f"\n{name}: round  threshold  accepted/pool  exact  true Dice: accepted labels | their predictions | "
        "confidence-selected predictions"
    )
    for r in sorted(state["rounds"], key=int)[1:]:
        s = state["rounds"][r]
        td = s.get("true_dice", {})
        cells = [
            f"{td[k]['mean']:.4f}" if k in td else "n/a"
            for k in ("accepted_pseudo_labels", "accepted_predictions", "confidence_selected_predictions")
        ]
        thr = "none" if s.get("threshold") is None else f"{s['threshold']:.4f}"
        print(
            f"{r:>5s}  {thr:>9s}  {len(s['accepted']):>4d}/{s['n_pool']:<4d}  {s['exact_fraction']:5.2f}  "
            + " | ".join(cells)
        )
    print(f"stop: {state['stopped'] or 'rounds done'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (reused: finished parts are kept)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15, help="epochs of 50 iterations of batch 2")
    ap.add_argument("--val-interval", type=int, default=5)
    ap.add_argument("--filters", default="8,16,32,64")
    ap.add_argument("--fast", action="store_true", help="classical generator's fast mode")
    ap.add_argument("--top-n", type=int, default=46, help="cases added by the fixed-size arms (0: skip them)")
    ap.add_argument("--solver-timing", type=int, default=10, help="cases for the solver timing (0: skip)")
    ap.add_argument("--brute-n", type=int, default=7)
    args = ap.parse_args()
    overrides = {"network_def#filters": f"[{args.filters}]", "num_workers": "0"}
    train_args = {"epochs": args.epochs, "iterations_per_epoch": 50, "batch_size": 2, "val_interval": args.val_interval}
    args.out.mkdir(parents=True, exist_ok=True)
    common = dict(
        epochs=args.epochs,
        iterations_per_epoch=50,
        batch_size=2,
        val_interval=args.val_interval,
        fast_proposals=args.fast,
        overrides=overrides,
    )
    runner = BundleRunner(BUNDLE, DATA, "cpu", overrides, threads=1)
    results: dict = {}

    # 1. SamDSK as planned (threshold calibrated) beside supervised 100 %
    run = args.out / "samdsk"
    loop = Loop(
        BUNDLE,
        DATA,
        run,
        SPLIT,
        LoopSettings(rounds=args.rounds, **common),
        "cpu",
        threads=1,
        progress=False,
        log=print,
    )
    jobs = [
        threading.Thread(target=loop.run),
        threading.Thread(target=supervised_100, args=(args.out, runner, train_args, results)),
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    states = {"SamDSK (paper vote, calibrated)": json.loads((run / "state.json").read_text())}
    n_accepted = len(states["SamDSK (paper vote, calibrated)"]["rounds"]["1"]["accepted"])

    # 2. fixed-size arms from the same round-0 model: top-N by beta (matched labels) vs top-N by
    #    confidence (predicted labels); then the prediction as fourth voter, calibrated
    if args.top_n:
        top = seeded_loop(
            run,
            args.out / f"samdsk_top{args.top_n}",
            BUNDLE,
            LoopSettings(rounds=1, threshold=0.0, max_accepted=args.top_n, **common),
            True,
        )
        jobs = [
            threading.Thread(target=top.run),
            threading.Thread(target=self_training, args=(args.out, runner, train_args, args.top_n, results)),
        ]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join()
        states[f"SamDSK, top {args.top_n} by beta"] = json.loads((top.run_dir / "state.json").read_text())
    elif n_accepted:
        self_training(args.out, runner, train_args, n_accepted, results)
    bundle = args.out / "bundle_vote_with_prediction"
    if not bundle.is_dir():
        shutil.copytree(BUNDLE, bundle)
        plans = json.loads((bundle / "configs" / "plans.json").read_text())
        plans["samdsk"]["fusion"] = "vote_with_prediction"
        (bundle / "configs" / "plans.json").write_text(json.dumps(plans, indent=1))
    refined = seeded_loop(
        run, args.out / "samdsk_vote_with_prediction", bundle, LoopSettings(rounds=1, workers=2, **common), False
    )
    refined.run()
    states["SamDSK, prediction as 4th voter, calibrated"] = json.loads((refined.run_dir / "state.json").read_text())

    rows = [("supervised 10 % (round 0)", states["SamDSK (paper vote, calibrated)"]["rounds"]["0"])]
    for name, state in states.items():
        rows += [
            (f"{name}, round {r}", state["rounds"][r])
            for r in sorted(state["rounds"], key=int)[1:]
            if "evaluation" in state["rounds"][r]
        ]
    print_arms(rows, results, args.filters, args.epochs)
    for name, state in states.items():
        print_rounds(name, state)
    pool_analysis(run)
    if args.solver_timing:
        solver_timing(run, loop.plans, args.solver_timing, args.brute_n, args.fast)


if __name__ == "__main__":
    sys.exit(main())
