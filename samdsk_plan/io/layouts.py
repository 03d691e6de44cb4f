"""Turn the three supported dataset layouts into one :class:`Dataset` description.

* Medical Segmentation Decathlon (MSD): ``dataset.json`` with ``training`` (image/label pairs),
  ``test`` (images), ``modality`` (index -> name) and ``labels`` (value -> name).
* nnU-Net v2 raw: ``imagesTr/CASE_XXXX<file_ending>`` (one file per channel), ``labelsTr/``,
  optional ``imagesTs/``; ``dataset.json`` with ``channel_names``, ``labels`` (name -> value),
  ``file_ending`` and ``numTraining`` (an explicit ``dataset`` file map is honoured too).
* MONAI datalist: a JSON file whose ``training`` / ``validation`` / ``testing`` lists hold
  ``{"image": ..., "label": ...}`` entries (or plain image paths), relative to a base dir.
  Entries without ``label`` are unlabelled. Optional ``modality``/``channel_names`` and
  ``labels`` maps are read as in the other two layouts; without a channel map the channel
  count is the number of image files most entries list. A ``dataset.json`` with ``training``
  and ``labels`` but no ``modality`` (and none of a datalist's own keys) is an MSD file missing
  its ``modality``: a :class:`~samdsk_plan.errors.DatasetError`, not a datalist.

Readers only describe the dataset: they do not open images. Files that are missing or broken
are reported by :func:`samdsk_plan.io.verify.verify_dataset`. Structural problems that still
leave a usable description (an entry without an image, a count that disagrees) are returned as
:class:`Problem` records; a description that cannot be built at all raises
:class:`~samdsk_plan.errors.DatasetError`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from samdsk_plan.errors import DatasetError
from samdsk_plan.io.cases import Case, Dataset, Problem
from samdsk_plan.io.images import file_problem, strip_image_suffix

LAYOUTS = ("auto", "msd", "nnunetv2", "datalist")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_DATALIST_LABELLED_KEYS = ("training", "validation")
_DATALIST_KEYS = ("training", "validation", "testing", "test", "unlabeled", "unlabelled")
# keys only a MONAI datalist (or a ``samdsk-plan split`` file) has, never an MSD dataset.json
_DATALIST_ONLY_KEYS = ("validation", "testing", "unlabeled", "unlabelled", "channel_names", "split")


def load_dataset(
    path: str | Path, layout: str = "auto", base_dir: str | Path | None = None, name: str | None = None
) -> Dataset:
    """Describe the dataset at ``path``.

    Args:
        path: a dataset folder holding ``dataset.json`` (MSD or nnU-Net v2), or a JSON file
            (an MSD/nnU-Net ``dataset.json`` or a MONAI datalist).
        layout: ``"auto"`` (detect), ``"msd"``, ``"nnunetv2"`` or ``"datalist"``.
        base_dir: folder that relative datalist paths start from (default: the JSON's folder).
        name: the dataset's short name (default: the dataset folder's name, or the datalist
            file's name without extension).
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    path = Path(path)
    if path.is_dir():
        json_path = path / "dataset.json"
        if not json_path.is_file():
            raise DatasetError(f"{path}: no dataset.json in this folder (expected an MSD or nnU-Net v2 dataset)")
    elif path.is_file():
        json_path = path
    else:
        why = file_problem(path)
        raise DatasetError(f"{path}: {'no such file or folder' if why == 'file is missing' else why}")
    meta = read_json_object(json_path)
    if layout == "auto":
        layout = _detect_layout(meta, json_path)
    root = Path(base_dir) if base_dir is not None else json_path.parent
    if name is None:
        name = json_path.parent.resolve().name if layout != "datalist" else json_path.stem
    if layout == "msd":
        return _read_msd(meta, json_path, root, name)
    if layout == "nnunetv2":
        return _read_nnunetv2(meta, json_path, root, name)
    return _read_datalist(meta, json_path, root, name)


def case_id_from_path(path: str | Path, strip_channel: bool = False) -> str:
    """Case id from an image file name; with ``strip_channel`` the nnU-Net ``_XXXX`` is dropped."""
    stem = strip_image_suffix(path)
    if strip_channel:
        match = _CHANNEL_SUFFIX.match(stem)
        if match:
            return match["case"]
    return stem


def entry_image(entry: dict[str, Any]) -> str:
    """The (first) image path of a data-list entry whose ``image`` is a path or a list of
    channel files."""
    image = entry["image"]
    return image[0] if isinstance(image, list) else image


def entry_case_id(entry: dict[str, Any]) -> str:
    """Case id of a data-list entry: its ``case_id`` (the entries
    :func:`~samdsk_plan.io.datalists.datalist_files` and ``samdsk-plan split`` write carry the id
    the dataset layout gave the case, so an nnU-Net ``CASE_0000.nii.gz`` stays ``CASE``), else
    the id its first image file names (a list of channel files drops the nnU-Net ``_XXXX``)."""
    if entry.get("case_id"):
        return str(entry["case_id"])
    return case_id_from_path(entry_image(entry), strip_channel=isinstance(entry["image"], list))


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file holding an object; :class:`DatasetError` naming the file when it is not one."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level, found {type(meta).__name__}")
    return meta


