"""Summaries that make up the fingerprint JSON: rounded floats, count and size distributions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIGNIFICANT_DIGITS = 9


def rnd(x: float) -> float:
    """Round to 9 significant digits so the JSON does not depend on summation order noise."""
    return float(f"{float(x):.{SIGNIFICANT_DIGITS}g}")


def rnd_list(values: Sequence[float]) -> list[float]:
    return [rnd(v) for v in values]


def count_summary(counts: Sequence[int] | np.ndarray) -> dict:
    """Distribution of a non-negative integer count (regions per case or per slice).

    Returns ``{"n", "histogram": {count: how often}, "min", "max", "mode", "p95", "mean"}``;
    ``p95`` is an observed value (inverted-CDF percentile), ``mode`` the smallest most
    frequent count. An empty input gives ``{"n": 0, "histogram": {}}``.
    """
    a = np.asarray(counts, dtype=np.int64)
    if a.size == 0:
        return {"n": 0, "histogram": {}}
    values, freq = np.unique(a, return_counts=True)
    return {
        "n": int(a.size),
        "histogram": {str(int(v)): int(f) for v, f in zip(values, freq, strict=True)},
        "min": int(values[0]),
        "max": int(values[-1]),
        "mode": int(values[np.argmax(freq)]),
        "p95": int(np.percentile(a, 95, method="inverted_cdf")),
        "mean": rnd(a.mean()),
    }


def value_summary(values: Sequence[float] | np.ndarray) -> dict:
    """``{"n", "min", "p05", "median", "mean", "p95", "max"}`` of a sample; ``{"n": 0}`` if empty."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    p05, med, p95 = np.percentile(a, [5, 50, 95])
    return {
        "n": int(a.size),
        "min": rnd(a.min()),
        "p05": rnd(p05),
        "median": rnd(med),
        "mean": rnd(a.mean()),
        "p95": rnd(p95),
        "max": rnd(a.max()),
    }


def intensity_summary(values: np.ndarray) -> dict:
    """nnU-Net's foreground intensity properties of a 1D sample (float64 arithmetic)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"n_voxels": 0}
    p005, med, p995 = np.percentile(a, [0.5, 50.0, 99.5])
    return {
        "n_voxels": int(a.size),
        "mean": rnd(a.mean()),
        "std": rnd(a.std()),
        "min": rnd(a.min()),
        "max": rnd(a.max()),
        "median": rnd(med),
        "percentile_00_5": rnd(p005),
        "percentile_99_5": rnd(p995),
    }


def axis_summary(rows: np.ndarray) -> dict:
    """Per-axis statistics of an ``(N, 3)`` array of spacings or shapes."""
    rows = np.asarray(rows, dtype=np.float64)
    out = {
        "min": rows.min(0),
        "p10": np.percentile(rows, 10, axis=0),
        "median": np.median(rows, axis=0),
        "p90": np.percentile(rows, 90, axis=0),
        "max": rows.max(0),
    }
    return {k: rnd_list(v) for k, v in out.items()}
