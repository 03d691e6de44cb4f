"""Dice of label files against a reference, per class, as the loop's round report uses it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samdsk_plan.io import read_image
from samdsk_plan.matching import union_score


def dice_per_class(label: np.ndarray, truth: np.ndarray, classes: Sequence[int]) -> dict[int, float]:
    """Per class ``c`` the Dice of ``label == c`` against ``truth == c`` (two label arrays of one
    shape); a class absent from both scores 1 (:func:`~samdsk_plan.matching.union_score`)."""
    label = np.asarray(label).astype(np.int64).ravel()
    truth = np.asarray(truth).astype(np.int64).ravel()
    return {c: union_score((label == c)[None], (truth == c).astype(float), [0], "dice") for c in classes}


def case_dice(label_path: str | Path, truth_path: str | Path, classes: Sequence[int]) -> dict[int, float]:
    """:func:`dice_per_class` of two label files of one grid."""
    return dice_per_class(read_image(label_path).array, read_image(truth_path).array, classes)


def mean_case_dice(label_path: str | Path, truth_path: str | Path, classes: Sequence[int]) -> float:
    """The mean over ``classes`` of :func:`case_dice`."""
    return float(np.mean(list(case_dice(label_path, truth_path, classes).values())))
