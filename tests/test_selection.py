"""Acceptance by beta: threshold calibration, selection with a cap, histogram."""

import math

import pytest

from samdsk_plan.loop.selection import calibrate_threshold, choose_generator, floor_summary, histogram, select, top_n


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


def test_the_generator_whose_validation_labels_are_most_accurate_is_chosen():
    # five validation cases; the predictions score 0.80 each
    betas = [0.5, 0.6, 0.7, 0.8, 0.9]
    prediction = [0.80] * 5
    candidates = {
        "classical": (betas, [0.70, 0.72, 0.74, 0.76, 0.78], prediction),  # never beats the prediction
        "litemedsam": (betas, [0.40, 0.80, 0.88, 0.90, 0.92], prediction),  # from beta 0.6: mean 0.875
        "union": (betas, [0.60, 0.79, 0.81, 0.82, 0.83], prediction),  # from beta 0.6: mean 0.8125
    }
    choice = choose_generator(candidates)
    assert (choice.generator, choice.threshold) == ("litemedsam", 0.6)
    rows = {r["generator"]: r for r in choice.table}
    assert rows["classical"]["threshold"] is None and rows["classical"]["n_accepted"] == 0
    assert rows["litemedsam"]["label_dice"] == pytest.approx(0.875) and rows["litemedsam"]["chosen"]
    assert rows["union"]["threshold"] == 0.6 and rows["union"]["label_dice"] == pytest.approx(0.8125)
    assert set(choice.calibrations) == set(candidates)
    # a fixed threshold: each generator judged on the cases it accepts there
    fixed = choose_generator(candidates, threshold=0.85)
    assert fixed.generator == "litemedsam" and fixed.threshold == 0.85 and fixed.calibrations == {}


def test_no_generator_qualifies_and_ties_go_to_the_cheaper():
    betas, prediction = [0.5, 0.9], [0.9, 0.9]
    worse = {"classical": (betas, [0.5, 0.6], prediction), "litemedsam": (betas, [0.4, 0.8], prediction)}
    choice = choose_generator(worse)
    assert choice.generator is None and choice.threshold == float("inf") and not any(r["chosen"] for r in choice.table)
    tie = {"classical": (betas, [0.5, 0.95], prediction), "union": (betas, [0.5, 0.95], prediction)}
    assert choose_generator(tie).generator == "classical"


def test_a_generator_winning_on_a_single_validation_case_is_not_trusted():
    prediction = [0.8] * 3
    candidates = {
        # its labels beat the predictions only on the highest-beta case (0.95); from two cases on, never
        "classical": ([0.9, 0.2, 0.1], [0.95, 0.5, 0.5], prediction),
        # from beta 0.8 its two accepted labels average 0.875
        "litemedsam": ([0.9, 0.8, 0.1], [0.9, 0.85, 0.3], prediction),
    }
    one = choose_generator(candidates)
    assert (one.generator, one.threshold) == ("classical", 0.9)
    two = choose_generator(candidates, min_accepted=2)
    assert (two.generator, two.threshold) == ("litemedsam", 0.8)
    assert two.table[0]["threshold"] is None and two.table[1]["label_dice"] == pytest.approx(0.875)
    # a fixed threshold of 0.85 passes one case of each: neither is trusted
    assert choose_generator(candidates, threshold=0.85, min_accepted=2).generator is None
    assert choose_generator({"litemedsam": ([0.9], [0.99], [0.8])}, min_accepted=2).generator is None


def test_run_summary_states_what_the_rounds_did():
    from samdsk_plan.loop.report import run_summary

    def ev(a: float, b: float) -> dict:
        return {"part": "test", "mean": {"a": {"dice": a}, "b": {"dice": b}}}

    rounds = {
        "0": {"evaluation": ev(0.70, 0.80)},
        "1": {
            "generator": "union",
            "accepted": ["x", "y"],
            "n_pool": 10,
            "true_dice": {"accepted_pseudo_labels": {"mean": 0.9}, "accepted_predictions": {"mean": 0.85}},
            "evaluation": ev(0.74, 0.82),
        },
        "2": {"generator": None, "accepted": [], "n_pool": 8},
    }
    text = run_summary(rounds, 5, "round 2 accepted no case").splitlines()
    assert text[0] == "round 0: 5 labelled training case(s); test Dice a 0.700, b 0.800 (mean 0.750)"
    assert text[1] == (
        "round 1: proposals from union; accepted 2 of 10 pool case(s); their pseudo-labels' true Dice 0.900, "
        "the model's predictions on the same cases 0.850"
    )
    assert text[2] == "round 1 retrained: test Dice a 0.740, b 0.820 (mean 0.780, +0.030 over round 0)"
    assert text[3].startswith("round 2: proposals from no generator (none beat the predictions")
    assert text[4] == "SamDSK added 2 pseudo-labelled case(s): mean test Dice 0.750 -> 0.780 (+0.030)"
    nothing = run_summary({"0": {"evaluation": ev(0.7, 0.8)}, "1": {"generator": "classical", "n_pool": 3}}, 5, "stop")
    assert nothing.splitlines()[-1] == "SamDSK added no case, so the final model is round 0's (stop)"


def test_the_report_states_the_floors_the_round_matched_under():
    from samdsk_plan.loop.report import report_markdown
    from samdsk_plan.matching import MatchSettings

    rule = MatchSettings(floor_rule="background", prob_floor=0.05, floor_margin=0.05)
    floors = floor_summary([0.30, None, 0.10, 0.08], rule)
    assert floors == {
        "floor_rule": "background",
        "prob_floor": 0.05,
        "floor_margin": 0.05,
        "min": 0.08,
        "median": 0.10,
        "max": 0.30,
        "n_cases": 3,
    }
    summary = {
        "round": 1,
        "n_pool": 4,
        "accepted": [],
        "generator": "litemedsam",
        "threshold": None,
        "threshold_source": "fixed",
        "exact_fraction": 1.0,
        "beta_histogram": [],
        "floor": floors,
    }
    assert "- matching floor: median 0.100 (0.080-0.300) over 3 case(s); per case 0.05 above" in report_markdown(
        summary
    )
    fixed = floor_summary([0.05, 0.05], MatchSettings(**{"metric": "iou", "prob_floor": 0.05}))  # an older plan's
    assert "- matching floor: 0.05 (fixed)" in report_markdown({**summary, "floor": fixed}).splitlines()
    assert "matching floor" not in report_markdown({k: v for k, v in summary.items() if k != "floor"})
    assert floor_summary([None], rule)["median"] is None
