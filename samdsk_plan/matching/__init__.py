"""Matching: choose the proposals whose union best overlaps a class's probability map."""

from samdsk_plan.matching.union import UnionResult, best_union, union_score

__all__ = ["UnionResult", "best_union", "union_score"]
