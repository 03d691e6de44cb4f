"""Evaluation: how good matching could be (oracle scores against the ground truth), and the Dice of
label files the loop's round report gives."""

from samdsk_plan.evaluation.dice import case_dice, mean_case_dice
from samdsk_plan.evaluation.oracle import OracleRow, oracle_dice, oracle_table, summarise_oracle

__all__ = ["OracleRow", "case_dice", "mean_case_dice", "oracle_dice", "oracle_table", "summarise_oracle"]
