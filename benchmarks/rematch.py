"""Matching settings side by side on a finished SamDSK round: the same cached proposals and
probabilities, re-matched under each ``--variants`` entry, scored against the pool's hidden labels.

Reads a ``benchmarks/samdsk.py`` work folder (``--out`` of that script): per seed, the arm's
round-``--round`` predictions (``predictions/pool/CASE_prob.*``), its prompted proposals
(``proposals/CASE.npz``, the loop's round cache) and ``hidden_labels.json``; nothing is proposed,
trained or written. Per seed and variant it prints the mean true Dice of every pool label, of
the ``k`` labels with the highest beta (``k``: the images the round accepted under the run's
own settings) next to the model's predictions of those images, and the Spearman rank
correlation of beta with the labels' true Dice (how well beta would choose). A variant is
``TARGET:FLOOR`` (``soft:0.05``, ``hard:0.05``), ``FLOOR`` ``chance`` meaning ``1 / C`` and
``bg+M`` the floor that follows the model (``floor_rule`` ``"background"`` with margin ``M``: per
case, the largest over the foreground classes of the class's median probability on the pixels
predicted background, plus ``M``). A missing or unreadable file ends the run with its name;
nothing is written.

    .venv/bin/python benchmarks/rematch.py /tmp/bench/psfhs-i --variants soft:0.05,soft:chance,hard:0.05,soft:bg+0.05
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from samdsk_plan.errors import SamdskError
from samdsk_plan.evaluation.dice import dice_per_class
from samdsk_plan.io.datalists import read_probabilities
from samdsk_plan.io.images import read_image_or_fail
from samdsk_plan.io.layouts import read_json_object
from samdsk_plan.loop.pseudolabel import match_proposals
from samdsk_plan.matching import MatchSettings
from samdsk_plan.planning.plans import Plans
from samdsk_plan.proposals.cache import ProposalCache


def round_arguments(description: str, what: str) -> argparse.ArgumentParser:
    """The work folder, ``--arm`` and ``--round`` arguments of the scripts that read a finished
    round of a ``benchmarks/samdsk.py`` work folder (``what``: what they do with the arm)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("out", type=Path, help="a benchmarks/samdsk.py work folder")
    ap.add_argument("--arm", default="litemedsam", help=f"the SamDSK arm whose round is {what}")
    ap.add_argument("--round", type=int, default=1, dest="round_index")
    return ap


def finished_round(out: Path, arm: str, round_index: int) -> tuple[Plans, list[Path]]:
    """The work folder's plan and its seed folders whose ``arm`` has round ``round_index``; exits
    naming ``out`` when it has none."""
    plans_path = out / "bundle" / "configs" / "plans.json"
    seeds = sorted(p for p in out.glob("seed*") if (p / arm / f"round_{round_index}").is_dir())
    if not plans_path.is_file() or not seeds:
        sys.exit(f"{out}: no benchmarks/samdsk.py work folder with a round {round_index} of {arm}")
    return Plans.load(plans_path), seeds


def round_probabilities(round_dir: Path, case_id: str, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """The round's softmax maps of a pool case, ``(C, *shape)``; SamdskError naming the folder
    and the case when they are missing."""
    prob_file = next((round_dir / "predictions" / "pool").glob(f"{case_id}_prob.*"), None)
    if prob_file is None:
        raise SamdskError(f"{round_dir / 'predictions' / 'pool'}: no probabilities of case {case_id}")
    return read_probabilities(prob_file, shape, n_classes)


def variant_settings(variant: str, n_classes: int) -> MatchSettings:
    """``TARGET:FLOOR`` -> the IoU matching settings it names for softmax maps of ``n_classes``
    channels (``FLOOR`` ``chance``: ``1 / C``; ``bg+M``: see the module docstring)."""
    target, _, floor = variant.partition(":")
    if floor == "chance":
        return MatchSettings(target=target, prob_floor=1.0 / n_classes)
    if floor.startswith("bg+"):
        return MatchSettings(target=target, prob_floor=0.0, floor_rule="background", floor_margin=float(floor[3:]))
    return MatchSettings(target=target, prob_floor=float(floor))


def seed_rows(arm_dir: Path, round_index: int, plans: Plans, variants: list[str]) -> dict:
    """Per variant (and ``prediction``): per pool case its beta and per-class true Dice."""
    classes = plans.samdsk.class_values
    rdir = arm_dir / f"round_{round_index}"
    hidden = read_json_object(arm_dir / "hidden_labels.json")
    cache = ProposalCache(rdir / "proposals")
    rows: dict[str, list] = {v: [] for v in [*variants, "prediction"]}
    for case_id, truth in sorted(hidden.items()):
        truth_label = read_image_or_fail(truth).array
        probs = round_probabilities(rdir, case_id, truth_label.shape, plans.n_classes)
        proposals = cache.stored(case_id)
        for v in variants:
            match = match_proposals(probs, proposals, plans, settings=variant_settings(v, len(probs)))
            rows[v].append((case_id, match.beta, dice_per_class(match.label, truth_label, classes)))
        prediction = np.argmax(probs, axis=0)
        rows["prediction"].append((case_id, None, dice_per_class(prediction, truth_label, classes)))
    return rows


def summarise(rows: dict, k: int, names: dict[int, str]) -> list[str]:
    """One printed line per variant: all-pool and top-k label Dice, the predictions' on the top k, Spearman."""
    lines = []
    predicted = {case: np.mean(list(d.values())) for case, _, d in rows["prediction"]}
    for v, items in rows.items():
        if v == "prediction":
            continue
        betas = np.array([b for _, b, _ in items])
        per_class = {c: np.mean([d[c] for _, _, d in items]) for c in names}
        means = np.array([np.mean(list(d.values())) for _, _, d in items])
        top = np.argsort(-betas, kind="stable")[:k]
        rho = spearmanr(betas, means).statistic if np.ptp(betas) > 0 else float("nan")
        top_dice = means[top].mean() if k else float("nan")
        pred_top = np.mean([predicted[items[i][0]] for i in top]) if k else float("nan")
        classes = " ".join(f"{names[c][:12]} {per_class[c]:.3f}" for c in names)
        lines.append(
            f"  {v:<12} all {means.mean():.3f} ({classes}) | top {k:>2} by beta {top_dice:.3f}"
            f" vs predictions {pred_top:.3f} | Spearman {rho:.2f} | beta {np.median(betas):.2f} median"
        )
    return lines


def main() -> None:
    ap = round_arguments(__doc__.split("\n\n")[0], "re-matched")
    ap.add_argument("--variants", default="soft:0.05,soft:chance,hard:0.05", help="comma-separated TARGET:FLOOR")
    args = ap.parse_args()
    plans, seeds = finished_round(args.out, args.arm, args.round_index)
    variants = args.variants.split(",")
    try:
        for v in variants:
            variant_settings(v, plans.n_classes)
    except ValueError as error:
        sys.exit(f"--variants: {error}")
    names = {c.value: c.name for c in plans.samdsk.classes}
    print(f"{args.out} ({args.arm}, round {args.round_index}); the run's own matching: {plans.samdsk.matching}")
    try:
        for seed_dir in seeds:
            arm_dir = seed_dir / args.arm
            rounds = read_json_object(arm_dir / "state.json").get("rounds", {})
            k = len(rounds.get(str(args.round_index), {}).get("accepted", []))
            print(f"{seed_dir.name}: {k} accepted by the run", flush=True)
            for line in summarise(seed_rows(arm_dir, args.round_index, plans, variants), k, names):
                print(line, flush=True)
    except SamdskError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
