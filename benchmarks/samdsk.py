"""SamDSK against supervised and self-training peers, over seeds: does the loop turn unlabelled
images into a better model, and with which proposal source?

One committed split per seed (``--splits``; by default ``benchmarks/splits/psfhs_1pct.json``,
``psfhs_1pct_seed1.json``, ``psfhs_1pct_seed2.json``: 1 % labelled, where the few-label model
falls 0.10 Dice short of the pool's true labels at this budget; 5 % and 2 % leave gaps under
0.03; hippocampus: ``hippocampus_4*.json``). The pool is the first ``--pool`` cases of the split's
hidden-label pool in its seeded order (the rule of ``samdsk-plan split --pool-size``, re-derived
with :func:`~samdsk_plan.io.splits.make_split` and checked against the committed file); the
loop keeps 20 % of the labelled cases for validation (model selection, the threshold's
calibration, the reference arm below). Every training has the same budget (``--iterations`` of
``--batch-size``, the slim network, from scratch, one torch thread) and every arm starts from the
same round-0 model:

- ``few``: supervised on the labelled cases (round 0 of the classical arm);
- ``pool-truth``: supervised on those plus the pool with its hidden labels: the ceiling of any
  pseudo-labelling of this pool; ``all``: plus every hidden label of the split (off by default);
- ``classical``, ``litemedsam``, ``union``: :class:`~samdsk_plan.loop.Loop` with that generator,
  the threshold calibrated on the validation cases, rounds until one accepts nothing (at most
  ``--rounds``); the union arm takes round 1's proposals from the other two arms' caches (same
  model, same probabilities, so the same proposals);
- ``self-training``: each round, the previous model's own predictions of the most confident pool
  cases (:func:`~samdsk_plan.loop.pseudolabel.confidence`) join the training set, as many as the
  reference SamDSK arm accepted that round; the reference is the arm ``--generator auto`` would
  have chosen on round 1's validation evidence (:func:`~samdsk_plan.loop.selection.choose_generator`).

Printed: per arm the test Dice and HD95 per class (mean and sd over seeds), the share of the
few -> pool-truth gap it closes, cases accepted per round, the true Dice of the accepted labels
next to the model's predictions of the same cases, the Spearman rank correlation of beta with the
true Dice of round 1's pool labels (of confidence with the predictions' for self-training), and
the wall time split into training, prediction, proposals, matching and test evaluation; last,
the best SamDSK arm against the issue's targets (the share of the gap, the margin over
self-training against its seed-sd) and the per-seed margin's sign and sd.
Everything is kept in ``--out`` (rerun to resume; ``results.json`` holds the numbers; a rerun with
other settings than ``setup.json`` records is refused). Training is deterministic on the CPU, so
the seeds' spread measures what each arm is trained on; ``--train-seed N`` trains every arm again
under the bundle's seed ``N``, another sample of the same comparison. ``--retrain finetune``
starts every training after round 0 from the previous model (the loop's ``retrain``), pool-truth
from the round-0 model, and adds ``few-continued``: the round-0 model trained on its own labels
as many more times as the reference SamDSK arm trained, the gap's low end at that budget.

    .venv/bin/python benchmarks/samdsk.py --out /tmp/samdsk-psfhs1 --pool 60 --rounds 1 --iterations 400 --batch-size 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import cache, partial
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from samdsk_plan.bundle import ids
from samdsk_plan.errors import SamdskError
from samdsk_plan.evaluation import case_dice
from samdsk_plan.io import load_dataset
from samdsk_plan.io.atomic import atomic_write_json
from samdsk_plan.io.datalists import PART_UNLABELLED, prediction_file, read_probabilities
from samdsk_plan.io.layouts import entry_case_id, read_json_object
from samdsk_plan.io.outputs import check_output
from samdsk_plan.io.splits import make_split
from samdsk_plan.loop import Loop, LoopSettings
from samdsk_plan.loop.bundle_runner import BundleRunner
from samdsk_plan.loop.pseudolabel import confidence
from samdsk_plan.loop.rounds import RETRAIN_MODES, validation_evidence
from samdsk_plan.loop.selection import choose_generator, top_n
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.pipeline import windowed_volume

sys.path.insert(0, str(Path(__file__).resolve().parent))
from supervised import FILTERS, ITERATIONS_PER_EPOCH, default_data, prepare_bundle

REPO = Path(__file__).resolve().parent.parent
SAMDSK_ARMS = ("classical", "litemedsam", "union")
ARMS = ("few", "few-continued", "pool-truth", "all", *SAMDSK_ARMS, "self-training")
DEFAULT_ARMS = ("few", "pool-truth", *SAMDSK_ARMS, "self-training")
DEFAULT_SPLITS = {
    "psfhs": ("psfhs_1pct.json", "psfhs_1pct_seed1.json", "psfhs_1pct_seed2.json"),
    "hippocampus": ("hippocampus_4.json", "hippocampus_4_seed1.json", "hippocampus_4_seed2.json"),
}


@dataclass(frozen=True)
class Setup:
    """What every job of the run shares (pickled into the worker processes)."""

    data: Path
    bundle: Path
    out: Path
    epochs: int
    batch_size: int
    val_interval: int
    filters: str
    pseudo_label_weight: float | None = None  # None: the plan's (0.5; the paper's lambda = 1)
    train_seed: int = 0  # the bundle's ``seed``: every training of the run starts from it
    retrain: str = "scratch"  # or "finetune": every training after round 0 starts from the previous model
    plan_sets: tuple[str, ...] = ()  # ``plan --set KEY=VALUE`` of the bundle (none: the committed one's plan)

    def machine_label_weight(self, plans: Plans) -> float:
        """The sampling weight of machine labels: ``pseudo_label_weight`` or the plan's."""
        return plans.samdsk.pseudo_label_weight if self.pseudo_label_weight is None else self.pseudo_label_weight

    def start_from(self, model: Path) -> Path | None:
        """Where a training after round 0 starts: ``model`` under ``finetune``, else None (scratch)."""
        return model if self.retrain == "finetune" else None

    def overrides(self) -> dict[str, str]:
        return {"network_def#filters": f"[{self.filters}]", "num_workers": "0", ids.SEED: str(self.train_seed)}

    def fixed(self, pool: int) -> dict:
        """What the work folder's results depend on (``setup.json``; a rerun must match it): every
        field but the folders the run writes, and the pool size."""
        out = {k: v for k, v in asdict(self).items() if k not in ("bundle", "out")}
        return {**out, "data": str(self.data), "pool": pool, "plan_sets": list(self.plan_sets)}

    def settings(self, generator: str, rounds: int) -> LoopSettings:
        return LoopSettings(
            rounds=rounds,
            epochs=self.epochs,
            iterations_per_epoch=ITERATIONS_PER_EPOCH,
            batch_size=self.batch_size,
            val_interval=self.val_interval,
            generator=generator,
            pseudo_label_weight=self.pseudo_label_weight,
            retrain=self.retrain,
            overrides=self.overrides(),
            embedding_cache=str(self.out / "embeddings"),
        )

    def runner(self) -> BundleRunner:
        """This process's runner of the setup's bundle (one warm-start server per worker)."""
        return _runner(self)

    def train_args(self) -> dict[str, object]:
        return {
            ids.EPOCHS: self.epochs,
            ids.ITERATIONS_PER_EPOCH: ITERATIONS_PER_EPOCH,
            ids.BATCH_SIZE: self.batch_size,
            ids.VAL_INTERVAL: self.val_interval,
        }


