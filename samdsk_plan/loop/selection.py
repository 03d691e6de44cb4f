"""Which matched cases join the training set: acceptance by beta, and its calibration.

The paper accepts an image when its matching score beta exceeds 0.9. How high beta gets
depends on the proposals (classical ones cap it well below SAM's), so the threshold is
calibrated per round on labelled validation cases, where the truth is known: each candidate
threshold ``b`` accepts the validation cases with ``beta >= b``; the chosen threshold is the
lowest ``b`` at which the accepted cases' pseudo-labels are, on average, at least as accurate
(mean Dice against the truth) as the model's own predictions on those same cases, and that
accepts at least ``min_accepted`` validation cases (the plan's ``calibration_min_cases``, 2: on
one case the comparison decides by chance: with 4 labelled hippocampus volumes and so one
validation case, it let through 23 pool labels worse than the predictions). When no threshold
qualifies nothing is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from samdsk_plan.matching import MatchSettings


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate_threshold`.

    Attributes:
        threshold: the chosen beta threshold (``inf``: accept nothing).
        curve: one row per candidate threshold (ascending): ``threshold``, ``n_accepted``,
            ``label_dice`` and ``prediction_dice`` (means over the accepted validation cases).
    """

    threshold: float
    curve: list[dict[str, float]]


def calibrate_threshold(
    betas: Sequence[float], label_dice: Sequence[float], prediction_dice: Sequence[float], min_accepted: int = 1
) -> Calibration:
    """The lowest beta threshold whose accepted validation labels beat the raw predictions.

    Args:
        betas: per validation case, its matching score.
        label_dice: per case, the true mean Dice of its matched pseudo-label.
        prediction_dice: per case, the true mean Dice of the model's prediction.
        min_accepted: thresholds accepting fewer validation cases than this are not chosen.
    """
    betas, label_dice, prediction_dice = (np.asarray(x, dtype=float) for x in (betas, label_dice, prediction_dice))
    if not betas.shape == label_dice.shape == prediction_dice.shape:
        raise ValueError("betas, label_dice and prediction_dice need one value per case each")
    curve = []
    chosen = math.inf
    for b in np.unique(betas):
        accepted = betas >= b
        row = {
            "threshold": float(b),
            "n_accepted": int(accepted.sum()),
            "label_dice": float(label_dice[accepted].mean()),
            "prediction_dice": float(prediction_dice[accepted].mean()),
        }
        curve.append(row)
        if math.isinf(chosen) and row["n_accepted"] >= min_accepted and row["label_dice"] >= row["prediction_dice"]:
            chosen = float(b)
    return Calibration(chosen, curve)


def select(scores: Mapping[str, float], threshold: float, cap: int | None = None) -> list[str]:
    """Case ids with ``score >= threshold``, highest first (ties by id), at most ``cap``."""
    passed = sorted((cid for cid, s in scores.items() if s >= threshold), key=lambda cid: (-scores[cid], cid))
    return passed if cap is None else passed[:cap]


def top_n(scores: Mapping[str, float], n: int) -> list[str]:
    """The ``n`` case ids with the highest score (ties by id): the same-size baseline selection."""
    return sorted(scores, key=lambda cid: (-scores[cid], cid))[:n]


def histogram(values: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Counts of ``values`` in equal bins over [0, 1]."""
    counts, edges = np.histogram(np.clip(np.asarray(values, dtype=float), 0, 1), bins=bins, range=(0.0, 1.0))
    return [
        {"from": float(a), "to": float(b), "count": int(c)}
        for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def floor_summary(floors: Sequence[float | None], settings: MatchSettings) -> dict:
    """The probability floors a round's cases were matched under: the rule of the plan's
    matching ``settings`` (``floor_rule``, ``prob_floor``, ``floor_margin``, defaults filled in)
    and the ``min`` / ``median`` / ``max`` of the cases' ``floors`` (None for cases whose records
    predate them; the three are None when no case has one)."""
    known = [f for f in floors if f is not None]
    out = {key: getattr(settings, key) for key in ("floor_rule", "prob_floor", "floor_margin")}
    stats = (min(known), float(np.median(known)), max(known)) if known else (None, None, None)
    return {**out, **dict(zip(("min", "median", "max"), stats, strict=True)), "n_cases": len(known)}


@dataclass(frozen=True)
class SourceChoice:
    """Result of :func:`choose_generator`.

    Attributes:
        generator: the chosen proposal generator (None: none gives validation labels at least as
            accurate as the predictions).
        threshold: its beta threshold (``inf`` when none is chosen).
        table: one row per candidate, in candidate order: ``generator``, ``threshold`` (None:
            none qualifies), ``n_accepted``, ``label_dice``, ``prediction_dice`` (means over its
            accepted validation cases, None when it accepts none), ``chosen``.
        calibrations: per candidate its threshold calibration (only when calibrated).
    """

    generator: str | None
    threshold: float
    table: list[dict]
    calibrations: dict[str, Calibration]


def choose_generator(
    candidates: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    threshold: float | None = None,
    min_accepted: int = 1,
) -> SourceChoice:
    """The proposal generator whose accepted validation labels are the most accurate, among those
    whose accepted labels are at least as accurate as the model's own predictions.

    Args:
        candidates: generator name -> per validation case its ``(betas, label_dice,
            prediction_dice)`` (as :func:`calibrate_threshold` takes them), in order of
            preference (cheaper first: a tie goes to the earlier one).
        threshold: a fixed beta threshold for every generator; None: each calibrates its own
            (:func:`calibrate_threshold`).
        min_accepted: a generator qualifies only when its threshold accepts at least this many
            validation cases (with one case, which generator wins is chance).
    """
    table, calibrations, best = [], {}, None
    for name, (betas, label_dice, prediction_dice) in candidates.items():
        betas, label_dice, prediction_dice = (np.asarray(x, dtype=float) for x in (betas, label_dice, prediction_dice))
        if threshold is None:
            calibrations[name] = calibrate_threshold(betas, label_dice, prediction_dice, min_accepted)
            chosen = calibrations[name].threshold
        else:
            chosen = threshold
        accepted = betas >= chosen
        row = {
            "generator": name,
            "threshold": float(chosen) if np.isfinite(chosen) else None,
            "n_accepted": int(accepted.sum()),
            "label_dice": float(label_dice[accepted].mean()) if accepted.any() else None,
            "prediction_dice": float(prediction_dice[accepted].mean()) if accepted.any() else None,
            "chosen": False,
        }
        table.append(row)
        qualifies = row["n_accepted"] >= max(min_accepted, 1) and row["label_dice"] >= row["prediction_dice"]
        if qualifies and (best is None or row["label_dice"] > best["label_dice"]):
            best = row
    if best is None:
        return SourceChoice(None, math.inf, table, calibrations)
    best["chosen"] = True
    return SourceChoice(best["generator"], float(best["threshold"]), table, calibrations)