def _detect_layout(meta: dict[str, Any], json_path: Path) -> str:
    if "file_ending" in meta:
        return "nnunetv2"
    if json_path.name == "dataset.json" and "modality" in meta:
        return "msd"
    if (
        json_path.name == "dataset.json"
        and "training" in meta
        and "labels" in meta
        and not any(k in meta for k in _DATALIST_ONLY_KEYS)
    ):
        raise DatasetError(
            f"{json_path}: a Medical Segmentation Decathlon dataset.json (it has 'training' and 'labels') "
            "without 'modality', so the number of image channels is unknown; add e.g. "
            '"modality": {"0": "MRI"} (one entry per channel)'
        )
    if any(k in meta for k in _DATALIST_KEYS):
        return "datalist"
    if "channel_names" in meta:
        return "nnunetv2"
    raise DatasetError(
        f"{json_path}: cannot tell the layout: expected an MSD dataset.json (training, modality), "
        "an nnU-Net v2 dataset.json (channel_names, file_ending) or a MONAI datalist "
        f"(one of {', '.join(_DATALIST_KEYS)})"
    )


def _parse_channel_names(meta: dict[str, Any], json_path: Path, key: str) -> tuple[str, ...]:
    raw = meta.get(key)
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{json_path}: '{key}' must be a non-empty object mapping channel index to name")
    try:
        indexed = {int(k): str(v) for k, v in raw.items()}
    except ValueError:
        raise DatasetError(f"{json_path}: '{key}' keys must be channel indices 0, 1, ...") from None
    if sorted(indexed) != list(range(len(indexed))):
        raise DatasetError(f"{json_path}: '{key}' indices must be 0..{len(indexed) - 1}, found {sorted(indexed)}")
    return tuple(indexed[i] for i in range(len(indexed)))


def _parse_labels(raw: Any, json_path: Path) -> dict[int, str]:
    """Accept MSD (``{"1": "liver"}``) and nnU-Net v2 (``{"liver": 1}``) label maps."""
    if not isinstance(raw, dict) or not raw:
        raise DatasetError(f"{json_path}: 'labels' must be a non-empty object")
    if all(isinstance(v, str) for v in raw.values()):
        try:
            return {int(k): v for k, v in raw.items()}
        except ValueError:
            raise DatasetError(
                f'{json_path}: \'labels\' must map values to names (MSD: {{"1": "liver"}}) '
                f'or names to integer values (nnU-Net v2: {{"liver": 1}})'
            ) from None
    labels: dict[int, str] = {}
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DatasetError(f"{json_path}: label {name!r} must be an integer (or a list of integers), got {value!r}")
        for v in values:
            labels.setdefault(v, name)
    return labels


