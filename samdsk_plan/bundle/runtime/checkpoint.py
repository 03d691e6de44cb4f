"""Saving the best model atomically: a crash or a full disk never leaves a truncated ``model.pt``.

MONAI's ``CheckpointSaver`` writes ``model.pt`` in place (ignite's non-atomic ``DiskSaver``),
so a failure mid-write leaves a file that neither this run nor the next can load. This handler
saves the same thing (the network's ``state_dict``, what ``CheckpointLoader`` and
:func:`samdsk_plan.bundle.runtime.components.load_weights` read) through the project's atomic writer.
A network wrapped for ``torchrun`` training (``DistributedDataParallel``, as
``multi_gpu_train.json`` wraps it) is saved as the module it wraps, so that one-process inference
and evaluation load the checkpoint.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from samdsk_plan.io.atomic import atomic_write_bytes


class BestModelSaver:
    """Write ``save_dir/filename`` whenever the evaluator's key metric reaches a new best.

    Args:
        save_dir: folder of the checkpoint (created).
        network: the module whose ``state_dict`` is saved (a ``DataParallel`` /
            ``DistributedDataParallel`` wrapper: its ``module``'s).
        filename: checkpoint file name (default ``model.pt``).
    """

    def __init__(self, save_dir: str | Path, network: torch.nn.Module, filename: str = "model.pt") -> None:
        self.path = Path(save_dir) / filename
        wrapped = isinstance(network, torch.nn.DataParallel | torch.nn.parallel.DistributedDataParallel)
        self.network = network.module if wrapped else network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        # MONAI's evaluator updates best_metric / best_metric_epoch on EPOCH_COMPLETED before
        # handlers attached later (this one) run.
        if engine.state.best_metric_epoch != engine.state.epoch:
            return
        buffer = io.BytesIO()
        torch.save(self.network.state_dict(), buffer)
        atomic_write_bytes(self.path, buffer.getvalue())
