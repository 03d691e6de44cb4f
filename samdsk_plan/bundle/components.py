"""The package's own MONAI components that the emitted bundles name where MONAI has none."""

from __future__ import annotations

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss


class DeepSupervisionDiceCE(torch.nn.Module):
    """Dice + cross-entropy over DynUNet's deep-supervision outputs.

    In training mode DynUNet returns ``(B, 1 + deep_supr_num, C, *spatial)`` (heads already
    up-sampled to full size); in eval mode ``(B, C, *spatial)``. Heads are weighted 1, 1/2,
    1/4, ... and normalised (MONAI ``DeepSupervisionLoss``, ``weight_mode="exp"``). The target
    is ``(B, 1, *spatial)`` label indices.
    """

    def __init__(self, include_background: bool = True):
        super().__init__()
        base = DiceCELoss(to_onehot_y=True, softmax=True, include_background=include_background,
                          squared_pred=False, batch=True)
        self.loss = DeepSupervisionLoss(base, weight_mode="exp")

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.ndim == target.ndim + 1:
            return self.loss(list(torch.unbind(prediction, dim=1)), target)
        return self.loss(prediction, target)
