"""Proposal generators built on LiteMedSAM, and the union of a prompted and an image-only one.

* :class:`LiteMedSamGenerator` (prompted, the mode MedSAM-family models are trained for): for
  every predicted region of every foreground class of the slice, its bounding box and a few
  variants of it (:func:`~samdsk_plan.proposals.prompts.prompts_from_prediction`) are box prompts;
  every returned mask is a proposal, recorded with the class and region that prompted it.
* :class:`LiteMedSamGridGenerator` (automatic, no prediction needed): square boxes at the region
  sizes the fingerprint reports, tiling the slice.
* :class:`UnionGenerator`: a prompted generator's proposals followed by an image-only one's
  (``--generator union``: LiteMedSAM prompted plus the classical union).

Both LiteMedSAM generators encode a slice once and keep its embedding in an
:class:`~samdsk_plan.proposals.embeddings.EmbeddingCache`, so later rounds and runs only decode.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samdsk_plan.proposals.base import PromptedGenerator, ProposalGenerator, Proposals, is_prompted
from samdsk_plan.proposals.embeddings import EmbeddingCache
from samdsk_plan.proposals.litemedsam import EMBEDDING_SHAPE, PREPROCESSING_VERSION, LiteMedSam
from samdsk_plan.proposals.prompts import DEFAULT_RECIPE, BoxPrompt, PromptRecipe, grid_prompts


def embedding_cache_for(model: LiteMedSam, root, max_gb: float) -> EmbeddingCache:
    """The embedding cache of ``model`` under ``root`` bounded to ``max_gb`` GB."""
    identity = {"name": model.name, "weights": model.digest, "preprocessing": PREPROCESSING_VERSION}
    return EmbeddingCache(root, identity, max_gb, EMBEDDING_SHAPE)


class _LiteMedSamBase:
    """Encoding with the embedding cache, decoding prompts into proposals."""

    def __init__(self, model: LiteMedSam, cache: EmbeddingCache | None) -> None:
        self.model = model
        self.cache = cache

    def embedding(self, image: np.ndarray) -> np.ndarray:
        """The slice's embedding, from the cache or the encoder (then stored)."""
        found = self.cache.get(image) if self.cache is not None else None
        if found is not None:
            return found
        embedding = self.model.encode(image)
        if self.cache is not None:
            self.cache.put(image, embedding)
        return embedding

    def _decode(self, image: np.ndarray, prompts: list[BoxPrompt]) -> Proposals:
        if not prompts:
            return Proposals.none_prompted(image.shape)
        boxes = np.array([p.box for p in prompts], dtype=np.float32)
        masks, scores = self.model.decode(self.embedding(image), image.shape, boxes)
        origins = np.array([(p.label, p.region) for p in prompts], dtype=np.int32)
        return Proposals.prompted(masks, scores, origins)


class LiteMedSamGenerator(_LiteMedSamBase):
    """LiteMedSAM prompted with boxes around the model's predicted regions.

    Args:
        model: the network (:class:`~samdsk_plan.proposals.litemedsam.LiteMedSam`).
        cache: embedding cache (None: encode every call).
        recipe: which regions are prompted and with which box variants (the plan's
            ``samdsk.proposals.prompts`` and connectivity).
    """

    name = "litemedsam"
    prompted = True

    def __init__(
        self,
        model: LiteMedSam,
        cache: EmbeddingCache | None = None,
        recipe: PromptRecipe = DEFAULT_RECIPE,
    ) -> None:
        super().__init__(model, cache)
        self.recipe = recipe

    def settings(self) -> dict:
        return {"weights": self.model.digest, "preprocessing": PREPROCESSING_VERSION, **self.recipe.settings()}

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> Proposals:
        return self._decode(image, self.recipe.prompts(probs))


class LiteMedSamGridGenerator(_LiteMedSamBase):
    """LiteMedSAM prompted with a grid of square boxes of the sides ``sizes_px`` (the plan's
    region sizes for the slicing axis), for slices without a prediction."""

    name = "litemedsam_grid"
    prompted = False

    def __init__(
        self,
        model: LiteMedSam,
        sizes_px: Sequence[float],
        cache: EmbeddingCache | None = None,
        overlap: float = 0.5,
        max_boxes: int = 64,
    ) -> None:
        super().__init__(model, cache)
        self.sizes = [round(float(s), 3) for s in sizes_px]
        self.overlap, self.max_boxes = overlap, max_boxes

    def settings(self) -> dict:
        return {
            "weights": self.model.digest,
            "preprocessing": PREPROCESSING_VERSION,
            "sizes_px": self.sizes,
            "overlap": self.overlap,
            "max_boxes": self.max_boxes,
        }

    def __call__(self, image: np.ndarray) -> Proposals:
        return self._decode(image, grid_prompts(image.shape, self.sizes, self.overlap, self.max_boxes))


class UnionGenerator:
    """The proposals of a prompted generator followed by those of an image-only one; the loop
    stores the two parts apart (the image-only part across rounds, the prompted part per round)."""

    name = "union"
    prompted = True

    def __init__(self, prompted: PromptedGenerator, fixed: ProposalGenerator) -> None:
        if not is_prompted(prompted) or is_prompted(fixed):
            raise ValueError("a union takes one prompted and one image-only generator")
        self.parts = (prompted, fixed)

    def settings(self) -> dict:
        return {"parts": [{"name": g.name, "settings": g.settings()} for g in self.parts]}

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> Proposals:
        prompted, fixed = self.parts
        return Proposals.concatenate([prompted(image, probs), fixed(image)])
