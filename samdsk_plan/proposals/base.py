"""The proposal-generator interfaces: one 2D slice in (and, for a prompted generator, the model's
probabilities on it), a stack of candidate regions out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Proposals:
    """Candidate regions on one 2D slice, or on a window of it.

    Attributes:
        masks: ``(N, h, w)`` bool, one candidate region per entry (they may overlap), on the
            window of the slice at ``offset`` (the whole slice by default).
        scores: ``(N,)`` float32 in [0, 1], the generator's confidence in each region
            (SAM, LiteMedSAM: predicted IoU; classical generators: 1).
        origins: ``(N, 2)`` int32, per region the foreground class and the index of the
            predicted region whose box prompted it (``(0, i)`` for the i-th box of a grid);
            None for generators that take no prompts.
        offset: ``(row, column)`` of the window's first pixel in the slice.
        frame: ``(H, W)`` of the slice; None: the window is the whole slice.
    """

    masks: np.ndarray
    scores: np.ndarray
    origins: np.ndarray | None = None
    offset: tuple[int, int] = (0, 0)
    frame: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(f"masks must be a (N, H, W) bool array, got {self.masks.dtype} {self.masks.shape}")
        if self.scores.shape != (self.masks.shape[0],):
            raise ValueError(f"scores must have shape ({self.masks.shape[0]},), got {self.scores.shape}")
        if self.origins is not None and self.origins.shape != (self.masks.shape[0], 2):
            raise ValueError(f"origins must have shape ({self.masks.shape[0]}, 2), got {self.origins.shape}")
        r, c = self.offset
        if self.frame is not None and not (
            r >= 0 and c >= 0 and r + self.masks.shape[1] <= self.frame[0] and c + self.masks.shape[2] <= self.frame[1]
        ):
            raise ValueError(f"a {self.masks.shape[1:]} window at {self.offset} does not fit a {self.frame} slice")

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the slice."""
        return tuple(self.frame) if self.frame is not None else tuple(self.masks.shape[1:])

    @property
    def window(self) -> tuple[slice, slice]:
        """Where the masks lie in the slice: ``slice_2d[proposals.window]`` has their shape."""
        (r, c), (h, w) = self.offset, self.masks.shape[1:]
        return slice(r, r + h), slice(c, c + w)

    def full_masks(self) -> np.ndarray:
        """``(N, H, W)`` bool masks on the whole slice."""
        if self.frame is None:
            return self.masks
        out = np.zeros((len(self), *self.shape), dtype=bool)
        out[(slice(None), *self.window)] = self.masks
        return out

    def in_window(self, offset: tuple[int, int], size: tuple[int, int]) -> Proposals:
        """The same regions on the window of ``size`` at ``offset``, which must contain theirs."""
        (r, c), (h, w) = offset, size
        dr, dc = self.offset[0] - r, self.offset[1] - c
        if dr < 0 or dc < 0 or dr + self.masks.shape[1] > h or dc + self.masks.shape[2] > w:
            raise ValueError(f"the window {size} at {offset} does not contain {self.masks.shape[1:]} at {self.offset}")
        masks = np.zeros((len(self), h, w), dtype=bool)
        masks[:, dr : dr + self.masks.shape[1], dc : dc + self.masks.shape[2]] = self.masks
        frame = self.shape if (offset, size) != ((0, 0), self.shape) else None
        return Proposals(masks, self.scores, self.origins, offset, frame)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @staticmethod
    def empty(shape: tuple[int, int]) -> Proposals:
        return Proposals(np.zeros((0, *shape), dtype=bool), np.zeros(0, dtype=np.float32))

    @staticmethod
    def prompted(masks: np.ndarray, scores: np.ndarray, origins: np.ndarray) -> Proposals:
        """The non-empty ones of ``(N, H, W)`` masks answering prompts (an empty mask proposes
        nothing), with their scores and ``(N, 2)`` origins."""
        keep = masks.reshape(len(masks), -1).any(axis=1)
        return Proposals(masks[keep], scores[keep].astype(np.float32), origins[keep].astype(np.int32))

    @staticmethod
    def none_prompted(shape: tuple[int, int]) -> Proposals:
        """No proposal on an ``(H, W)`` slice that had no prompt."""
        return Proposals(np.zeros((0, *shape), bool), np.zeros(0, np.float32), np.zeros((0, 2), np.int32))

    @staticmethod
    def concatenate(parts: list[Proposals]) -> Proposals:
        """The regions of ``parts`` (one slice) in order, on the smallest window holding all of
        theirs; origins kept where a part has them."""
        if len({p.shape for p in parts}) > 1:
            raise ValueError(f"proposals of one slice must share its shape, got {sorted({p.shape for p in parts})}")
        top = min(p.offset[0] for p in parts), min(p.offset[1] for p in parts)
        bottom = max(p.offset[0] + p.masks.shape[1] for p in parts), max(p.offset[1] + p.masks.shape[2] for p in parts)
        size = (bottom[0] - top[0], bottom[1] - top[1])
        parts = [p.in_window(top, size) for p in parts]
        if not any(p.origins is not None for p in parts):
            origins = None
        else:
            origins = np.concatenate(
                [p.origins if p.origins is not None else np.full((len(p), 2), -1, np.int32) for p in parts]
            ).astype(np.int32)
        return Proposals(
            np.concatenate([p.masks for p in parts]),
            np.concatenate([p.scores for p in parts]),
            origins,
            parts[0].offset,
            parts[0].frame,
        )


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


@runtime_checkable
class PromptedGenerator(Protocol):
    """A generator prompted by the model's prediction (LiteMedSAM, SAM with boxes): its output
    depends on the round's probabilities, so it is stored per round, not across rounds.

    ``name`` and ``settings()`` identify it as for :class:`ProposalGenerator`.
    """

    name: str
    prompted: bool  # True

    def settings(self) -> dict:
        """JSON-able description of everything, besides slice and probabilities, that changes the output."""

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> Proposals:
        """Proposals for ``image`` ``(H, W)`` in [0, 1] prompted by ``probs`` ``(C, H, W)``, the
        model's softmax probabilities on the same slice."""


def is_prompted(generator: object) -> bool:
    """Whether ``generator`` needs the model's probabilities (:class:`PromptedGenerator`)."""
    return bool(getattr(generator, "prompted", False))