def _entry_paths(entry: Any, key: str) -> list[str] | None:
    value = entry.get(key) if isinstance(entry, dict) else entry
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _cases_from_entries(
    entries: Any, list_key: str, json_path: Path, root: Path, labelled: bool, problems: list[Problem]
) -> list[Case]:
    if not isinstance(entries, list):
        problems.append(Problem(str(json_path), f"'{list_key}' must be a list, found {type(entries).__name__}"))
        return []
    cases = []
    for i, entry in enumerate(entries):
        images = _entry_paths(entry, "image")
        if images is None:
            problems.append(Problem(str(json_path), f"'{list_key}' entry {i} has no image path"))
            continue
        label = None
        if labelled and isinstance(entry, dict) and "label" in entry:
            label_paths = _entry_paths(entry, "label")
            if label_paths is None or len(label_paths) != 1:
                problems.append(Problem(str(json_path), f"'{list_key}' entry {i} has an invalid label path"))
                continue
            label = root / label_paths[0]
        case_id = entry_case_id(entry if isinstance(entry, dict) else {"image": entry})
        cases.append(Case(case_id, tuple(root / p for p in images), label))
    return cases


def _read_msd(meta: dict[str, Any], json_path: Path, root: Path, name: str) -> Dataset:
    problems: list[Problem] = []
    channel_names = _parse_channel_names(meta, json_path, "modality")
    labels = _parse_labels(meta.get("labels"), json_path)
    if "training" not in meta:
        raise DatasetError(f"{json_path}: no 'training' list")
    cases = _cases_from_entries(meta["training"], "training", json_path, root, True, problems)
    for i, case in enumerate(cases):
        if case.label is None:
            problems.append(Problem(str(json_path), f"'training' entry {i} ({case.case_id}) has no label"))
    cases += _cases_from_entries(meta.get("test", []), "test", json_path, root, False, problems)
    for key, listed in (("numTraining", "training"), ("numTest", "test")):
        declared, actual = meta.get(key), len(meta.get(listed, []) or [])
        if isinstance(declared, int) and declared != actual:
            problems.append(Problem(str(json_path), f"{key} is {declared} but '{listed}' lists {actual} cases"))
    return Dataset(name, "msd", json_path, channel_names, labels, tuple(cases), tuple(problems), root)


def _read_nnunetv2(meta: dict[str, Any], json_path: Path, root: Path, name: str) -> Dataset:
    problems: list[Problem] = []
    channel_names = _parse_channel_names(meta, json_path, "channel_names")
    labels = _parse_labels(meta.get("labels"), json_path)
    file_ending = meta.get("file_ending")
    if not isinstance(file_ending, str) or not file_ending.startswith("."):
        raise DatasetError(f"{json_path}: 'file_ending' must be a file extension such as '.nii.gz'")
    if isinstance(meta.get("dataset"), dict):
        cases = _nnunet_explicit_cases(meta["dataset"], json_path, root, problems)
        n_training = len(cases)
    else:
        cases = _nnunet_folder_cases(root / "imagesTr", root / "labelsTr", len(channel_names), file_ending, problems)
        n_training = len(cases)
        if not (root / "imagesTr").is_dir():
            problems.append(Problem(str(root / "imagesTr"), "folder is missing"))
        cases += _nnunet_folder_cases(root / "imagesTs", None, len(channel_names), file_ending, problems)
    declared = meta.get("numTraining")
    if not isinstance(declared, int):
        problems.append(Problem(str(json_path), "'numTraining' is missing or not an integer"))
    elif declared != n_training:
        problems.append(
            Problem(str(json_path), f"numTraining is {declared} but {n_training} training cases were found")
        )
    return Dataset(name, "nnunetv2", json_path, channel_names, labels, tuple(cases), tuple(problems), root)


