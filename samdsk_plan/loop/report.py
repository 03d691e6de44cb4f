"""A SamDSK round's human-readable report (``RUN/round_R/report.md``) from its summary
(``report.json``)."""

from __future__ import annotations


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report_markdown(summary: dict) -> str:
    """Markdown of a round summary: pool and acceptance, beta histogram, true Dice against the
    hidden labels (when known) and the threshold calibration (when calibrated)."""
    lines = [
        f"# SamDSK round {summary['round']}",
        "",
        f"- pool: {summary['n_pool']} case(s); accepted: {len(summary['accepted'])}",
        f"- proposals: {summary.get('generator') or 'none (no generator beat the predictions)'}",
        f"- threshold: {summary['threshold']} ({summary['threshold_source']})",
        f"- exact matchings: {100 * summary['exact_fraction']:.0f} % of cases",
        *_floor_lines(summary.get("floor")),
        "",
        "## beta histogram",
        "",
        "| beta | cases |",
        "|---|---|",
    ]
    lines += [f"| {b['from']:.1f}-{b['to']:.1f} | {b['count']} |" for b in summary["beta_histogram"]]
    if "true_dice" in summary:
        lines += ["", "## True Dice against the hidden labels", "", "| selection | mean Dice |", "|---|---|"]
        lines += [
            f"| {name.replace('_', ' ')} | {d['mean']:.4f} |"
            for name, d in summary["true_dice"].items()
            if name != "n_cases"
        ]
        lines += ["", f"(over the {summary['true_dice']['n_cases']} accepted case(s) whose hidden label is known)"]
    if "generator_selection" in summary:
        lines += [
            "",
            "## Proposal generator (validation cases, --generator auto)",
            "",
            "| generator | threshold | accepted | pseudo-label Dice | prediction Dice | chosen |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {c['generator']} | {_num(c['threshold'])} | {c['n_accepted']} | {_num(c['label_dice'])} | "
            f"{_num(c['prediction_dice'])} | {'yes' if c['chosen'] else ''} |"
            for c in summary["generator_selection"]
        ]
    if "calibration" in summary:
        lines += [
            "",
            "## Threshold calibration (validation cases)",
            "",
            "| threshold | accepted | pseudo-label Dice | prediction Dice |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c['threshold']:.4f} | {c['n_accepted']} | {c['label_dice']:.4f} | {c['prediction_dice']:.4f} |"
            for c in summary["calibration"]
        ]
    return "\n".join(lines) + "\n"


def _floor_lines(floor: dict | None) -> list[str]:
    """The report's line on the matching floor (none for summaries written before it was kept)."""
    if not floor:
        return []
    if floor["floor_rule"] == "fixed":
        return [f"- matching floor: {floor['prob_floor']} (fixed)"]
    rule = (
        f"per case {floor['floor_margin']} above the model's median foreground probability on its predicted "
        f"background, at least {floor['prob_floor']}"
    )
    if floor["median"] is None:
        return [f"- matching floor: {rule}"]
    return [
        f"- matching floor: median {floor['median']:.3f} ({floor['min']:.3f}-{floor['max']:.3f}) over "
        f"{floor['n_cases']} case(s); {rule}"
    ]


def _mean_dice(evaluation: dict) -> tuple[str, float | None]:
    """``"a 0.81, b 0.79"`` and the mean over classes of an evaluation's mean Dice."""
    dice = {name: v["dice"] for name, v in evaluation.get("mean", {}).items() if v.get("dice") is not None}
    text = ", ".join(f"{name} {d:.3f}" for name, d in dice.items())
    return text, (sum(dice.values()) / len(dice) if dice else None)


def run_summary(rounds: dict, n_labelled: int, stopped: str | None) -> str:
    """A few plain lines of what the run did: round 0's Dice, per round the proposal source, the
    cases accepted and (when the pool's labels are known) their true quality next to the model's
    predictions, the retrained model's Dice, and the change over round 0."""
    first = rounds.get("0", {}).get("evaluation", {})
    text, base = _mean_dice(first)
    part = first.get("part", "test")
    mean = f" (mean {base:.3f})" if text else ""
    lines = [f"round 0: {n_labelled} labelled training case(s); {part} Dice {text}{mean}"]
    final, added = base, 0
    for r in sorted((k for k in rounds if k != "0"), key=int):
        s = rounds[r]
        accepted = len(s.get("accepted", []))
        added += accepted
        source = s.get("generator") or "no generator (none beat the predictions on the validation cases)"
        line = f"round {r}: proposals from {source}; accepted {accepted} of {s.get('n_pool', 0)} pool case(s)"
        truth = s.get("true_dice")
        if truth:
            line += (
                f"; their pseudo-labels' true Dice {truth['accepted_pseudo_labels']['mean']:.3f}, the model's "
                f"predictions on the same cases {truth['accepted_predictions']['mean']:.3f}"
            )
        lines.append(line)
        if "evaluation" in s:
            text, final = _mean_dice(s["evaluation"])
            delta = f", {final - base:+.3f} over round 0" if final is not None and base is not None else ""
            lines.append(f"round {r} retrained: {part} Dice {text} (mean {final:.3f}{delta})")
    if added == 0:
        lines.append("SamDSK added no case, so the final model is round 0's" + (f" ({stopped})" if stopped else ""))
    elif final is not None and base is not None:
        lines.append(
            f"SamDSK added {added} pseudo-labelled case(s): mean {part} Dice {base:.3f} -> {final:.3f} "
            f"({final - base:+.3f})"
        )
    return "\n".join(lines) + "\n"
