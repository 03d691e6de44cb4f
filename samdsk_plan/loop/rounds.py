"""The SamDSK loop: rounds of train -> predict -> propose/match -> accept, in a resumable run folder.

Run folder::

    RUN/state.json                 steps done and their seconds, settings, per-round summaries (:mod:`.state`)
    RUN/hidden_labels.json         the pool's hidden labels (case id -> path), if the datalist names them
    RUN/proposals/CASE.npz         image-only proposals (classical, SAM grid), shared by all rounds
    RUN/round_R/proposals/CASE.npz prompted proposals (LiteMedSAM), prompted by round R-1's model
    RUN/round_0/datalist.json      human training cases only
    RUN/round_0/models/model.pt    round 0 model; round_0/eval/metrics.json its evaluation
    RUN/round_R/predictions/{pool,val}/   softmax maps of round R-1's model
    RUN/round_R/matches/{pool,val}/CASE.{nii.gz|png,json}   candidate pseudo-labels and records
    RUN/round_R/matches/val/GENERATOR/...   with --generator auto: each candidate's validation matches
    RUN/round_R/matches/generator.json      with --generator auto: the comparison and the choice
    RUN/round_R/datalist.json      human + accepted machine labels, each with provenance
    RUN/round_R/report.{json,md}   accepted cases, beta histogram, calibration, true Dice (:mod:`.report`)
    RUN/round_R/models, eval       the retrained model and its evaluation

Every step is recorded in ``state.json`` only after its outputs are complete; a step that was
interrupted is redone from its start (matching resumes per case), so killing the loop at any
moment and starting it again continues where it stopped. Pseudo-labels live only in the run
folder: the dataset is read, never written.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from samdsk_plan.bundle import ids
from samdsk_plan.errors import SamdskError
from samdsk_plan.evaluation import case_dice, mean_case_dice
from samdsk_plan.io.atomic import atomic_write_json, atomic_write_text
from samdsk_plan.io.datalists import PART_TEST, PART_TRAIN, PART_UNLABELLED, PART_VAL, datalist_files, prediction_file
from samdsk_plan.io.layouts import entry_case_id, read_json_object
from samdsk_plan.io.preflight import require_device, require_disjoint, require_readable
from samdsk_plan.loop.bundle_runner import BundleRunner
from samdsk_plan.loop.lock import RunLock
from samdsk_plan.loop.pseudolabel import MatchRecord, match_entries, with_accepted
from samdsk_plan.loop.report import report_markdown, run_summary
from samdsk_plan.loop.selection import (
    calibrate_threshold,
    choose_generator,
    floor_summary,
    histogram,
    select,
    top_n,
)
from samdsk_plan.loop.shards import Shard
from samdsk_plan.loop.state import RunState, round0_trained
from samdsk_plan.matching import MatchSettings
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.pipeline import AUTO, AUTO_CANDIDATES, make_generators

logger = logging.getLogger(__name__)
RETRAIN_MODES = ("scratch", "finetune")


@dataclass(frozen=True)
class LoopSettings:
    """Settings of a loop run. ``None`` means: the plan's (``samdsk`` section) or the bundle's
    value. All but ``rounds`` and ``workers`` are fixed when the run folder is created.

    Attributes:
        rounds: SamDSK rounds after round 0 (None: until a round accepts nothing).
        epochs, iterations_per_epoch, batch_size, val_interval: training overrides.
        generator: ``"classical"``, ``"sam"``, ``"litemedsam"``, ``"union"`` or ``"auto"``
            (chosen each round on the validation cases among ``classical``, ``litemedsam`` and
            ``union``); None: the plan's. ``checkpoint`` / ``model_type`` for SAM;
            ``fast_proposals`` for the classical generator's fast mode.
        threshold: fixed beta threshold (disables calibration).
        max_accepted: most cases accepted per round (highest beta first).
        pseudo_label_weight: sampling weight of machine labels (the paper's lambda).
        retrain: ``"scratch"`` or ``"finetune"`` (start from the previous round's model).
        workers: processes for matching (one for a foundation-model generator).
        embedding_cache, embedding_cache_gb: LiteMedSAM's embedding cache folder and bound
            (None: ``$SAMDSK_EMBEDDING_CACHE`` or ``~/.cache/samdsk-plan/embeddings``; the plan's bound).
    """

    rounds: int | None = None
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    batch_size: int | None = None
    val_interval: int | None = None
    generator: str | None = None
    checkpoint: str | None = None
    model_type: str | None = None
    fast_proposals: bool = False
    threshold: float | None = None
    max_accepted: int | None = None
    pseudo_label_weight: float | None = None
    retrain: str | None = None
    workers: int = 1
    overrides: dict[str, str] = field(default_factory=dict)
    embedding_cache: str | None = None
    embedding_cache_gb: float | None = None

    def fixed(self) -> dict:
        """The settings a run folder is tied to (not those that change only speed)."""
        out = asdict(self)
        for key in ("rounds", "workers", "embedding_cache", "embedding_cache_gb"):
            out.pop(key)
        return out

    def check(self) -> None:
        """Numbers of the run that must be finite and in range, checked before anything runs."""
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise SamdskError(f"--threshold must be a number in [0, 1], got {self.threshold}")
        w = self.pseudo_label_weight
        if w is not None and not (np.isfinite(w) and w > 0):
            raise SamdskError(f"--pseudo-label-weight must be a finite number > 0, got {w}")


def _hidden_labels(datalist: Path | None, data: Path) -> dict[str, str]:
    """Case id -> hidden label path of the pool entries of a ``samdsk-plan split`` file."""
    if datalist is None:
        return {}
    meta = read_json_object(datalist)
    out = {}
    for key in ("unlabelled", "unlabeled"):  # a user's MONAI datalist may spell it the US way
        for entry in meta.get(key, []) if isinstance(meta.get(key), list) else []:
            if isinstance(entry, dict) and entry.get("hidden_label") and entry.get("image"):
                out[entry_case_id(entry)] = str((data / entry["hidden_label"]).resolve())
    return out


def validation_evidence(
    matches: Path, predictions: Path, entries: list[dict], classes: list[int]
) -> tuple[list[float], list[float], list[float]]:
    """Per validation case of ``entries`` (in id order): beta of its match record in
    ``matches``, true Dice (mean over ``classes``) of the matched label and of the prediction in
    ``predictions`` against the entry's label; what calibration and ``--generator auto`` weigh."""
    by_id = {entry_case_id(e): e for e in entries}
    cases = sorted(by_id)
    records = {c: MatchRecord(**read_json_object(matches / f"{c}.json")) for c in cases}
    label_dice = [mean_case_dice(records[c].label, by_id[c]["label"], classes) for c in cases]
    pred_dice = [mean_case_dice(prediction_file(predictions, by_id[c]), by_id[c]["label"], classes) for c in cases]
    return [records[c].beta for c in cases], label_dice, pred_dice


class Loop:
    """One run folder's loop (see the module docstring); :meth:`run` does the work."""

    def __init__(
        self,
        bundle: str | Path,
        data: str | Path,
        run_dir: str | Path,
        datalist: str | Path | None = None,
        settings: LoopSettings | None = None,
        device: str = "cpu",
        threads: int | None = None,
        progress: bool = True,
        log: Callable[[str], None] = logger.info,
        nproc: int = 1,
        shard: Shard | None = None,
        poll_seconds: float = 10.0,
    ) -> None:
        self.settings = settings or LoopSettings()
        self.shard = shard or Shard()
        self.poll_seconds = float(poll_seconds)
        self.bundle = Path(bundle).resolve()
        self.data = Path(data).resolve()
        self.datalist = Path(datalist).resolve() if datalist is not None else None
        self.run_dir = Path(run_dir).resolve()
        self.progress, self.log = progress, log
        plans_path = self.bundle / "configs" / "plans.json"
        if not plans_path.is_file():
            raise SamdskError(f"{self.bundle}: not a samdsk-plan bundle (no configs/plans.json)")
        if not self.data.is_dir():
            raise SamdskError(f"{self.data}: dataset folder not found")
        if self.run_dir == self.data or self.data in self.run_dir.parents:
            raise SamdskError(f"{self.run_dir}: the run folder must lie outside the dataset folder {self.data}")
        for what, path in (
            ("run folder", self.run_dir),
            ("bundle", self.bundle),
            ("dataset", self.data),
            ("datalist", self.datalist),
        ):
            if path is not None and "#" in str(path):
                raise SamdskError(
                    f"{path}: the {what} path holds '#', which MONAI's config parser reads as its "
                    "ID separator (the bundle would write elsewhere); rename or move it"
                )
        self.plans = Plans.load(plans_path)
        samdsk = self.plans.samdsk
        s = self.settings
        self.retrain = s.retrain or samdsk.retrain
        if self.retrain not in RETRAIN_MODES:
            raise SamdskError(f"retrain must be one of {', '.join(RETRAIN_MODES)}, got {self.retrain!r}")
        self.weight = samdsk.pseudo_label_weight if s.pseudo_label_weight is None else s.pseudo_label_weight
        self.calibrate = s.threshold is None and samdsk.calibrate_threshold
        self.min_cases = samdsk.calibration_min_cases
        self.threshold = s.threshold if s.threshold is not None else samdsk.acceptance_threshold
        self.max_accepted = s.max_accepted if s.max_accepted is not None else samdsk.max_accepted_per_round
        self.classes = samdsk.class_values
        self.runner = BundleRunner(self.bundle, self.data, device, s.overrides, threads, nproc)
        self.device = device
        self.auto = self._generator_kind() == AUTO
        self._generators: dict[str, dict] = {}
        s.check()
        if not round0_trained(self.run_dir / "state.json"):  # checked before the run folder is created
            require_device(device, nproc)
            for kind in self._kinds():  # a SAM checkpoint or LiteMedSAM loads now, not after round 0
                self._generators_of(kind)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.header = {
            "bundle": str(self.bundle),
            "data": str(self.data),
            "datalist": str(self.datalist) if self.datalist else None,
            "settings": s.fixed(),
        }
        if not self.shard.coordinator:  # a shard only reads the state the coordinator writes
            i, n = self.shard.index, self.shard.count
            self._lock = RunLock(self.run_dir, f".shard_{i}_of_{n}.lock", f"shard {i}/{n} of the run folder")
            return
        self._lock = RunLock(self.run_dir)
        self.state = RunState(self.run_dir / "state.json", self.header, log)

    # ------------------------------------------------------------------ steps
    def run(self) -> dict:
        """Run (or continue) the loop; returns the state's data. Ends by writing
        ``RUN/summary.md`` (:func:`~samdsk_plan.loop.report.run_summary`)."""
        try:
            if not self.shard.coordinator:
                return self._serve()
            state = self._run()
            atomic_write_text(self.run_dir / "summary.md", self.summary())
            return state
        finally:
            self.runner.close()
            self._lock.release()

    def summary(self) -> str:
        """What the run did, in a few lines (see :func:`~samdsk_plan.loop.report.run_summary`)."""
        n_labelled = len(self._datalist(0)["training"]) if (self._round_dir(0) / "datalist.json").is_file() else 0
        return run_summary(self.state.data["rounds"], n_labelled, self.state.data["stopped"])

    def _run(self) -> dict:
        self._step(0, "prepare", self._prepare)
        if self.settings.rounds != 0 and not self.state.done("1/predict"):
            self._require_validation()
        if not self.state.done("0/train"):
            self._check_inputs()
        self._step(0, "train", lambda: self._train(0))
        self._step(0, "evaluate", lambda: self._evaluate(0))
        r = 1
        while self.state.data["stopped"] is None:
            if self.settings.rounds is not None and r > self.settings.rounds:
                self.log(f"stopping: {self.settings.rounds} round(s) done")
                break
            if not self._datalist(r - 1)["unlabelled"] and not self.state.done(f"{r}/predict"):
                self._stop(f"round {r}: the unlabelled pool is empty")
                break
            self._step(r, "predict", partial(self._predict, r))
            self._step(r, "match", partial(self._match, r))
            self._step(r, "accept", partial(self._accept, r))
            if not self.state.round(r)["accepted"]:
                self._stop(f"round {r} accepted no case")
                break
            self._step(r, "train", partial(self._train, r))
            self._step(r, "evaluate", partial(self._evaluate, r))
            r += 1
        return self.state.data

    def _step(self, r: int, name: str, fn: Callable[[], None]) -> None:
        key = f"{r}/{name}"
        if self.state.done(key):
            return
        self.log(f"round {r}: {name}")
        start = time.perf_counter()
        fn()
        self.state.mark(key, time.perf_counter() - start)

    def _stop(self, reason: str) -> None:
        self.log(f"stopping: {reason}")
        self.state.data["stopped"] = reason
        self.state.save()

    def _round_dir(self, r: int) -> Path:
        return self.run_dir / f"round_{r}"

    def _datalist(self, r: int) -> dict:
        return read_json_object(self._round_dir(r) / "datalist.json")

    def _prepare(self) -> None:
        source = self.datalist if self.datalist is not None else self.data
        fraction = self.plans.training.val_fraction
        parts = {
            p: datalist_files(source, p, self.data, fraction, 0)
            for p in (PART_TRAIN, PART_VAL, PART_TEST, PART_UNLABELLED)
        }
        if not parts[PART_TRAIN]:
            raise SamdskError(f"{source}: no labelled training case")
        if not parts[PART_UNLABELLED]:
            raise SamdskError(f"{source}: no unlabelled case to pseudo-label")
        atomic_write_json(self.run_dir / "hidden_labels.json", _hidden_labels(self.datalist, self.data))
        atomic_write_json(
            self._round_dir(0) / "datalist.json",
            {
                "training": parts[PART_TRAIN],
                "validation": parts[PART_VAL],
                "testing": parts[PART_TEST],
                "unlabelled": parts[PART_UNLABELLED],
            },
        )

    def _require_validation(self) -> None:
        """Before the first round (and before round 0 trains): at least
        ``samdsk.calibration_min_cases`` labelled validation cases to calibrate the threshold on
        or, with ``--generator auto``, to choose the generator on."""
        source = self.datalist if self.datalist is not None else self.data
        n = len(self._datalist(0)["validation"])
        need = self.min_cases if self.calibrate or self.auto else 0
        if n >= need:
            return
        what = (
            "calibrate the acceptance threshold on"
            if self.calibrate
            else "choose the proposal generator on (--generator auto)"
        )
        fix = "give a fixed one with --threshold" if self.calibrate else "name one with --generator"
        if n == 0:
            raise SamdskError(f"{source}: no labelled validation case to {what}; {fix}")
        raise SamdskError(
            f"{source}: {n} labelled validation case(s) to {what}; a threshold is trusted only when at least "
            f"{need} validation cases pass it (plans samdsk.calibration_min_cases: one case's comparison decides "
            f"by chance): label more cases, raise training.val_fraction in the plans, or {fix}"
        )

    def _check_inputs(self) -> None:
        """Before round 0 trains: no image in two parts, and every image and label reads."""
        parts = self._datalist(0)
        require_disjoint(parts, self.datalist or self.data)
        files = []
        for entries in parts.values():
            for e in entries:
                files += e["image"] if isinstance(e["image"], list) else [e["image"]]
                files += [e[k] for k in ("label", "hidden_label") if e.get(k)]
        require_readable([str(self.data / f) for f in files], progress=self.progress)

    def _train(self, r: int) -> None:
        models = self._round_dir(r) / "models"
        shutil.rmtree(models, ignore_errors=True)
        s = self.settings
        args: dict[str, object] = {ids.DATALIST: self._round_dir(r) / "datalist.json", ids.CKPT_DIR: models}
        for key, value in (
            (ids.EPOCHS, s.epochs),
            (ids.ITERATIONS_PER_EPOCH, s.iterations_per_epoch),
            (ids.BATCH_SIZE, s.batch_size),
            (ids.VAL_INTERVAL, s.val_interval),
        ):
            if value is not None:
                args[key] = value
        if r > 0 and self.retrain == "finetune":
            args[ids.INIT_CHECKPOINT] = self._round_dir(r - 1) / "models" / "model.pt"
        self.runner.run(["train.json"], self._round_dir(r) / "logs" / "train.log", **args)
        if not (models / "model.pt").is_file():
            raise SamdskError(f"round {r}: training wrote no {models / 'model.pt'} (is val_interval <= epochs?)")

    def _evaluate(self, r: int) -> None:
        out = self._round_dir(r) / "eval"
        shutil.rmtree(out, ignore_errors=True)
        datalist = self._datalist(r)
        part = PART_TEST if datalist["testing"] else PART_VAL
        self.runner.run(
            ["train.json", "evaluate.json"],
            self._round_dir(r) / "logs" / "evaluate.log",
            **{
                ids.DATALIST: self._round_dir(r) / "datalist.json",
                ids.CKPT_DIR: self._round_dir(r) / "models",
                ids.OUTPUT_DIR: out,
                ids.DATA_PART: part,
            },
        )
        metrics = read_json_object(out / "metrics.json")
        summary = self.state.round(r)
        summary["evaluation"] = {"part": part, "mean": metrics["mean"]}
        self.state.save()

    def _pool_predictions(self, r: int, index: int | None = None) -> Path:
        """Round ``r``'s pool probabilities of shard ``index`` (default: this process's)."""
        index = self.shard.index if index is None else index
        pred = self._round_dir(r) / "predictions"
        return pred / "pool" if self.shard.count == 1 else pred / f"pool_{index}_of_{self.shard.count}"

    def _predict_part(self, r: int, part: str, datalist: Path, out: Path, log_name: str) -> None:
        self.runner.run(
            ["inference.json"],
            self._round_dir(r) / "logs" / log_name,
            **{
                ids.DATALIST: datalist,
                ids.CKPT_DIR: self._round_dir(r - 1) / "models",
                ids.DATA_PART: part,
                ids.OUTPUT_DIR: out,
                ids.SAVE_PROBABILITIES: True,
            },
        )

    def _predict_share(self, r: int, entries: list[dict]) -> None:
        """Predict ``entries`` of round ``r``'s pool (this shard's) into its pool folder."""
        i, n = self.shard.index, self.shard.count
        share = atomic_write_json(self._round_dir(r) / "shards" / f"{i}_of_{n}.json", {PART_UNLABELLED: entries})
        self._predict_part(r, PART_UNLABELLED, share, self._pool_predictions(r), f"predict_pool_{i}_of_{n}.log")

    def _predict(self, r: int) -> None:
        previous = self._round_dir(r - 1) / "datalist.json"
        if self._uses_validation():
            shutil.rmtree(self._round_dir(r) / "predictions" / "val", ignore_errors=True)
            self._predict_part(r, PART_VAL, previous, self._round_dir(r) / "predictions" / "val", "predict_val.log")
        shutil.rmtree(self._pool_predictions(r), ignore_errors=True)
        if self.shard.count == 1:
            self._predict_part(r, PART_UNLABELLED, previous, self._pool_predictions(r), "predict_unlabelled.log")
        else:
            self._predict_share(r, self.shard.of(self._datalist(r - 1)["unlabelled"]))

    def _generator_kind(self) -> str:
        return self.settings.generator or self.plans.samdsk.generator

    def _kinds(self) -> tuple[str, ...]:
        """The generators the run matches with: the auto candidates, or the one named."""
        return AUTO_CANDIDATES if self.auto else (self._generator_kind(),)

    def _uses_validation(self) -> bool:
        """Whether rounds predict and match the validation cases (to calibrate or to choose)."""
        return self.calibrate or self.auto

    def _match_workers(self, kind: str) -> int:
        """Matching processes: the settings', except one for a foundation model (each worker
        would hold its own copy of the network and fight over the cores)."""
        if self.settings.workers > 1 and kind != "classical":
            self.log(f"matching in one process: the {kind} generator runs a network")
            return 1
        return self.settings.workers

    def _generators_of(self, kind: str) -> dict:
        if kind not in self._generators:
            s = self.settings
            if kind == "classical":
                self.log("proposals: classical generator (no SAM checkpoint needed)")
            self._generators[kind] = make_generators(
                self.plans,
                kind,
                s.checkpoint,
                s.model_type,
                "cuda" if self.device.startswith("cuda") else "cpu",
                s.fast_proposals,
                embedding_cache=s.embedding_cache,
                embedding_cache_gb=s.embedding_cache_gb,
            )
        return self._generators[kind]

    def _match_part(self, r: int, part: str, entries: list[dict], kind: str, folder: Path) -> None:
        match_entries(
            entries,
            self._pool_predictions(r) if part == "pool" else self._round_dir(r) / "predictions" / part,
            folder,
            self.plans,
            self._generators_of(kind),
            self.run_dir / "proposals",
            workers=self._match_workers(kind),
            progress=self.progress,
            round_cache_dir=self._round_dir(r) / "proposals",
        )

    def _val_folder(self, r: int, kind: str) -> Path:
        matches = self._round_dir(r) / "matches" / "val"
        return matches / kind if self.auto else matches

    def _match(self, r: int) -> None:
        previous = self._datalist(r - 1)
        if self._uses_validation():
            for kind in self._kinds():
                self._match_part(r, "val", previous["validation"], kind, self._val_folder(r, kind))
        kind = self._generator_kind()
        if self.auto:
            kind = self._choose_generator(r)
        if kind is not None:
            pool = self._round_dir(r) / "matches" / "pool"
            self._match_part(r, "pool", self.shard.of(previous["unlabelled"]), kind, pool)
            self._wait_for_shards(r, previous["unlabelled"], pool)

    def _wait_for_shards(self, r: int, entries: list[dict], folder: Path) -> None:
        """Until every pool case of ``entries`` has its record in ``folder``: the other shards'
        work; says which shards are still missing whenever that changes."""
        owners = self.shard.owners(entries)
        said = None
        while missing := {c: k for c, k in owners.items() if not (folder / f"{c}.json").is_file()}:
            shards = sorted(set(missing.values()))
            message = (
                f"round {r}: waiting for shard(s) {', '.join(f'{k}/{self.shard.count}' for k in shards)} "
                f"({len(missing)} pool case(s) without a match record in {folder})"
            )
            if message != said:
                self.log(message)
                said = message
            time.sleep(self.poll_seconds)

    # ------------------------------------------------------------------ shards 1..N-1
    def _serve(self) -> dict:
        """Shard ``I/N`` with ``I > 0``: each round, once the coordinator (shard 0) has trained
        the model (and, with ``--generator auto``, chosen the generator), predict, propose and
        match this shard's share of the pool; until the run stops or has done its rounds.
        Returns the coordinator's state as last read."""
        path, said = self.run_dir / "state.json", None
        while True:
            data = read_json_object(path) if path.is_file() else None
            status = "waiting for the coordinator (shard 0) to start the run"
            if data is not None:
                if data.get("header") != self.header:
                    raise SamdskError(
                        f"{path}: the run folder was started with other settings than this shard's; give every "
                        "shard the same command line (but --shard)"
                    )
                done = set(data["done"])
                r = 1
                while f"{r}/accept" in done:
                    r += 1
                if data["stopped"] is not None or (self.settings.rounds is not None and r > self.settings.rounds):
                    self.log(f"shard {self.shard.name}: the run is over ({data['stopped'] or 'its rounds are done'})")
                    return data
                status = self._serve_round(r, done)
            if status is None:
                continue
            if status != said:
                self.log(f"shard {self.shard.name}: {status}")
                said = status
            time.sleep(self.poll_seconds)

    def _serve_round(self, r: int, done: set[str]) -> str | None:
        """This shard's work in round ``r``: None once done now, else what it waits for."""
        if f"{r - 1}/train" not in done:
            return f"round {r}: waiting for round {r - 1}'s model"
        kind = self._generator_kind()
        if self.auto:
            choice = self._round_dir(r) / "matches" / "generator.json"
            if not choice.is_file():
                return f"round {r}: waiting for the coordinator to choose the generator"
            kind = read_json_object(choice)["generator"]
            if kind is None:
                return f"round {r}: no generator beat the predictions; nothing to match"
        folder = self._round_dir(r) / "matches" / "pool"
        share = self.shard.of(self._datalist(r - 1)["unlabelled"])
        missing = [e for e in share if not (folder / f"{entry_case_id(e)}.json").is_file()]
        if not missing:
            return f"round {r}: this shard's {len(share)} pool case(s) are matched; waiting for the coordinator"
        self.log(f"shard {self.shard.name}: round {r}: predict and match {len(missing)} pool case(s)")
        self._predict_share(r, missing)
        self._match_part(r, "pool", missing, kind, folder)
        return None

    def _validation_evidence(self, r: int, kind: str) -> tuple[list[float], list[float], list[float]]:
        return validation_evidence(
            self._val_folder(r, kind),
            self._round_dir(r) / "predictions" / "val",
            self._datalist(r - 1)["validation"],
            self.classes,
        )

    def _choose_generator(self, r: int) -> str | None:
        """``--generator auto``: the candidate whose accepted validation labels are the most
        accurate (and at least as accurate as the predictions), written to ``matches/generator.json``."""
        choice = choose_generator(
            {kind: self._validation_evidence(r, kind) for kind in self._kinds()},
            None if self.calibrate else self.threshold,
            self.min_cases,
        )
        atomic_write_json(
            self._round_dir(r) / "matches" / "generator.json",
            {
                "generator": choice.generator,
                "threshold": choice.threshold if choice.generator else None,
                "candidates": choice.table,
                "calibration": choice.calibrations[choice.generator].curve
                if choice.generator in choice.calibrations
                else None,
            },
        )
        if choice.generator is None:
            self.log(f"round {r}: no proposal generator gives validation labels as accurate as the predictions")
        else:
            self.log(f"round {r}: proposals from {choice.generator} (the most accurate on the validation cases)")
        return choice.generator

    def _records_in(self, folder: Path, entries: list[dict]) -> dict[str, MatchRecord]:
        return {entry_case_id(e): MatchRecord(**read_json_object(folder / f"{entry_case_id(e)}.json")) for e in entries}

    def _accept(self, r: int) -> None:
        previous = self._datalist(r - 1)
        summary: dict = {"round": r}
        kind = self._generator_kind()
        if self.auto:
            selection = read_json_object(self._round_dir(r) / "matches" / "generator.json")
            kind = selection["generator"]
            summary["generator_selection"] = selection["candidates"]
        summary["generator"] = kind
        pool = {} if kind is None else self._records_in(self._round_dir(r) / "matches" / "pool", previous["unlabelled"])
        threshold, source = self.threshold, "fixed"
        if kind is None:
            threshold, source = math.inf, "no proposal generator beat the predictions on the validation cases"
        elif self.auto and self.calibrate:  # calibrated while choosing the generator (matches/generator.json)
            threshold, source = selection["threshold"], "calibrated on validation cases"
            summary["calibration"] = selection["calibration"]
        elif self.calibrate:
            cal = calibrate_threshold(*self._validation_evidence(r, kind), min_accepted=self.min_cases)
            threshold, source = cal.threshold, "calibrated on validation cases"
            if math.isinf(threshold):
                source = (
                    f"no threshold passes {self.min_cases} or more validation cases whose labels are as accurate "
                    "as the predictions"
                )
            summary["calibration"] = cal.curve
        accepted = select({c: rec.beta for c, rec in pool.items()}, threshold, self.max_accepted)
        summary.update(
            threshold=threshold if np.isfinite(threshold) else None,
            threshold_source=source,
            n_pool=len(previous["unlabelled"]),
            accepted=accepted,
            beta_histogram=histogram([rec.beta for rec in pool.values()]),
            exact_fraction=float(np.mean([rec.exact for rec in pool.values()])) if pool else 1.0,
            floor=floor_summary([rec.floor for rec in pool.values()], MatchSettings(**self.plans.samdsk.matching)),
        )
        summary.update(self._truth_report(r, pool, accepted))
        atomic_write_json(self._round_dir(r) / "datalist.json", with_accepted(previous, pool, accepted, r, self.weight))
        atomic_write_json(self._round_dir(r) / "report.json", summary)
        atomic_write_text(self._round_dir(r) / "report.md", report_markdown(summary))
        self.state.data["rounds"][str(r)] = {k: v for k, v in summary.items() if k != "calibration"}
        self.state.save()
        self.log(
            f"round {r}: accepted {len(accepted)} of {summary['n_pool']} case(s) (threshold {threshold:.3f}, {source})"
        )

    def _truth_report(self, r: int, pool: Mapping[str, MatchRecord], accepted: list[str]) -> dict:
        """True Dice of the accepted pseudo-labels, of the model's raw predictions on the same
        cases, and of the raw predictions of as many cases chosen by model confidence; over the
        pool cases whose hidden labels are known (a ``samdsk-plan split`` file)."""
        hidden = read_json_object(self.run_dir / "hidden_labels.json")
        known = {c: rec for c, rec in pool.items() if c in hidden}
        chosen = [c for c in accepted if c in hidden]
        if not chosen:
            return {}
        owners = self.shard.owners(self._datalist(r - 1)["unlabelled"])
        confident = top_n({c: rec.confidence for c, rec in known.items()}, len(chosen))

        def prediction(c: str) -> Path:
            return prediction_file(self._pool_predictions(r, owners[c]), {"image": known[c].image})

        def mean_over(cases: list[str], path_of: Callable[[str], Path | str]) -> dict[str, float]:
            per_case = [case_dice(path_of(c), hidden[c], self.classes) for c in cases]
            out = {str(k): float(np.mean([d[k] for d in per_case])) for k in self.classes}
            out["mean"] = float(np.mean([np.mean(list(d.values())) for d in per_case]))
            return out

        return {
            "true_dice": {
                "n_cases": len(chosen),
                "accepted_pseudo_labels": mean_over(chosen, lambda c: known[c].label),
                "accepted_predictions": mean_over(chosen, prediction),
                "confidence_selected_predictions": mean_over(confident, prediction),
            }
        }
