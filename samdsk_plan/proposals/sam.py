"""Segment Anything as a proposal generator.

* :class:`SamGenerator` turns a windowed slice into :class:`~samdsk_plan.proposals.base.Proposals`
  with SAM's automatic mask generator (a point grid); :meth:`SamGenerator.generate_batch` runs
  the image encoder once per batch of slices.
* :class:`SamPromptedGenerator` prompts SAM (or MedSAM) through ``SamPredictor`` with a box
  around each predicted region (and its variants), and for SAM also a positive point at the
  region's most interior pixel; each of SAM's three multimask outputs is an alternative.

Checkpoints are found and loaded by :mod:`samdsk_plan.proposals.sam_checkpoint`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam

from samdsk_plan.proposals.base import Proposals
from samdsk_plan.proposals.prompts import DEFAULT_RECIPE, PromptRecipe, interior_point
from samdsk_plan.proposals.sam_checkpoint import load_identified, model_type_of


@dataclass(frozen=True)
class _Embedding:
    """A precomputed image embedding ``(1, C, h, w)`` with the resized (unpadded) and original
    ``(H, W)`` sizes of its slice, in px."""

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


class _EmbeddingPredictor(SamPredictor):
    """A SamPredictor whose ``set_image`` installs ``cached`` instead of running the encoder."""

    def __init__(self, model: Sam) -> None:
        super().__init__(model)
        self.cached: _Embedding | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        if self.cached is None:
            super().set_image(image, image_format)
            return
        if tuple(image.shape[:2]) != self.cached.original_size:
            raise RuntimeError(f"cached embedding is for a {self.cached.original_size} image, got {image.shape[:2]}")
        self.reset_image()
        self.features = self.cached.features
        self.input_size = self.cached.input_size
        self.original_size = self.cached.original_size
        self.is_image_set = True


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """An ``(I, J)`` slice in [0, 1] as the network sees it: ``(J, I, 3)`` uint8 grey RGB (rows
    ``y``, columns ``x``, as on screen; see :mod:`samdsk_plan.proposals.litemedsam` on why).
    Masks come back as ``(J, I)`` and are transposed to the slice."""
    if image.ndim != 2:
        raise ValueError(f"expected an (H, W) slice, got shape {image.shape}")
    grey = np.rint(np.clip(image.T, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


class SamGenerator:
    """Proposals from SAM's automatic mask generator (a point grid over the slice).

    Defaults are the SamDSK paper's thresholds. ``checkpoint_id`` identifies the weights in
    :meth:`settings` (use :func:`checkpoint_digest`). ``crop_n_layers > 0`` adds SAM's crop
    passes (then ``crop_nms_thresh`` applies and :meth:`generate_batch` encodes slice by slice).
    """

    name = "sam"

    def __init__(
        self,
        model: Sam,
        points_per_side: int = 32,
        pred_iou_thresh: float = 0.5,
        stability_score_thresh: float = 0.5,
        box_nms_thresh: float = 0.5,
        crop_nms_thresh: float = 0.5,
        points_per_batch: int = 64,
        checkpoint_id: str = "",
        crop_n_layers: int = 0,
    ) -> None:
        self.model = model
        self.points_per_side = points_per_side
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.box_nms_thresh = box_nms_thresh
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.checkpoint_id = checkpoint_id
        self._amg = SamAutomaticMaskGenerator(
            model,
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            output_mode="binary_mask",
        )
        self._predictor = _EmbeddingPredictor(model)
        self._amg.predictor = self._predictor

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike | None,
        model_type: str = "vit_b",
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> SamGenerator:
        """Load ``checkpoint`` (or ``$SAMDSK_SAM_CHECKPOINT``) and identify it by its digest."""
        model, digest = load_identified(checkpoint, model_type, device)
        return cls(model, checkpoint_id=digest, **options)

    def settings(self) -> dict:
        """Everything that changes the output (``points_per_batch`` does not)."""
        return {
            "checkpoint": self.checkpoint_id,
            "model_type": model_type_of(self.model),
            "points_per_side": self.points_per_side,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "box_nms_thresh": self.box_nms_thresh,
            "crop_n_layers": self.crop_n_layers,
            "crop_nms_thresh": self.crop_nms_thresh,
            "view": "transposed",
        }

    def __call__(self, image: np.ndarray) -> Proposals:
        """Proposals for an ``(H, W)`` slice in [0, 1]; highest predicted IoU first."""
        rgb = _to_rgb(image)
        return self._proposals(self._amg.generate(rgb), rgb.shape[:2])

    def generate_batch(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[Proposals]:
        """``[self(image) for image in images]``, encoding ``batch_size`` slices per encoder pass.

        Slices may differ in shape (each is resized and padded as SAM does).
        """
        if self.crop_n_layers > 0:  # every crop needs an embedding of its own
            return [self(image) for image in images]
        results = []
        for start in range(0, len(images), batch_size):
            rgbs = [_to_rgb(image) for image in images[start : start + batch_size]]
            for rgb, embedding in zip(rgbs, self._encode(rgbs), strict=True):
                self._predictor.cached = embedding
                try:
                    results.append(self._proposals(self._amg.generate(rgb), rgb.shape[:2]))
                finally:
                    self._predictor.cached = None
        return results

    @torch.no_grad()
    def _encode(self, rgbs: list[np.ndarray]) -> list[_Embedding]:
        """One image-encoder pass over ``(H, W, 3)`` uint8 slices, preprocessed as
        :meth:`SamPredictor.set_image` does (resize long side, normalise, pad)."""
        inputs, sizes = [], []
        for rgb in rgbs:
            resized = self._predictor.transform.apply_image(rgb)
            tensor = torch.as_tensor(resized, device=self.model.device).permute(2, 0, 1).contiguous()
            inputs.append(self.model.preprocess(tensor[None]))
            sizes.append(tuple(resized.shape[:2]))
        features = self.model.image_encoder(torch.cat(inputs))
        return [
            _Embedding(features[i : i + 1], size, tuple(rgb.shape[:2]))
            for i, (rgb, size) in enumerate(zip(rgbs, sizes, strict=True))
        ]

    @staticmethod
    def _proposals(records: list[dict[str, Any]], shape: tuple[int, int]) -> Proposals:
        """SAM's mask records on the network's ``(J, I)`` view -> :class:`Proposals` of the
        ``(I, J)`` slice, by score (clipped IoU) descending, stable."""
        if not records:
            return Proposals.empty((shape[1], shape[0]))
        scores = np.clip([r["predicted_iou"] for r in records], 0.0, 1.0).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        masks = np.stack([records[i]["segmentation"] for i in order]).astype(bool)
        return Proposals(np.ascontiguousarray(np.swapaxes(masks, 1, 2)), scores[order])


class SamPromptedGenerator:
    """SAM / MedSAM prompted by the model's predicted regions.

    Args:
        model: a loaded SAM (:func:`~samdsk_plan.proposals.sam_checkpoint.load_sam`).
        checkpoint_id: the weights' digest, for :meth:`settings`.
        recipe: which regions are prompted and with which box variants
            (:class:`~samdsk_plan.proposals.prompts.PromptRecipe`).
        point: add a positive point inside each region (SAM); False for the box-only MedSAM.
        multimask: keep SAM's three masks per prompt (False: its single best).
    """

    name = "sam_prompted"
    prompted = True

    def __init__(
        self,
        model: Sam,
        checkpoint_id: str = "",
        recipe: PromptRecipe = DEFAULT_RECIPE,
        point: bool = True,
        multimask: bool = True,
    ) -> None:
        self.model, self.checkpoint_id, self.recipe = model, checkpoint_id, recipe
        self.point, self.multimask = point, multimask
        self._predictor = SamPredictor(model)

    def settings(self) -> dict:
        return {
            "checkpoint": self.checkpoint_id,
            "model_type": model_type_of(self.model),
            **self.recipe.settings(),
            "point": self.point,
            "multimask": self.multimask,
            "view": "transposed",
        }

    @torch.no_grad()
    def __call__(self, image: np.ndarray, probs: np.ndarray) -> Proposals:
        """Proposals for an ``(H, W)`` slice in [0, 1] prompted by ``probs`` ``(C, H, W)``."""
        prompts = self.recipe.prompts(probs)
        if not prompts:
            return Proposals.none_prompted(image.shape)
        rgb = _to_rgb(image)
        self._predictor.set_image(rgb)
        device, size = self.model.device, rgb.shape[:2]
        # the network sees the slice transposed (see _to_rgb): x and y swap
        boxes = torch.as_tensor(np.array([p.box for p in prompts], np.float32)[:, [1, 0, 3, 2]], device=device)
        boxes = self._predictor.transform.apply_boxes_torch(boxes, size)
        coords = labels = None
        if self.point:
            argmax = np.argmax(probs, axis=0)
            points = np.array([[interior_point(argmax == p.label, p.box)[::-1]] for p in prompts], np.float32)
            coords = self._predictor.transform.apply_coords_torch(torch.as_tensor(points, device=device), size)
            labels = torch.ones(points.shape[:2], dtype=torch.int, device=device)
        masks, iou, _ = self._predictor.predict_torch(coords, labels, boxes, multimask_output=self.multimask)
        per_prompt = masks.shape[1]
        origins = np.repeat(np.array([(p.label, p.region) for p in prompts], np.int32), per_prompt, axis=0)
        masks = np.ascontiguousarray(np.swapaxes(masks.reshape(-1, *size).cpu().numpy().astype(bool), 1, 2))
        scores = iou.reshape(-1).clamp(0, 1).float().cpu().numpy()
        return Proposals.prompted(masks, scores, origins)