@cache
def _runner(setup: Setup) -> BundleRunner:
    return BundleRunner(setup.bundle, setup.data, "cpu", setup.overrides(), threads=1)


def say(seed_dir: Path, arm: str) -> Callable[[str], None]:
    """A log function: one progress line per step on stdout, prefixed with the seed and arm."""
    return lambda message: print(f"[{time.strftime('%H:%M:%S')}] {seed_dir.name} {arm}: {message}", flush=True)


# ---------------------------------------------------------------------------------- the jobs
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # LiteMedSAM runs in the job's process; bundle runs get one thread too


def loop_job(setup: Setup, seed_dir: Path, arm: str, rounds: int) -> None:
    """Run (or continue) the SamDSK arm ``arm`` to ``rounds`` rounds. An arm other than
    classical starts from the classical arm's round 0 (copied); the union arm also from the
    litemedsam arm's round-1 predictions and the proposals of both arms' caches."""
    run = seed_dir / arm
    loop = Loop(
        setup.bundle,
        setup.data,
        run,
        seed_dir / "datalist.json",
        setup.settings(arm, rounds),
        threads=1,
        progress=False,
        log=say(seed_dir, arm),
    )
    if arm != "classical" and not loop.state.done("0/prepare"):
        base = seed_dir / "classical"
        shutil.copy(base / "hidden_labels.json", run / "hidden_labels.json")
        shutil.copytree(base / "round_0", run / "round_0")
        steps = ["0/prepare", "0/train", "0/evaluate"]
        lite = seed_dir / "litemedsam"
        if arm == "union" and (lite / "round_1" / "predictions").is_dir():  # absent: litemedsam was refused
            shutil.copytree(lite / "round_1" / "predictions", run / "round_1" / "predictions")
            shutil.copytree(lite / "round_1" / "proposals", run / "round_1" / "proposals")
            shutil.copytree(base / "proposals", run / "proposals")
            steps.append("1/predict")
        loop.state.data["rounds"]["0"] = read_json_object(base / "state.json")["rounds"]["0"]
        for step in steps:
            loop.state.mark(step)
    try:
        loop.run()
    except SamdskError as error:  # refused before its first round (too few validation cases): stays at round 0
        say(seed_dir, arm)(f"refused: {error}")
        loop.state.data["stopped"] = f"refused: {error}"
        loop.state.save()


