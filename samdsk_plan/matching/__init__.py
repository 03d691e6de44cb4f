"""Matching: assign proposals to classes so that their unions best overlap the model's
probability maps under ROI-count bounds (pure numpy/scipy)."""

from samdsk_plan.matching.assign import (
    MatchSettings,
    SliceMatch,
    background_level,
    class_targets,
    match_slice,
    resolve_overlaps,
)
from samdsk_plan.matching.union import UnionResult, best_union, union_score
from samdsk_plan.matching.volume import VolumeMatch, match_volume

__all__ = [
    "MatchSettings",
    "SliceMatch",
    "UnionResult",
    "VolumeMatch",
    "background_level",
    "best_union",
    "class_targets",
    "match_slice",
    "match_volume",
    "resolve_overlaps",
    "union_score",
]
