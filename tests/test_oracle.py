"""Oracle Dice of proposals against ground truth, on synthetic masks with known answers."""

from itertools import combinations

import numpy as np
import pytest

from samdsk_plan.evaluation import oracle_dice, oracle_table, summarise_oracle


def box(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


SHAPE = (12, 16)
LEFT = box(SHAPE, (2, 5), (2, 5))  # 9 pixels
RIGHT = box(SHAPE, (2, 5), (10, 13))  # 9 pixels
BOTH = box(SHAPE, (2, 5), (2, 13))  # 33 pixels: both squares and the 15 between them
FAR = box(SHAPE, (8, 11), (0, 16))  # 48 pixels away from both


def test_two_squares_need_two_proposals():
    target = LEFT | RIGHT
    proposals = np.array([FAR, LEFT, BOTH, RIGHT])
    assert oracle_dice(proposals, target, 1) == pytest.approx(2 * 18 / (33 + 18))  # the joint box
    assert oracle_dice(proposals, target, 2) == 1.0  # the two squares
    assert oracle_dice(proposals, target, 3) == 1.0
    assert oracle_dice(proposals[[0, 1]], target, 2) == pytest.approx(2 * 9 / (9 + 18))


def test_empty_and_unreachable_targets():
    proposals = np.array([LEFT, RIGHT])
    assert oracle_dice(proposals, np.zeros(SHAPE, dtype=bool), 2) == 1.0  # choose nothing
    assert oracle_dice(proposals, FAR, 2) == 0.0
    assert oracle_dice(proposals, LEFT, 0) == 0.0
    assert oracle_dice(np.zeros((0, *SHAPE), dtype=bool), LEFT, 3) == 0.0


def test_is_the_best_union_of_at_most_k():
    rng = np.random.default_rng(0)
    for _ in range(30):
        proposals = rng.random((7, 5, 6)) < 0.3
        target = rng.random((5, 6)) < 0.4
        for k in (1, 2, 3):
            best = max(
                2
                * (proposals[list(s)].any(axis=0) & target).sum()
                / (proposals[list(s)].any(axis=0).sum() + target.sum())
                for j in range(1, k + 1)
                for s in combinations(range(7), j)
            )
            nothing = 0.0 if target.any() else 1.0  # the empty union
            assert oracle_dice(proposals, target, k) == pytest.approx(max(best, nothing), abs=1e-12)


def test_rejects_soft_targets():
    with pytest.raises(ValueError):
        oracle_dice(np.array([LEFT]), LEFT.astype(float), 1)


def test_table_along_an_axis():
    # class 1: the two squares on slices 1 and 2; class 2: the far box on slice 2 only
    labels = np.zeros((3, *SHAPE), dtype=np.uint8)
    labels[1][LEFT | RIGHT] = 1
    labels[2][LEFT | RIGHT] = 1
    labels[2][FAR] = 2
    proposals = [np.array([FAR]), np.array([LEFT, RIGHT, BOTH]), np.array([BOTH, FAR])]
    rows = oracle_table(labels, proposals, classes=[1, 2], ks=[1, 2], axis=0)
    assert len(rows) == 3 * 2 * 2
    dice = {(r.slice_index, r.label, r.k): r.dice for r in rows}
    joint = 2 * 18 / (33 + 18)
    assert dice[0, 1, 1] == dice[0, 2, 2] == 1.0  # absent classes: nothing chosen
    assert dice[1, 1, 1] == pytest.approx(joint) and dice[1, 1, 2] == 1.0
    assert dice[2, 1, 1] == dice[2, 1, 2] == pytest.approx(joint)
    assert dice[2, 2, 1] == 1.0
    assert all(r.exact for r in rows)

    summary = {(s["label"], s["k"]): s for s in summarise_oracle(rows)}
    assert summary[1, 2]["slices"] == 2
    assert summary[1, 2]["mean_dice"] == pytest.approx((1.0 + joint) / 2)
    # k = 2: overlaps 18 + 18, unions 18 + 33, targets 18 + 18
    assert summary[1, 2]["pooled_dice"] == pytest.approx(2 * 36 / (51 + 36))
    assert summary[2, 1] == {"label": 2, "k": 1, "slices": 1, "mean_dice": 1.0, "pooled_dice": 1.0, "exact": True}


def test_table_along_another_axis():
    labels = np.zeros((4, 3, 5), dtype=np.uint8)
    labels[1:3, :, 1:4] = 1  # a block: along axis 2, slices 1..3 hold a 2 x 3 rectangle
    proposals = [np.zeros((1, 4, 3), dtype=bool) for _ in range(5)]
    for index in (1, 2, 3):
        proposals[index][0, 1:3, :] = True  # the exact cross-section
    rows = oracle_table(labels, proposals, classes=[1], ks=[1], axis=2)
    assert [r.dice for r in rows] == [1.0] * 5
    assert [r.target_area for r in rows] == [0, 6, 6, 6, 0]
    with pytest.raises(ValueError):
        oracle_table(labels, proposals[:4], classes=[1], ks=[1], axis=2)
    with pytest.raises(ValueError):
        oracle_table(labels[0], proposals, classes=[1], ks=[1], axis=1)