def train_and_evaluate(
    setup: Setup, folder: Path, datalist: dict, log: Callable[[str], None], init: Path | None = None
) -> dict:
    """Train the bundle on ``datalist`` in ``folder`` (from the weights ``init`` if given, else
    from scratch) and evaluate it on the test cases; returns the seconds of both (kept in
    ``folder/seconds.json``, so a rerun skips the work)."""
    done = folder / "seconds.json"
    if done.is_file():
        return read_json_object(done)
    folder.mkdir(parents=True, exist_ok=True)
    path = atomic_write_json(folder / "datalist.json", datalist)
    runner, models = setup.runner(), folder / "models"
    start = time.perf_counter()
    log(f"train on {len(datalist['training'])} cases" + (f" from {init}" if init else ""))
    start_from = {ids.INIT_CHECKPOINT: init} if init else {}
    runner.run(
        ["train.json"],
        folder / "logs" / "train.log",
        **{ids.DATALIST: path, ids.CKPT_DIR: models, **start_from},
        **setup.train_args(),
    )
    trained = time.perf_counter()
    runner.run(
        ["train.json", "evaluate.json"],
        folder / "logs" / "evaluate.log",
        **{ids.DATALIST: path, ids.CKPT_DIR: models, ids.OUTPUT_DIR: folder / "eval", ids.DATA_PART: "test"},
    )
    seconds = {"train": trained - start, "evaluate": time.perf_counter() - trained}
    atomic_write_json(done, seconds)
    return seconds


def round0_model(seed_dir: Path) -> Path:
    """The round-0 model every arm of a seed shares (the classical arm's)."""
    return seed_dir / "classical" / "round_0" / "models" / "model.pt"


def supervised_job(setup: Setup, seed_dir: Path, arm: str) -> None:
    """``pool-truth`` or ``all``: the labelled cases plus hidden labels, same validation cases
    as the loop arms (taken from the classical arm's round 0); under ``--retrain finetune`` one
    training from the round-0 model (the budget of one round)."""
    r0 = read_json_object(seed_dir / "classical" / "round_0" / "datalist.json")
    split = read_json_object(seed_dir / "split.json")
    pool = read_json_object(seed_dir / "datalist.json")["unlabelled"] if arm == "pool-truth" else split["unlabelled"]
    truth = [
        {"case_id": entry_case_id(e), "image": e["image"], "label": str(setup.data / e["hidden_label"])}
        for e in pool
        if e.get("hidden_label")
    ]
    datalist = {"training": r0["training"] + truth, "validation": r0["validation"], "testing": r0["testing"]}
    train_and_evaluate(setup, seed_dir / arm, datalist, say(seed_dir, arm), setup.start_from(round0_model(seed_dir)))


def continued_job(setup: Setup, seed_dir: Path, counts: list[int]) -> None:
    """``few-continued`` (``--retrain finetune`` only): the round-0 model trained on the
    labelled cases alone once per round the reference SamDSK arm added cases (``len(counts)``
    trainings, each from the previous one), so it has the SamDSK arm's budget without its
    labels. With nothing added it is the round-0 model. Each round is ``round_R``."""
    r0 = read_json_object(seed_dir / "classical" / "round_0" / "datalist.json")
    datalist = {k: r0[k] for k in ("training", "validation", "testing")}
    run, model = seed_dir / "few-continued", round0_model(seed_dir)
    for r in range(1, len(counts) + 1):
        train_and_evaluate(setup, run / f"round_{r}", datalist, say(seed_dir, f"few-continued r{r}"), model)
        model = run / f"round_{r}" / "models" / "model.pt"


