"""The proposal-generator interface: one 2D slice in, a stack of candidate regions out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Proposals:
    """Candidate regions on one 2D slice.

    Attributes:
        masks: ``(N, H, W)`` bool, one candidate region per entry (they may overlap).
        scores: ``(N,)`` float32 in [0, 1], the generator's confidence in each region
            (SAM: predicted IoU; classical generators: 1).
    """

    masks: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(f"masks must be a (N, H, W) bool array, got {self.masks.dtype} {self.masks.shape}")
        if self.scores.shape != (self.masks.shape[0],):
            raise ValueError(f"scores must have shape ({self.masks.shape[0]},), got {self.scores.shape}")

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @staticmethod
    def empty(shape: tuple[int, int]) -> Proposals:
        return Proposals(np.zeros((0, *shape), dtype=bool), np.zeros(0, dtype=np.float32))


@runtime_checkable
class ProposalGenerator(Protocol):
    """Anything that turns a slice into :class:`Proposals`.

    ``name`` and ``settings()`` identify the output: two generators with equal name and
    settings must give equal proposals for equal slices (the cache relies on it).
    """

    name: str

    def settings(self) -> dict:
        """JSON-able description of everything that changes the output."""

    def __call__(self, image: np.ndarray) -> Proposals:
        """Proposals for ``image``: ``(H, W)`` float32 intensities already windowed to [0, 1]."""
