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
        scale: ``s >= 1``: each mask pixel stands for an ``s x s`` block of the window's pixels
            (a generator that segments a shrunk slice keeps its masks at that grid; matching
            on blocks has the same optimum as on their pixels, at ``s**2`` less cost).
        size: ``(h, w)`` pixels of the window when ``scale > 1`` (the masks are then
            ``(N, ceil(h / s), ceil(w / s))``, the last blocks cut by the window's edge);
            None: the masks' own shape.
    """

    masks: np.ndarray
    scores: np.ndarray
    origins: np.ndarray | None = None
    offset: tuple[int, int] = (0, 0)
    frame: tuple[int, int] | None = None
    scale: int = 1
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(f"masks must be a (N, H, W) bool array, got {self.masks.dtype} {self.masks.shape}")
        if self.scores.shape != (self.masks.shape[0],):
            raise ValueError(f"scores must have shape ({self.masks.shape[0]},), got {self.scores.shape}")
        if self.origins is not None and self.origins.shape != (self.masks.shape[0], 2):
            raise ValueError(f"origins must have shape ({self.masks.shape[0]}, 2), got {self.origins.shape}")
        if self.scale < 1 or (self.scale > 1) != (self.size is not None):
            raise ValueError(f"a window size is given exactly when the scale exceeds 1, got {self.scale}, {self.size}")
        if self.size is not None and tuple(self.masks.shape[1:]) != tuple(-(-n // self.scale) for n in self.size):
            raise ValueError(f"{self.masks.shape[1:]} masks of scale {self.scale} do not cover a {self.size} window")
        (r, c), (h, w) = self.offset, self.window_size
        if self.frame is not None and not (r >= 0 and c >= 0 and r + h <= self.frame[0] and c + w <= self.frame[1]):
            raise ValueError(f"a {(h, w)} window at {self.offset} does not fit a {self.frame} slice")

    @property
    def window_size(self) -> tuple[int, int]:
        """``(h, w)`` pixels of the window."""
        return tuple(self.size) if self.size is not None else tuple(self.masks.shape[1:])

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the slice."""
        return tuple(self.frame) if self.frame is not None else self.window_size

    @property
    def window(self) -> tuple[slice, slice]:
        """Where the masks lie in the slice: ``slice_2d[proposals.window]`` has the shape of
        :meth:`pixel_masks`."""
        (r, c), (h, w) = self.offset, self.window_size
        return slice(r, r + h), slice(c, c + w)

    def pixel_masks(self) -> np.ndarray:
        """``(N, h, w)`` bool masks on the window's pixels (the masks themselves at scale 1)."""
        if self.scale == 1:
            return self.masks
        (h, w), s = self.window_size, self.scale
        return self.masks[:, np.arange(h)[:, None] // s, np.arange(w)[None, :] // s]

    def full_masks(self) -> np.ndarray:
        """``(N, H, W)`` bool masks on the whole slice."""
        if self.frame is None:
            return self.pixel_masks()
        out = np.zeros((len(self), *self.shape), dtype=bool)
        out[(slice(None), *self.window)] = self.pixel_masks()
        return out

    def in_window(self, offset: tuple[int, int], size: tuple[int, int]) -> Proposals:
        """The same regions, at scale 1, on the window of ``size`` at ``offset``, which must
        contain theirs."""
        (r, c), (h, w), (mh, mw) = offset, size, self.window_size
        dr, dc = self.offset[0] - r, self.offset[1] - c
        if dr < 0 or dc < 0 or dr + mh > h or dc + mw > w:
            raise ValueError(f"the window {size} at {offset} does not contain {(mh, mw)} at {self.offset}")
        masks = np.zeros((len(self), h, w), dtype=bool)
        masks[:, dr : dr + mh, dc : dc + mw] = self.pixel_masks()
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
        theirs (at scale 1 unless all parts share one window and scale); origins kept where a
        part has them."""
        if len({p.shape for p in parts}) > 1:
            raise ValueError(f"proposals of one slice must share its shape, got {sorted({p.shape for p in parts})}")
        if len({(p.offset, p.window_size, p.scale) for p in parts}) > 1:  # else: one grid already
            top = min(p.offset[0] for p in parts), min(p.offset[1] for p in parts)
            bottom = (
                max(p.offset[0] + p.window_size[0] for p in parts),
                max(p.offset[1] + p.window_size[1] for p in parts),
            )
            parts = [p.in_window(top, (bottom[0] - top[0], bottom[1] - top[1])) for p in parts]
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
            parts[0].scale,
            parts[0].size,
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