def self_training_job(setup: Setup, seed_dir: Path, counts: list[int]) -> None:
    """Round r adds the ``counts[r-1]`` most confident remaining pool cases with the previous
    model's predicted labels (round 1: the shared round-0 model, the classical arm's), trained
    from scratch or, under ``--retrain finetune``, from the previous model. Each round writes
    ``round_R/summary.json``."""
    run, log = seed_dir / "self-training", say(seed_dir, "self-training")
    plans = Plans.load(setup.bundle / "configs" / "plans.json")
    weight = setup.machine_label_weight(plans)
    previous, models = seed_dir / "classical" / "round_0" / "datalist.json", round0_model(seed_dir).parent
    for r, n in enumerate(counts, 1):
        rdir = run / f"round_{r}"
        if not (rdir / "summary.json").is_file():
            start = time.perf_counter()
            preds = rdir / "predictions" / "pool"
            log(f"round {r}: predict")
            setup.runner().run(
                ["inference.json"],
                rdir / "logs" / "predict.log",
                **{
                    ids.DATALIST: previous,
                    ids.CKPT_DIR: models,
                    ids.DATA_PART: PART_UNLABELLED,
                    ids.OUTPUT_DIR: preds,
                    ids.SAVE_PROBABILITIES: True,
                },
            )
            predicted = time.perf_counter() - start
            datalist = read_json_object(previous)
            pool = {entry_case_id(e): e for e in datalist["unlabelled"]}
            scores = {}
            for cid, e in pool.items():
                shape = windowed_volume(e["image"], plans)[0].shape
                scores[cid] = confidence(read_probabilities(prediction_file(preds, e, "prob"), shape, plans.n_classes))
            chosen = top_n(scores, n)
            added = [
                {
                    "case_id": c,
                    "image": pool[c]["image"],
                    "label": str(prediction_file(preds, pool[c])),
                    "weight": weight,
                    "self_training": {"round": r, "confidence": scores[c]},
                }
                for c in chosen
            ]
            datalist = {
                **datalist,
                "training": datalist["training"] + added,
                "unlabelled": [e for c, e in pool.items() if c not in set(chosen)],
            }
            seconds = train_and_evaluate(setup, rdir, datalist, log, setup.start_from(models / "model.pt"))
            atomic_write_json(
                rdir / "summary.json",
                {
                    "accepted": chosen,
                    "confidence": scores,
                    "labels": {c: str(prediction_file(preds, e)) for c, e in pool.items()},
                    "seconds": {**seconds, "predict": predicted},
                },
            )
        previous, models = rdir / "datalist.json", rdir / "models"


@dataclass
class Job:
    """One unit of work: ``fn(*args)`` in a worker process once the jobs named in ``after`` are done."""

    name: str
    fn: Callable
    args: tuple
    after: tuple[str, ...] = ()
    late_args: Callable[[], tuple] | None = field(default=None, repr=False)


