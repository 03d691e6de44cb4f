"""A round's pool split over processes or machines: ``samdsk-plan loop --shard I/N``.

As nnU-Net's ``-part_id`` / ``-num_parts``: the pool's cases, sorted by case id, are dealt out
in turn, case ``k`` to shard ``k mod N``, so every process sharing a run folder computes the same
split without talking to the others. Shard 0 is the coordinator (it trains, matches the
validation cases, chooses the generator and accepts); shards 1..N-1 only predict, propose and
match their share of each round's pool and write one record per case, atomically, into the
round's ``matches/pool``. The coordinator's accept step waits until every pool case has its
record, naming the shards still missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.layouts import entry_case_id


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise SamdskError(f"--shard needs 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (as SLURM's ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise SamdskError(f"--shard must be I/N with whole numbers, e.g. 0/4; got {text!r}")
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def coordinator(self) -> bool:
        return self.index == 0

    @property
    def name(self) -> str:
        return f"{self.index}/{self.count}"

    def of(self, entries: list[dict]) -> list[dict]:
        """This shard's share of ``entries`` (in case-id order)."""
        return sorted(entries, key=entry_case_id)[self.index :: self.count]

    def owners(self, entries: list[dict]) -> dict[str, int]:
        """Case id -> the shard that owns it, for every entry."""
        return {entry_case_id(e): k % self.count for k, e in enumerate(sorted(entries, key=entry_case_id))}
