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
