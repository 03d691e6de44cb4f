"""Evaluation: how good matching could be (oracle scores against the ground truth)."""

from samdsk_plan.evaluation.oracle import OracleRow, oracle_dice, oracle_table, summarise_oracle

__all__ = ["OracleRow", "oracle_dice", "oracle_table", "summarise_oracle"]
