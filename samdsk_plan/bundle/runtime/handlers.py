"""Ignite handlers for the emitted inference and evaluate configs."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import torch
from monai.handlers import CheckpointLoader
from monai.metrics import compute_dice, compute_hausdorff_distance

from samdsk_plan.bundle.runtime.components import describe_error, read_checkpoint
from samdsk_plan.errors import SamdskError
from samdsk_plan.io.atomic import atomic_write_json, atomic_write_text
from samdsk_plan.io.images import strip_image_suffix


class NamedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` whose failures name the checkpoint file: missing, not a
    PyTorch checkpoint, or weights that do not fit the network (a SamdskError)."""

    def __call__(self, engine) -> None:
        read_checkpoint(self.load_path, self.map_location)
        try:
            super().__call__(engine)
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise SamdskError(f"{self.load_path}: does not fit the bundle's network ({describe_error(exc)})") from exc


def _clean(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 6)


class SegmentationReport:
    """Per-case and mean Dice and HD95 (mm) per foreground class, written as CSV and JSON.

    Reads, for every decollated item of the evaluator's output, one-hot ``pred`` and
    ``label`` tensors ``(C, *spatial)`` in the *input* geometry, and the case's file name from
    ``image`` metadata. Dice is MONAI's ``compute_dice`` (NaN when the class is absent from
    both); HD95 is ``compute_hausdorff_distance(percentile=95)`` with the label's voxel
    spacing, so it is in mm (NaN/Inf when either mask is empty, written as null).

    Writes ``OUTPUT_DIR/metrics.csv`` (case, class, dice, hd95) and ``OUTPUT_DIR/metrics.json``
    (``{"cases": {case: {class: {dice, hd95}}}, "mean": {class: {dice, hd95, n}}}``).
    """

    def __init__(self, output_dir: str, class_names: dict, pred_key: str = "pred", label_key: str = "label"):
        self.output_dir = Path(output_dir)
        self.class_names = {int(k): v for k, v in class_names.items() if int(k) != 0}
        self.pred_key, self.label_key = pred_key, label_key
        self.rows: list[tuple[str, str, float, float]] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine) -> None:
        for item in engine.state.output:
            pred, label = item[self.pred_key], item[self.label_key]
            case = strip_image_suffix(str(pred.meta.get("filename_or_obj", "case")))
            spacing = [float(s) for s in getattr(label, "pixdim", torch.ones(pred.ndim - 1))]
            p, y = pred[None].float(), label[None].float()
            dice = compute_dice(p, y, include_background=True, ignore_empty=True)[0]
            hd = compute_hausdorff_distance(p, y, include_background=True, percentile=95, spacing=spacing)[0]
            for value, cname in self.class_names.items():
                self.rows.append((case, cname, float(dice[value]), float(hd[value])))

    def completed(self, engine) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "class", "dice", "hd95"])
        cases: dict[str, dict] = {}
        for case, cname, dice, hd in self.rows:
            dice, hd = _clean(dice), _clean(hd)
            writer.writerow([case, cname, "" if dice is None else dice, "" if hd is None else hd])
            cases.setdefault(case, {})[cname] = {"dice": dice, "hd95": hd}
        mean = {}
        for cname in self.class_names.values():
            dices = [d for _, c, d, _ in self.rows if c == cname and math.isfinite(d)]
            hds = [h for _, c, _, h in self.rows if c == cname and math.isfinite(h)]
            mean[cname] = {
                "dice": _clean(np.mean(dices)) if dices else None,
                "hd95": _clean(np.mean(hds)) if hds else None,
                "n": len(dices),
            }
        atomic_write_text(self.output_dir / "metrics.csv", buffer.getvalue())
        atomic_write_json(self.output_dir / "metrics.json", {"cases": cases, "mean": mean})
        engine.logger.info(
            f"segmentation metrics written to {self.output_dir}: "
            + ", ".join(f"{c} Dice {m['dice']}" for c, m in mean.items())
        )
