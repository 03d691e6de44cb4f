"""The package's own MONAI components that the emitted bundles name where MONAI has none."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.losses import DiceCELoss

from samdsk_plan.errors import SamdskError


def initialised(network: torch.nn.Module, checkpoint: str | None) -> torch.nn.Module:
    """``network`` with weights from ``checkpoint`` (a ``model.pt`` the bundle saved: a state
    dict, or ``{"model": state_dict}``), or unchanged when ``checkpoint`` is None (training from
    scratch). Loaded with ``weights_only=True``."""
    if checkpoint is None:
        return network
    path = Path(checkpoint)
    if not path.is_file():
        raise SamdskError(f"{path}: initial checkpoint not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and set(state) == {"model"}:
        state = state["model"]
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise SamdskError(f"{path}: does not fit the bundle's network ({str(exc).splitlines()[0]})") from None
    return network


class DeepSupervisionDiceCE(torch.nn.Module):
    """Dice + cross-entropy over DynUNet's deep-supervision outputs.

    In training mode DynUNet returns ``(B, 1 + deep_supr_num, C, *spatial)`` (heads already
    up-sampled to full size); in eval mode ``(B, C, *spatial)``. Head ``i`` is weighted
    ``2**-i``, the weights normalised to sum to 1 (as nnU-Net), so the loss scale does not
    depend on the number of heads. The target is ``(B, 1, *spatial)`` label indices; Dice
    leaves the background out and is computed over the whole batch (MONAI ``DiceCELoss``).
    """

    def __init__(self, include_background: bool = False, batch: bool = True):
        super().__init__()
        self.base = DiceCELoss(to_onehot_y=True, softmax=True, include_background=include_background, batch=batch)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.ndim != target.ndim + 1:
            return self.base(prediction, target)
        heads = torch.unbind(prediction, dim=1)
        weights = [0.5**i for i in range(len(heads))]
        return sum(w / sum(weights) * self.base(h, target) for w, h in zip(weights, heads))
