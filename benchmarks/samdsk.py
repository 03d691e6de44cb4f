"""SamDSK on hippocampus with 10 % of the labels, against supervised and self-training peers.

Arms, all trained with the same budget through the emitted bundle (``bundles/hippocampus``,
slim DynUNet) on the committed split ``benchmarks/splits/hippocampus.json`` and evaluated on its
52 test cases:

- **supervised 10 %**: the 26 labelled training cases (round 0 of the SamDSK run);
- **supervised 100 %**: those plus the 182 hidden-label pool cases with their true labels (the
  ceiling);
- **self-training**: round 0's model predicts the pool; as many cases as SamDSK's round 1
  accepted are chosen by the model's confidence (mean top softmax over its predicted
  foreground) and added with their predicted labels (thresholded predictions, no proposals);
- **SamDSK**: ``samdsk-plan loop`` with classical proposals, the threshold calibrated on the
  validation cases, ``--rounds`` rounds.

The supervised-100 % and self-training arms run in a second thread beside the SamDSK loop (one
torch thread each, for a 2-core machine). Also printed: per SamDSK round, the cases accepted,
the threshold and the true Dice of the accepted pseudo-labels against the hidden labels, of the
model's raw predictions on the same cases and of as many confidence-selected predictions; and
the solver's time per slice on the round-1 matches (``--solver-timing``), with brute force on
slices cut down to ``--brute-n`` proposals.

    .venv/bin/python benchmarks/samdsk.py --out /tmp/samdsk-bench [--rounds 2] [--epochs 15]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from samdsk_plan.io import read_image
from samdsk_plan.io.atomic import atomic_write_json
from samdsk_plan.loop import Loop, LoopSettings
from samdsk_plan.loop.bundle_runner import BundleRunner
from samdsk_plan.loop.pseudolabel import matching_settings, read_probabilities
from samdsk_plan.matching import match_slice, union_score
from samdsk_plan.matching.assign import class_targets
from samdsk_plan.matching.volume import slice_bounds
from samdsk_plan.proposals.cache import ProposalCache
from samdsk_plan.proposals.pipeline import case_key, make_generators
from samdsk_plan.proposals.volume import window_to_unit

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
        runner.run(["train.json", "evaluate.json"], folder / "evaluate.log", datalist=path,
                   ckpt_dir=folder / "models", output_dir=folder / "eval", data_part="test")
    mean = json.loads((folder / "eval" / "metrics.json").read_text())["mean"]
    return {"n_train": len(datalist["training"]), "mean": mean, "seconds": time.perf_counter() - start}


def wait_for(state_path: Path, step: str, loop_thread: threading.Thread) -> bool:
    while loop_thread.is_alive() or state_path.is_file():
        if state_path.is_file() and step in json.loads(state_path.read_text())["done"]:
            return True
        if not loop_thread.is_alive():
            return False
        time.sleep(10)
    return False


def peers(out: Path, runner: BundleRunner, train_args: dict, loop_thread: threading.Thread, results: dict) -> None:
    """Supervised 100 % now; self-training once SamDSK round 1 has accepted."""
    split = json.loads(SPLIT.read_text())
    full = {"training": split["training"] + [{"image": e["image"], "label": e["hidden_label"]}
                                             for e in split["unlabeled"][:N_HIDDEN]],
            "testing": split["testing"]}
    results["supervised 100 %"] = train_and_evaluate(runner, out / "supervised_100", full, train_args)
    run = out / "samdsk"
    if not wait_for(run / "state.json", "1/accept", loop_thread):
        return
    state = json.loads((run / "state.json").read_text())
    n = len(state["rounds"]["1"]["accepted"])
    records = [json.loads(p.read_text()) for p in (run / "round_1" / "matches" / "pool").glob("*.json")]
    chosen = sorted(records, key=lambda r: (-r["confidence"], r["case_id"]))[:n]
    preds = run / "round_1" / "predictions" / "pool"
    r0 = json.loads((run / "round_0" / "datalist.json").read_text())
    added = [{"image": r["image"], "label": str(preds / f"{r['case_id']}_seg.nii.gz")} for r in chosen]
    base = {"training": r0["training"] + added, "validation": r0["validation"], "testing": r0["testing"]}
    results["self-training"] = train_and_evaluate(runner, out / "self_training", base, train_args)


def brute_force(masks: np.ndarray, probs: np.ndarray, bounds, settings) -> float:
    targets = class_targets(probs, settings.target, settings.prob_floor)
    best = -1.0
    for owners in itertools.product(range(len(bounds) + 1), repeat=len(masks)):
        sets = [[k for k, o in enumerate(owners) if o == c + 1] for c in range(len(bounds))]
        if all(lo <= len(s) <= hi for s, (lo, hi) in zip(sets, bounds)):
            best = max(best, sum(union_score(masks, targets[c], s, settings.metric) for c, s in enumerate(sets)))
    return best


def solver_timing(run: Path, plans: dict, n_cases: int, brute_n: int, fast: bool, brute_slices: int = 100) -> None:
    """Per-slice solver time on round 1's pool (proposals from the cache, probabilities of round 0)."""
    bounds, _, settings = matching_settings(plans)
    generators = make_generators(plans, "classical", fast=fast)
    cache = ProposalCache(run / "proposals")
    times, brute_times, gaps, sizes = [], [], [], []
    records = sorted((run / "round_1" / "matches" / "pool").glob("*.json"))[:n_cases]
    for rec_path in records:
        rec = json.loads(rec_path.read_text())
        array = np.asarray(read_image(rec["image"]).array)
        volume = window_to_unit(array, plans["normalization"][0])
        probs = read_probabilities(run / "round_1" / "predictions" / "pool" / f"{rec['case_id']}_prob.nii.gz",
                                   volume.shape, 3)
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
    print(f"\nsolver on {len(t)} slices of {len(records)} cases ({np.median(sizes):.0f} proposals per slice, median):"
          f" median {np.median(t):.1f} ms, p95 {np.percentile(t, 95):.1f} ms")
    print(f"on {len(bt)} of those slices cut to {brute_n} proposals: solver median {np.median(bt[:, 0]):.2f} ms, "
          f"brute force median {np.median(bt[:, 1]):.1f} ms (p95 {np.percentile(bt[:, 1], 95):.1f} ms); "
          f"largest objective gap brute - solver {max(gaps):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="work folder (reused: finished parts are kept)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=15, help="epochs of 50 iterations of batch 2")
    ap.add_argument("--val-interval", type=int, default=5)
    ap.add_argument("--filters", default="8,16,32,64")
    ap.add_argument("--fast", action="store_true", help="classical generator's fast mode")
    ap.add_argument("--no-peers", action="store_true", help="only the SamDSK run")
    ap.add_argument("--solver-timing", type=int, default=10, help="cases for the solver timing (0: skip)")
    ap.add_argument("--brute-n", type=int, default=7)
    args = ap.parse_args()
    overrides = {"network_def#filters": f"[{args.filters}]", "num_workers": "0"}
    train_args = {"epochs": args.epochs, "iterations_per_epoch": 50, "batch_size": 2, "val_interval": args.val_interval}
    args.out.mkdir(parents=True, exist_ok=True)
    settings = LoopSettings(rounds=args.rounds, epochs=args.epochs, iterations_per_epoch=50, batch_size=2,
                            val_interval=args.val_interval, fast_proposals=args.fast, overrides=overrides)
    loop = Loop(BUNDLE, DATA, args.out / "samdsk", SPLIT, settings, "cpu", threads=1, progress=False, log=print)
    results: dict = {}
    start = time.perf_counter()
    loop_thread = threading.Thread(target=loop.run)
    loop_thread.start()
    peer_thread = None
    if not args.no_peers:
        runner = BundleRunner(BUNDLE, DATA, "cpu", overrides, threads=1)
        peer_thread = threading.Thread(target=peers, args=(args.out, runner, train_args, loop_thread, results))
        peer_thread.start()
    loop_thread.join()
    samdsk_seconds = time.perf_counter() - start
    if peer_thread is not None:
        peer_thread.join()
    state = json.loads((args.out / "samdsk" / "state.json").read_text())

    print(f"\nhippocampus, 10 % labelled ({args.epochs * 50} iterations of batch 2 per training, filters "
          f"[{args.filters}], CPU); Dice on the 52 test cases")
    print(f"{'arm':22s} {'n train':>7s} {'Dice Ant':>9s} {'Dice Post':>9s} {'mean':>7s}")
    rows = [("supervised 10 %", state["rounds"]["0"])]
    rows += [(f"SamDSK round {r}", state["rounds"][r]) for r in sorted(state["rounds"], key=int)[1:]
             if "evaluation" in state["rounds"][r]]
    for name, summary in rows:
        mean = summary["evaluation"]["mean"]
        d = [mean[c]["dice"] for c in CLASSES]
        print(f"{name:22s} {'':>7s} {d[0]:9.4f} {d[1]:9.4f} {np.mean(d):7.4f}")
    for name, res in results.items():
        d = [res["mean"][c]["dice"] for c in CLASSES]
        print(f"{name:22s} {res['n_train']:7d} {d[0]:9.4f} {d[1]:9.4f} {np.mean(d):7.4f}")
    print(f"SamDSK run wall time: {samdsk_seconds / 60:.1f} min (stop: {state['stopped'] or 'rounds done'})")

    print("\nround  threshold  accepted/pool  exact  true Dice: accepted labels | their predictions | "
          "confidence-selected predictions")
    for r in sorted(state["rounds"], key=int)[1:]:
        s = state["rounds"][r]
        td = s.get("true_dice", {})
        cells = [f"{td[k]['mean']:.4f}" if k in td else "n/a" for k in
                 ("accepted_pseudo_labels", "accepted_predictions", "confidence_selected_predictions")]
        thr = "none" if s["threshold"] is None else f"{s['threshold']:.4f}"
        print(f"{r:>5s}  {thr:>9s}  {len(s['accepted']):>4d}/{s['n_pool']:<4d}  {s['exact_fraction']:5.2f}  "
              + " | ".join(cells))
    if args.solver_timing:
        solver_timing(args.out / "samdsk", loop.plans, args.solver_timing, args.brute_n, args.fast)


if __name__ == "__main__":
    sys.exit(main())
