"""Data lists for the emitted bundles' configs: one call turns any supported dataset layout, or
a split/datalist JSON, into the ``[{"image": ..., "label": ...}]`` lists MONAI datasets take."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samdsk_plan.errors import DatasetError
from samdsk_plan.io import Case, Problem, load_dataset
from samdsk_plan.io.layouts import datalist_lists, read_json_object

PARTS = ("train", "val", "test", "unlabeled", "all_labelled")


def _entry(case: Case, with_label: bool = True) -> dict:
    images = [str(p) for p in case.images]
    item = {"image": images[0] if len(images) == 1 else images}
    if with_label and case.label is not None:
        item["label"] = str(case.label)
    return item


def _weight(value, path: Path, key: str, case_id: str, problems: list[Problem]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        problems.append(Problem(str(path), f"'{key}' entry {case_id} has weight {value!r}; it must be a number >= 0"))
        return 1.0
    return float(value)


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


def _entries(datalist: str | Path, base_dir: str | Path) -> dict[str, list[dict]]:
    """Labelled, validation, test and unlabelled entries of a datalist JSON or dataset folder."""
    path = Path(datalist)
    if path.is_file() and path.suffix == ".json" and path.name != "dataset.json":
        meta = read_json_object(path)
        if "channel_names" not in meta or "file_ending" not in meta:
            problems: list[Problem] = []
            out: dict[str, list[dict]] = {"training": [], "validation": [], "testing": [], "unlabeled": []}
            for key, cases in datalist_lists(meta, path, Path(base_dir), problems).items():
                part = {"training": "training", "validation": "validation", "testing": "testing",
                        "test": "testing"}.get(key, "unlabeled")
                for case, raw in zip(cases, meta[key]):
                    labelled = case.label is not None and part != "unlabeled"
                    item = _entry(case, with_label=labelled)
                    if labelled and "weight" in raw:
                        item["weight"] = _weight(raw["weight"], path, key, case.case_id, problems)
                    out[part if labelled else "unlabeled"].append(item)
            if problems:
                raise DatasetError("\n".join(str(p) for p in problems))
            return out
    dataset = load_dataset(path if path.exists() else base_dir)
    return {"training": [_entry(c) for c in dataset.labelled], "validation": [], "testing": [],
            "unlabeled": [_entry(c) for c in dataset.unlabelled]}


def datalist_files(
    datalist: str | Path, part: str, base_dir: str | Path, val_fraction: float = 0.2, seed: int = 0
) -> list[dict]:
    """Entries of one ``part`` of a dataset, with absolute paths.

    Args:
        datalist: a dataset folder (MSD / nnU-Net v2), its ``dataset.json``, or a MONAI
            datalist / ``samdsk-plan split`` JSON.
        part: ``"train"`` and ``"val"`` (the labelled ``training`` entries, split by
            ``val_fraction`` with ``seed`` unless the datalist has a ``validation`` list),
            ``"all_labelled"`` (train + val), ``"test"`` (labelled ``testing`` entries) or
            ``"unlabeled"`` (every entry without a label).
        base_dir: folder that relative paths start from (the dataset folder).
    """
    if part not in PARTS:
        raise DatasetError(f"unknown data part {part!r}; choose one of {', '.join(PARTS)}")
    entries = _entries(datalist, base_dir)
    if part in ("test", "unlabeled"):
        return entries["testing" if part == "test" else "unlabeled"]
    labelled = entries["training"]
    if entries["validation"]:
        train, val = labelled, entries["validation"]
    else:
        n_val = min(len(labelled) - 1, max(1, round(val_fraction * len(labelled)))) if len(labelled) > 1 else 0
        order = np.random.default_rng(seed).permutation(len(labelled))
        val_idx = set(order[:n_val].tolist())
        train = [e for i, e in enumerate(labelled) if i not in val_idx]
        val = [e for i, e in enumerate(labelled) if i in val_idx]
    return {"train": train, "val": val, "all_labelled": train + val}[part]