def _nnunet_folder_cases(
    image_dir: Path, label_dir: Path | None, n_channels: int, file_ending: str, problems: list[Problem]
) -> list[Case]:
    if not image_dir.is_dir():
        return []
    channels: dict[str, set[int]] = {}
    for f in sorted(image_dir.iterdir()):
        if not f.name.endswith(file_ending) or f.name.startswith("."):
            continue
        match = _CHANNEL_SUFFIX.match(f.name[: -len(file_ending)])
        if match is None:
            problems.append(Problem(str(f), "name lacks the 4-digit channel suffix (CASE_0000); file ignored"))
            continue
        channels.setdefault(match["case"], set()).add(int(match["channel"]))
    cases = []
    for case_id in sorted(channels):
        extra = sorted(c for c in channels[case_id] if c >= n_channels)
        if extra:
            problems.append(
                Problem(
                    str(image_dir / f"{case_id}_{extra[0]:04d}{file_ending}"),
                    f"channel {extra[0]:04d} exists but dataset.json declares {n_channels} channel(s)",
                )
            )
        images = tuple(image_dir / f"{case_id}_{c:04d}{file_ending}" for c in range(n_channels))
        label = label_dir / f"{case_id}{file_ending}" if label_dir is not None else None
        cases.append(Case(case_id, images, label))
    if label_dir is not None and label_dir.is_dir():
        for f in sorted(label_dir.iterdir()):
            if f.name.endswith(file_ending) and f.name[: -len(file_ending)] not in channels:
                problems.append(Problem(str(f), "label has no image in imagesTr"))
    return cases


def _nnunet_explicit_cases(table: dict[str, Any], json_path: Path, root: Path, problems: list[Problem]) -> list[Case]:
    cases = []
    for case_id, entry in sorted(table.items()):
        images = _entry_paths(entry, "images")
        label = _entry_paths(entry, "label")
        if images is None or label is None or len(label) != 1:
            problems.append(Problem(str(json_path), f"'dataset' entry {case_id!r} needs 'images' (list) and 'label'"))
            continue
        cases.append(Case(case_id, tuple(root / p for p in images), root / label[0]))
    return cases


def datalist_lists(meta: dict[str, Any], json_path: Path, root: Path, problems: list[Problem]) -> dict[str, list[Case]]:
    """The cases of every list of a datalist (``training``, ``testing``, ...), in file order,
    each keeping the label its entry names (paths start at ``root``)."""
    return {
        key: _cases_from_entries(meta[key], key, json_path, root, True, problems)
        for key in _DATALIST_KEYS
        if key in meta
    }


def _read_datalist(meta: dict[str, Any], json_path: Path, root: Path, name: str) -> Dataset:
    problems: list[Problem] = []
    cases: list[Case] = []
    for key, listed in datalist_lists(meta, json_path, root, problems).items():
        # only training/validation labels are for learning; test and pool labels stay hidden
        cases += listed if key in _DATALIST_LABELLED_KEYS else [replace(c, label=None) for c in listed]
    channel_key = next((k for k in ("channel_names", "modality") if k in meta), None)
    if channel_key is not None:
        channel_names = _parse_channel_names(meta, json_path, channel_key)
    else:
        counts = Counter(len(c.images) for c in cases)
        n = counts.most_common(1)[0][0] if counts else 1
        channel_names = tuple(f"channel_{i}" for i in range(n))
        if len(counts) > 1:
            problems.append(
                Problem(
                    str(json_path),
                    f"no 'modality' declared: assuming {n} channel(s), the number "
                    f"of image files most entries have ({counts[n]} of {len(cases)})",
                    "warning",
                )
            )
    labels = _parse_labels(meta["labels"], json_path) if "labels" in meta else {}
    return Dataset(name, "datalist", json_path, channel_names, labels, tuple(cases), tuple(problems), root)
