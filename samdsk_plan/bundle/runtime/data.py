"""Training-list helpers the emitted ``train.json`` calls inside the bundle's process."""

from __future__ import annotations

from samdsk_plan.errors import DatasetError


def sample_weights(files: list[dict]) -> list[float]:
    """Sampling weight of each training entry: its ``weight`` (pseudo-labels carry the plan's
    ``pseudo_label_weight``, the paper's lambda) or 1. Drawing entries in proportion to it
    weights their loss in expectation."""
    weights = [float(e.get("weight", 1.0)) for e in files]
    if files and not any(weights):
        raise DatasetError("every training entry has weight 0")
    return weights


def without_weights(files: list[dict]) -> list[dict]:
    """The entries without their ``weight`` (it steers the sampler; a dataset item must not
    carry a key some items lack, or batches cannot be collated)."""
    return [{k: v for k, v in e.items() if k != "weight"} for e in files]
