"""The SamDSK loop: rounds of training, pseudo-labelling by optimal matching, and acceptance,
driven through the emitted bundle's configs in a resumable run folder."""

from samdsk_plan.loop.pseudolabel import MatchRecord, match_case, match_entries
from samdsk_plan.loop.rounds import Loop, LoopSettings
from samdsk_plan.loop.selection import Calibration, calibrate_threshold, select

__all__ = [
    "Calibration",
    "Loop",
    "LoopSettings",
    "MatchRecord",
    "calibrate_threshold",
    "match_case",
    "match_entries",
    "select",
]
