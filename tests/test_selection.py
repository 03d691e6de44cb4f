"""Acceptance by beta: threshold calibration, selection with a cap, histogram."""

import math

import pytest

from samdsk_plan.loop.selection import calibrate_threshold, histogram, select, top_n


def test_calibration_picks_the_lowest_threshold_whose_labels_beat_the_predictions():
    betas = [0.2, 0.5, 0.6, 0.8]
    label = [0.50, 0.70, 0.85, 0.90]
    pred = [0.80, 0.80, 0.80, 0.80]
    cal = calibrate_threshold(betas, label, pred)
    # >= 0.2: 0.7375 < 0.8; >= 0.5: 0.8167 >= 0.8 -> 0.5
    assert cal.threshold == 0.5
    assert [row["n_accepted"] for row in cal.curve] == [4, 3, 2, 1]
    assert cal.curve[0]["label_dice"] == pytest.approx(0.7375)
    assert cal.curve[1]["label_dice"] == pytest.approx((0.70 + 0.85 + 0.90) / 3)


def test_calibration_accepts_nothing_when_matching_never_helps():
    cal = calibrate_threshold([0.3, 0.9], [0.6, 0.7], [0.8, 0.8])
    assert math.isinf(cal.threshold)
    assert select({"a": 0.3, "b": 0.9}, cal.threshold) == []


def test_calibration_respects_a_minimum_number_of_accepted_cases():
    cal = calibrate_threshold([0.2, 0.9], [0.1, 0.95], [0.8, 0.8], min_accepted=2)
    assert math.isinf(cal.threshold)
    with pytest.raises(ValueError, match="one value per case"):
        calibrate_threshold([0.1], [0.1, 0.2], [0.3])


def test_select_orders_by_score_and_caps():
    scores = {"c": 0.7, "a": 0.9, "b": 0.9, "d": 0.2}
    assert select(scores, 0.5) == ["a", "b", "c"]
    assert select(scores, 0.5, cap=2) == ["a", "b"]
    assert top_n({"x": 0.1, "y": 0.3}, 1) == ["y"]


def test_histogram_counts_every_value_once():
    bins = histogram([0.0, 0.05, 0.55, 1.0], bins=10)
    assert [b["count"] for b in bins] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert bins[0]["from"] == 0.0 and bins[-1]["to"] == 1.0