def run_jobs(jobs: list[Job], workers: int) -> None:
    """Run ``jobs`` in dependency order, ``workers`` at a time, earliest listed first; a failed job
    stops the run with its error."""
    pending, done, running = list(jobs), set(), {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        while pending or running:
            for job in [j for j in pending if set(j.after) <= done][: workers - len(running)]:
                pending.remove(job)
                args = job.args + (job.late_args() if job.late_args else ())
                running[pool.submit(job.fn, *args)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                future.result()
                done.add(job.name)


# ---------------------------------------------------------------------------- the evidence
def prepare_seed(setup: Setup, split_path: Path, pool_size: int) -> Path:
    """``OUT/seedS/{split,datalist}.json``: the committed split and the loop's datalist with its
    first ``pool_size`` pool cases (checked against a fresh :func:`make_split`)."""
    split = read_json_object(split_path)
    meta = split["split"]
    seed_dir = setup.out / f"seed{meta['seed']}"
    if (seed_dir / "datalist.json").is_file():
        return seed_dir
    fresh = make_split(
        load_dataset(setup.data), meta["labelled_fraction"], meta["test_fraction"], meta["seed"], pool_size
    )
    for part in ("training", "testing"):
        if [e["image"] for e in fresh[part]] != [e["image"] for e in split[part]]:
            sys.exit(f"{split_path}: its {part} cases are not what 'samdsk-plan split' makes of {setup.data} now")
    seed_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(seed_dir / "split.json", split)
    datalist = {"training": split["training"], "testing": split["testing"], "unlabelled": fresh["unlabelled"]}
    atomic_write_json(seed_dir / "datalist.json", datalist)
    return seed_dir


def reference_arm(seed_dir: Path, classes: list[int], min_cases: int) -> str | None:
    """The SamDSK arm ``--generator auto`` would choose on round 1's validation cases (a
    threshold passing at least ``min_cases`` of them, the plan's ``calibration_min_cases``)."""
    val = read_json_object(seed_dir / "classical" / "round_0" / "datalist.json")["validation"]
    evidence = {
        kind: validation_evidence(
            seed_dir / kind / "round_1" / "matches" / "val",
            seed_dir / kind / "round_1" / "predictions" / "val",
            val,
            classes,
        )
        for kind in SAMDSK_ARMS
        if (seed_dir / kind / "round_1" / "matches" / "val").is_dir()
    }
    return choose_generator(evidence, min_accepted=min_cases).generator


def accepted_counts(seed_dir: Path, arm: str | None) -> list[int]:
    """Cases ``arm`` accepted per round (rounds that accepted at least one)."""
    if arm is None:
        return []
    rounds = read_json_object(seed_dir / arm / "state.json")["rounds"]
    return [n for r in sorted(rounds, key=int)[1:] if (n := len(rounds[r].get("accepted", [])))]


def self_training_counts(seed_dir: Path, classes: list[int], min_cases: int) -> tuple[list[int]]:
    """The self-training job's late argument: the reference arm's counts (kept in ``self-training.json``)."""
    reference = reference_arm(seed_dir, classes, min_cases)
    counts = accepted_counts(seed_dir, reference)
    atomic_write_json(seed_dir / "self-training.json", {"reference": reference, "counts": counts})
    return (counts,)


def mean_metrics(metrics_file: Path) -> dict:
    return read_json_object(metrics_file)["mean"]


def spearman(x: list[float], y: list[float]) -> float | None:
    return float(spearmanr(x, y).statistic) if len(x) > 2 and np.ptp(x) > 0 and np.ptp(y) > 0 else None


def loop_arm_result(seed_dir: Path, arm: str, classes: list[int], hidden: dict[str, str]) -> dict:
    """Final test metrics, per-round acceptance and label quality, rank correlation and wall
    time of a SamDSK arm (its own rounds: round 0 is the ``few`` arm's)."""
    run = seed_dir / arm
    state = read_json_object(run / "state.json")
    rounds = state["rounds"]
    last = max((int(r) for r in rounds if "evaluation" in rounds[r]), default=0)
    per_round = []
    for r in sorted(rounds, key=int)[1:]:
        s = rounds[r]
        td = s.get("true_dice", {})
        per_round.append(
            {
                "accepted": len(s.get("accepted", [])),
                "threshold": s.get("threshold"),
                "label_dice": td.get("accepted_pseudo_labels", {}).get("mean"),
                "prediction_dice": td.get("accepted_predictions", {}).get("mean"),
            }
        )
    betas, dices = [], []
    for path in sorted((run / "round_1" / "matches" / "pool").glob("*.json")):
        rec = read_json_object(path)
        if rec["case_id"] in hidden:
            betas.append(rec["beta"])
            dices.append(float(np.mean(list(case_dice(rec["label"], hidden[rec["case_id"]], classes).values()))))
    seconds = {"train": 0.0, "predict": 0.0, "proposals": 0.0, "matching": 0.0, "evaluate": 0.0}
    for step, t in state.get("seconds", {}).items():
        r, name = step.split("/")
        if int(r) > 0 and name in seconds:
            seconds[name] += t
    for path in run.glob("round_*/matches/**/*.json"):
        rec = read_json_object(path)
        for key in ("proposals", "matching"):
            seconds[key] += rec.get("seconds", {}).get(key, 0.0)
    return {
        "metrics": rounds[str(last)]["evaluation"]["mean"],
        "n_train": len(read_json_object(run / f"round_{last}" / "datalist.json")["training"]),
        "rounds": per_round,
        "spearman": spearman(betas, dices),
        "seconds": seconds,
        "stopped": state["stopped"],
    }


def self_training_result(seed_dir: Path, classes: list[int], hidden: dict[str, str]) -> dict | None:
    run = seed_dir / "self-training"
    rounds = sorted(run.glob("round_*/summary.json"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not rounds:
        return None
    seconds = {"train": 0.0, "predict": 0.0, "evaluate": 0.0}
    per_round, rho = [], None
    for i, path in enumerate(rounds):
        s = read_json_object(path)
        for key in seconds:
            seconds[key] += s["seconds"][key]
        dice = {
            c: float(np.mean(list(case_dice(path, hidden[c], classes).values())))
            for c, path in s["labels"].items()
            if c in hidden
        }
        chosen = [c for c in s["accepted"] if c in dice]
        per_round.append(
            {
                "accepted": len(s["accepted"]),
                "label_dice": float(np.mean([dice[c] for c in chosen])) if chosen else None,
            }
        )
        if i == 0:
            cases = sorted(dice)
            rho = spearman([s["confidence"][c] for c in cases], [dice[c] for c in cases])
    last = rounds[-1].parent
    return {
        "metrics": mean_metrics(last / "eval" / "metrics.json"),
        "n_train": len(read_json_object(last / "datalist.json")["training"]),
        "rounds": per_round,
        "spearman": rho,
        "seconds": seconds,
    }


def collect(seed_dir: Path, arms: list[str], classes: list[int]) -> dict:
    """Per arm of one seed its results (see :func:`loop_arm_result`)."""
    hidden = read_json_object(seed_dir / "classical" / "hidden_labels.json")
    base = read_json_object(seed_dir / "classical" / "state.json")
    out = {
        "few": {
            "metrics": base["rounds"]["0"]["evaluation"]["mean"],
            "n_train": len(read_json_object(seed_dir / "classical" / "round_0" / "datalist.json")["training"]),
            "seconds": {k: base["seconds"].get(f"0/{k}", 0.0) for k in ("train", "evaluate")},
        }
    }
    for arm in arms:
        if arm in ("pool-truth", "all"):
            out[arm] = {
                "metrics": mean_metrics(seed_dir / arm / "eval" / "metrics.json"),
                "n_train": len(read_json_object(seed_dir / arm / "datalist.json")["training"]),
                "seconds": read_json_object(seed_dir / arm / "seconds.json"),
            }
        elif arm in SAMDSK_ARMS:
            out[arm] = loop_arm_result(seed_dir, arm, classes, hidden)
        elif arm == "few-continued":
            trained = sorted((seed_dir / arm).glob("round_*/seconds.json"), key=lambda p: int(p.parent.name[6:]))
            out[arm] = {**out["few"], "seconds": {"train": 0.0, "evaluate": 0.0}}  # nothing added: round 0
            if trained:
                out[arm]["metrics"] = mean_metrics(trained[-1].parent / "eval" / "metrics.json")
                for path in trained:
                    for key, t in read_json_object(path).items():
                        out[arm]["seconds"][key] += t
        elif arm == "self-training" and (seed_dir / "self-training.json").is_file():
            # with nothing to add (the reference accepted no case) self-training is the round-0 model
            result = self_training_result(seed_dir, classes, hidden) or {**out["few"], "rounds": [], "spearman": None}
            out[arm] = {**result, "reference": read_json_object(seed_dir / "self-training.json")["reference"]}
    return out


# ------------------------------------------------------------------------------- the tables
def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f}" + (f" ± {np.std(values, ddof=1):.{digits}f}" if len(values) > 1 else "")


def print_tables(results: dict[str, dict], names: dict[int, str], arms: list[str]) -> None:
    seeds = sorted(results)
    classes = list(names.values())
    order = [a for a in ARMS if a in arms or a == "few"]
    # the gap's low end: the few-label model at the other arms' budget (--retrain finetune) or round 0
    base = "few-continued" if all("few-continued" in results[s] for s in seeds) else "few"

    def dice(arm: str, seed: str) -> float | None:
        r = results[seed].get(arm)
        return None if r is None else float(np.mean([r["metrics"][c]["dice"] for c in classes]))

    head = "".join(f" {'Dice ' + c[:12]:>21}" for c in classes) + f" {'mean Dice':>17}"
    head += "".join(f" {'HD95 ' + c[:12]:>19}" for c in classes)
    print(f"\nTest metrics over {len(seeds)} seed(s) ({', '.join(seeds)}); mean ± sd over seeds\n")
    print(f"{'arm':<14} {'n train':>8}{head} {'gap closed':>10}")
    few = [dice(base, s) for s in seeds]
    ceiling = [dice("pool-truth", s) for s in seeds]
    for arm in order:
        have = [s for s in seeds if arm in results[s]]
        if not have:
            continue
        rows = [results[s][arm] for s in have]
        cells = "".join(f" {_ms([r['metrics'][c]['dice'] for r in rows]):>21}" for c in classes)
        cells += f" {_ms([dice(arm, s) for s in have]):>17}"
        cells += "".join(f" {_ms([r['metrics'][c]['hd95'] for r in rows], 2):>19}" for c in classes)
        gap = "-"
        ends = arm in ("few", base) or None in ceiling
        if not ends and len(have) == len(seeds) and np.mean(ceiling) > np.mean(few):
            closed = (np.mean([dice(arm, s) for s in seeds]) - np.mean(few)) / (np.mean(ceiling) - np.mean(few))
            gap = f"{100 * closed:.0f} %"
        print(f"{arm:<14} {np.mean([r['n_train'] for r in rows]):8.0f}{cells} {gap:>10}")

    print("\nPer seed and round: cases accepted, true Dice of the accepted labels | the model's predictions of them")
    for arm in [a for a in order if a in (*SAMDSK_ARMS, "self-training")]:
        for s in seeds:
            r = results[s].get(arm)
            if r is None:
                continue
            cells = []
            for i, rd in enumerate(r["rounds"], 1):
                q = "" if rd.get("label_dice") is None else f" {rd['label_dice']:.3f}"
                q += "" if rd.get("prediction_dice") is None else f" | {rd['prediction_dice']:.3f}"
                cells.append(f"r{i}: {rd['accepted']}{q}")
            extra = f" (as many as {r['reference'] or 'no arm: none accepted'})" if arm == "self-training" else ""
            if str(r.get("stopped") or "").startswith("refused"):
                extra += f" ({r['stopped']})"
            print(f"  {arm:<14} {s}: " + "; ".join(cells) + extra)

    print("\nSpearman rank correlation with the true Dice of round 1's pool labels (mean over seeds)")
    for arm in [a for a in order if a in (*SAMDSK_ARMS, "self-training")]:
        rho = [results[s][arm]["spearman"] for s in seeds if arm in results[s]]
        what = "confidence vs prediction Dice" if arm == "self-training" else "beta vs label Dice"
        print(f"  {arm:<14} {what:<30} {_ms(rho, 2)}")

    print("\nWall time per arm, minutes (sum over seeds; SamDSK arms: their own rounds, round 0 is few's)")
    keys = ("train", "predict", "proposals", "matching", "evaluate")
    print(f"  {'arm':<14}" + "".join(f" {k:>10}" for k in keys))
    for arm in order:
        rows = [results[s][arm]["seconds"] for s in seeds if arm in results[s]]
        if rows:
            print(f"  {arm:<14}" + "".join(f" {sum(r.get(k, 0.0) for r in rows) / 60:10.1f}" for k in keys))

    samdsk = [a for a in SAMDSK_ARMS if all(a in results[s] for s in seeds)]
    if samdsk and None not in ceiling and all("self-training" in results[s] for s in seeds):
        best = max(samdsk, key=lambda a: np.mean([dice(a, s) for s in seeds]))
        b = np.array([dice(best, s) for s in seeds])
        st = np.array([dice("self-training", s) for s in seeds])
        gap = np.mean(ceiling) - np.mean(few)
        closed = (
            f"closes {100 * np.mean(b - np.array(few)) / gap:.0f} % of the {base} -> pool-truth gap of {gap:+.4f} "
            "mean Dice (target >= 50 %)"
            if gap > 0
            else f"no {base} -> pool-truth gap to close ({gap:+.4f} mean Dice)"
        )
        sd, paired_sd = (np.std(st, ddof=1), np.std(b - st, ddof=1)) if len(seeds) > 1 else (np.nan, np.nan)
        print(
            f"\nbest SamDSK arm: {best}; {closed}; beats self-training by {np.mean(b - st):+.4f} mean Dice "
            f"(target > one seed-sd of self-training, {sd:.4f}); ahead on {int(np.sum(b > st))} of {len(seeds)} "
            f"seed(s), the per-seed difference's sd {paired_sd:.4f}"
        )


def machine() -> str:
    """The CPU and the vector kernels torch uses on it. The same training gives bit-identical weights
    on one kernel set but other weights on another (``ATEN_CPU_CAPABILITY=default`` against AVX2:
    0.015 apart after 20 Adam steps), so runs compare round for round only on the same kind of CPU."""
    import torch

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")
    return (
        f"{name} ({os.cpu_count()} CPUs), torch {torch.__version__} with "
        f"{torch.backends.cpu.get_cpu_capability()} kernels"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="psfhs", choices=tuple(DEFAULT_SPLITS))
    ap.add_argument("--data", type=Path, default=None, help="dataset folder (default: ../shared/data/DATASET)")
    ap.add_argument(
        "--splits", default=None, help="comma-separated split files, one per seed (default: the committed ones)"
    )
    ap.add_argument("--out", type=Path, required=True, help="work folder (reused: finished parts are kept)")
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--pool", type=int, default=60, help="pool cases per seed (the first of the split's seeded order)")
    ap.add_argument("--rounds", type=int, default=3, help="most SamDSK rounds (a round accepting nothing stops)")
    ap.add_argument("--iterations", type=int, default=400, help="training iterations per training")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--val-interval", type=int, default=4, help="validate every N epochs of 50 iterations")
    ap.add_argument("--filters", default=None, help="DynUNet filters (default: the slim network of the dataset)")
    ap.add_argument(
        "--pseudo-label-weight", type=float, default=None,
        help="sampling weight of machine labels, SamDSK and self-training alike (default: the plan's)",
    )  # fmt: skip
    ap.add_argument(
        "--train-seed", type=int, default=0,
        help="the bundle's training seed for every training (another value: another sample of each arm)",
    )  # fmt: skip
    ap.add_argument(
        "--retrain", default="scratch", choices=RETRAIN_MODES,
        help="each round's training from scratch, or from the previous model (then also the few-continued arm)",
    )  # fmt: skip
    ap.add_argument(
        "--plan-set", action="append", default=[], metavar="KEY=VALUE",
        help="a plan setting, as `samdsk-plan plan --set` (repeatable; the bundle is then planned from --data)",
    )  # fmt: skip
    ap.add_argument("-j", "--jobs", type=int, default=2, help="jobs side by side (one torch thread each)")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip() and a.strip() != "few"]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        sys.exit(f"unknown arm(s) {', '.join(unknown)}: choose from {', '.join(ARMS)}")
    try:  # the loop's own check of the weight, before any work
        LoopSettings(pseudo_label_weight=args.pseudo_label_weight).check()
    except SamdskError as error:
        sys.exit(str(error))
    if args.retrain == "finetune" and "few-continued" not in arms:
        arms.append("few-continued")  # the few-label end of the gap at the fine-tuned arms' budget
    if args.retrain == "scratch" and "few-continued" in arms:
        sys.exit("few-continued is the round-0 model fine-tuned on its own labels: it needs --retrain finetune")
    if "union" in arms and not {"litemedsam", "classical"} <= set(arms):
        sys.exit("the union arm reuses the litemedsam and classical arms' round-1 proposals: add both to --arms")
    data = (args.data or default_data(args.dataset)).resolve()
    splits = (
        [Path(p) for p in args.splits.split(",")]
        if args.splits
        else [REPO / "benchmarks" / "splits" / name for name in DEFAULT_SPLITS[args.dataset]]
    )
    missing = [str(p) for p in splits if not p.is_file()]
    if missing:
        sys.exit(f"split file(s) not found: {', '.join(missing)}")
    try:  # before any work: never into the input data, and writable
        check_output(args.out, folder=True, protected=[data], what="work folder (--out)")
    except SamdskError as error:
        sys.exit(str(error))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    epochs = max(1, args.iterations // ITERATIONS_PER_EPOCH)
    bundle = out / "bundle"
    setup = Setup(
        data, bundle, out, epochs, args.batch_size, min(args.val_interval, epochs),
        args.filters or FILTERS[args.dataset], args.pseudo_label_weight, args.train_seed, args.retrain,
        tuple(args.plan_set),
    )  # fmt: skip
    fixed, recorded = setup.fixed(args.pool), out / "setup.json"
    try:
        before = read_json_object(recorded) if recorded.is_file() else fixed
    except SamdskError as error:  # truncated or hand-edited: the folder's settings are unknown
        sys.exit(f"{error}; choose another --out")
    before.setdefault("plan_sets", [])  # folders from before --plan-set ran the plan's settings
    if before != fixed:
        changed = ", ".join(f"{k} {before.get(k)!r} -> {v!r}" for k, v in fixed.items() if before.get(k) != v)
        sys.exit(f"{out}: the work folder holds results of other settings ({changed}); choose another --out")
    if not bundle.is_dir():  # before the settings are recorded: a refused --plan-set leaves the folder reusable
        prepare_bundle(args.dataset, data, out, setup.plan_sets)
    atomic_write_json(recorded, fixed)
    plans = Plans.load(bundle / "configs" / "plans.json")
    print(
        f"{args.dataset}: {len(splits)} seed(s), pool {args.pool}, at most {args.rounds} round(s), "
        f"{epochs * ITERATIONS_PER_EPOCH} iterations of batch {args.batch_size} per training, filters "
        f"[{setup.filters}], machine-label weight {setup.machine_label_weight(plans):g}, training seed "
        f"{setup.train_seed}, retrain {setup.retrain}, "
        + "".join(f"plan --set {kv}, " for kv in setup.plan_sets)
        + f"{args.jobs} job(s) of one thread, CPU; work folder {out}",
        flush=True,
    )
    print(f"machine: {machine()}", flush=True)
    jobs, seed_dirs = [], []
    for split in splits:
        d = prepare_seed(setup, split, args.pool)
        seed_dirs.append(d)
        s = d.name
        jobs.append(Job(f"{s}/few", loop_job, (setup, d, "classical", 0)))
        jobs += [
            Job(f"{s}/{a}", supervised_job, (setup, d, a), (f"{s}/few",)) for a in ("pool-truth", "all") if a in arms
        ]
        for arm in [a for a in SAMDSK_ARMS if a in arms]:
            first = (f"{s}/few",) + ((f"{s}/litemedsam/1", f"{s}/classical/1") if arm == "union" else ())
            jobs.append(Job(f"{s}/{arm}/1", loop_job, (setup, d, arm, 1), first))
            if args.rounds > 1:
                jobs.append(Job(f"{s}/{arm}", loop_job, (setup, d, arm, args.rounds), (f"{s}/{arm}/1",)))
        last = tuple(f"{s}/{a}" + ("" if args.rounds > 1 else "/1") for a in SAMDSK_ARMS if a in arms)
        for arm, fn in (("self-training", self_training_job), ("few-continued", continued_job)):
            if arm in arms:  # as many rounds (and cases) as the reference SamDSK arm
                counts = partial(self_training_counts, d, plans.samdsk.class_values, plans.samdsk.calibration_min_cases)
                jobs.append(Job(f"{s}/{arm}", fn, (setup, d), last or (f"{s}/few",), late_args=counts))
    start = time.perf_counter()
    run_jobs(jobs, args.jobs)
    print(f"all jobs done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    results = {d.name: collect(d, arms, plans.samdsk.class_values) for d in seed_dirs}
    atomic_write_json(out / "results.json", results)
    print_tables(results, {v: n for v, n in plans.labels.items() if v}, arms)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
