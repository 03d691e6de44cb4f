"""Matching: assign proposals to classes so that their unions best overlap the model's
probability maps under ROI-count bounds (pure numpy/scipy)."""

from samdsk_plan.matching.assign import SliceMatch, class_targets, match_slice, resolve_overlaps
from samdsk_plan.matching.union import UnionResult, best_union, union_score

__all__ = ["SliceMatch", "UnionResult", "best_union", "class_targets", "match_slice", "resolve_overlaps",
           "union_score"]
