"""The project's data-list reader: one call turns any supported dataset layout, or a
split/datalist JSON, into the ``[{"image": ..., "label": ...}]`` lists MONAI datasets take.
The CLI, the loop and the emitted bundles' configs all read their cases through
:func:`datalist_files`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from samdsk_plan.errors import DatasetError, SamdskError
from samdsk_plan.io import Case, Problem, load_dataset
from samdsk_plan.io.images import label_suffix, read_image_or_fail, strip_image_suffix
from samdsk_plan.io.layouts import datalist_lists, entry_image, read_json_object

PART_TRAIN, PART_VAL, PART_TEST, PART_UNLABELLED, PART_ALL_LABELLED = (
    "train",
    "val",
    "test",
    "unlabelled",
    "all_labelled",
)
PARTS = (PART_TRAIN, PART_VAL, PART_TEST, PART_UNLABELLED, PART_ALL_LABELLED)
# the output kinds the bundle's inference writes per image (``SaveImaged`` ``output_postfix``)
PREDICTION_KINDS = ("seg", "prob")


def prediction_file(folder: str | Path, entry: dict[str, Any], kind: str = "seg") -> Path:
    """Where the bundle's inference (``SaveImaged`` with ``separate_folder=False``) writes its
    ``kind`` output for ``entry`` into ``folder``: ``IMAGE_seg`` (the argmax labels, ``.png`` for a
    natural image, ``.nii.gz`` otherwise: :func:`~samdsk_plan.io.images.label_suffix`) or
    ``IMAGE_prob.nii.gz`` (channel-last float32 softmax maps, for 2D images too), ``IMAGE`` the
    name of the entry's first image file."""
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"kind must be one of {PREDICTION_KINDS}, got {kind!r}")
    image = entry_image(entry)
    suffix = label_suffix(image) if kind == "seg" else ".nii.gz"
    return Path(folder) / f"{strip_image_suffix(image)}_{kind}{suffix}"


def read_probabilities(path: str | Path, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """``(C, I, J, K)`` float32 softmax maps from the bundle's channel-last output file."""
    path = Path(path)
    if not path.is_file():
        raise SamdskError(
            f"{path}: probability map not found (run the bundle's inference with --save_probabilities True)"
        )
    prob = np.asarray(read_image_or_fail(path).array, dtype=np.float32)
    if prob.ndim != 4 or prob.shape[:3] != tuple(shape) or prob.shape[3] != n_classes:
        raise SamdskError(
            f"{path}: probabilities of shape {prob.shape} do not fit the image {tuple(shape)} with {n_classes} classes"
        )
    return np.moveaxis(prob, -1, 0)


def _entry(case: Case, with_label: bool = True) -> dict:
    images = [str(p) for p in case.images]
    item = {"case_id": case.case_id, "image": images[0] if len(images) == 1 else images}
    if with_label and case.label is not None:
        item["label"] = str(case.label)
    return item


def _weight(value, path: Path, key: str, case_id: str, problems: list[Problem]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        problems.append(Problem(str(path), f"'{key}' entry {case_id} has weight {value!r}; it must be a number >= 0"))
        return 1.0
    return float(value)


def _entries(datalist: str | Path, base_dir: str | Path) -> dict[str, list[dict]]:
    """Labelled, validation, test and unlabelled entries of a datalist JSON or dataset folder."""
    path = Path(datalist)
    if path.is_file() and path.suffix == ".json" and path.name != "dataset.json":
        meta = read_json_object(path)
        if "channel_names" not in meta or "file_ending" not in meta:
            problems: list[Problem] = []
            out: dict[str, list[dict]] = {"training": [], "validation": [], "testing": [], "unlabelled": []}
            for key, cases in datalist_lists(meta, path, Path(base_dir), problems).items():
                part = {
                    "training": "training",
                    "validation": "validation",
                    "testing": "testing",
                    "test": "testing",
                }.get(key, "unlabelled")
                # entries without a valid image are left out of cases and reported in problems (raised below)
                for case, raw in zip(cases, meta[key], strict=False):
                    labelled = case.label is not None and part != "unlabelled"
                    item = _entry(case, with_label=labelled)
                    if labelled and "weight" in raw:
                        item["weight"] = _weight(raw["weight"], path, key, case.case_id, problems)
                    out[part if labelled else "unlabelled"].append(item)
            if problems:
                raise DatasetError("\n".join(str(p) for p in problems))
            return out
    dataset = load_dataset(path if path.exists() else base_dir)
    return {
        "training": [_entry(c) for c in dataset.labelled],
        "validation": [],
        "testing": [],
        "unlabelled": [_entry(c) for c in dataset.unlabelled],
    }


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
            ``"unlabelled"`` (every entry without a label).
        base_dir: folder that relative paths start from (the dataset folder).
    """
    if part not in PARTS:
        raise DatasetError(f"unknown data part {part!r}; choose one of {', '.join(PARTS)}")
    entries = _entries(datalist, base_dir)
    if part in (PART_TEST, PART_UNLABELLED):
        return entries["testing" if part == PART_TEST else "unlabelled"]
    labelled = entries["training"]
    if entries["validation"]:
        train, val = labelled, entries["validation"]
    else:
        n_val = min(len(labelled) - 1, max(1, round(val_fraction * len(labelled)))) if len(labelled) > 1 else 0
        order = np.random.default_rng(seed).permutation(len(labelled))
        val_idx = set(order[:n_val].tolist())
        train = [e for i, e in enumerate(labelled) if i not in val_idx]
        val = [e for i, e in enumerate(labelled) if i in val_idx]
    return {PART_TRAIN: train, PART_VAL: val, PART_ALL_LABELLED: train + val}[part]
