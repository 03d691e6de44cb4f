"""Check a dataset before anything is computed from it; report every problem at once.

The per-case reader :func:`read_case_checked` is shared with the fingerprint, so what verify
accepts is exactly what later stages can read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.cases import Case, Dataset, Problem
from samdsk_plan.io.images import ImageData, file_problem, label_plane, read_image
from samdsk_plan.io.parallel import parallel_map

DEFAULT_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class CaseArrays:
    """A case read from disk and checked.

    Attributes:
        image: ``(C, I, J, K)`` voxel data, channels first, as stored (dtype not changed).
        label: ``(I, J, K)`` int32 label map, or ``None`` for an unlabelled case.
        spacing: voxel size along ``I, J, K`` in mm.
        affine: 4x4 voxel -> RAS+ world matrix (mm).
        is_2d: a 2D image (``K == 1``, see :mod:`samdsk_plan.io.images`).
    """

    case: Case
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    affine: np.ndarray
    is_2d: bool = False


@dataclass
class VerifyReport:
    """Outcome of :func:`verify_dataset`."""

    dataset: Dataset
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        d = self.dataset
        head = (
            f"{d.name} ({d.layout}, {d.source}): {len(d.cases)} cases, "
            f"{len(d.labelled)} labelled, {len(d.unlabelled)} unlabelled, "
            f"{len(d.channel_names)} channel(s), labels {_fmt_labels(d.labels)}"
        )
        if not self.problems:
            return head + "\nOK: no problems found"
        n_err, n_warn = len(self.errors), len(self.problems) - len(self.errors)
        lines = [head, *(str(p) for p in self.problems)]
        lines.append(f"{'FAILED' if n_err else 'OK'}: {n_err} error(s), {n_warn} warning(s)")
        return "\n".join(lines)


def _fmt_labels(labels: dict[int, str]) -> str:
    return "{" + ", ".join(f"{v}: {n}" for v, n in sorted(labels.items())) + "}" if labels else "(none declared)"


def _geometry_close(a: ImageData, b: ImageData, tolerance: float) -> str | None:
    """Why two images' grids differ, or None when shape, spacing and affine agree."""
    if a.spatial_shape != b.spatial_shape:
        return f"shape {list(b.spatial_shape)} differs from {list(a.spatial_shape)}"
    if not np.allclose(a.spacing, b.spacing, rtol=1e-5, atol=tolerance):
        return f"spacing {_fmt(b.spacing)} differs from {_fmt(a.spacing)} mm"
    if not np.allclose(a.affine, b.affine, rtol=1e-5, atol=tolerance):
        diff = float(np.abs(a.affine - b.affine).max())
        return f"affine (orientation/origin) differs by up to {diff:.4g} mm"
    return None


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _read(path, problems: list[Problem]) -> ImageData | None:
    why = file_problem(path)
    if why:
        problems.append(Problem(str(path), why))
        return None
    try:
        image = read_image(path)
    except Exception as exc:  # any backend failure means the file is unreadable
        problems.append(Problem(str(path), f"cannot be read as an image ({type(exc).__name__}: {exc})"))
        return None
    problems.extend(Problem(str(path), note, "warning") for note in image.notes)
    return image


def _spatial(img: ImageData, path, expected_channels: int, problems: list[Problem]) -> np.ndarray | None:
    """``(C, I, J, K)`` view of an image file holding ``expected_channels`` channels."""
    a = img.array
    if a.ndim == 3:
        a = a[None]
    elif a.ndim == 4:
        a = np.moveaxis(a, -1, 0)
    else:
        problems.append(
            Problem(str(path), f"expected a 3D image, found {a.ndim} dimension(s) with shape {list(a.shape)}")
        )
        return None
    if a.shape[0] != expected_channels:
        problems.append(Problem(str(path), f"holds {a.shape[0]} channel(s), expected {expected_channels}"))
        return None
    if min(img.spacing) <= 0:
        problems.append(Problem(str(path), f"non-positive voxel spacing {_fmt(img.spacing)}"))
        return None
    return a


def read_case_checked(
    case: Case, channel_names: tuple[str, ...], labels: dict[int, str], tolerance: float = DEFAULT_TOLERANCE_MM
) -> tuple[CaseArrays | None, list[Problem]]:
    """Read one case and check it; returns the arrays only when no error was found.

    Checks: files exist and are readable; 3D with the declared number of channels; all channel
    files share one grid; intensities are finite; the label has the image's shape, spacing
    and affine (within ``tolerance`` mm), integer values, and only values declared in
    ``labels`` (unchecked when ``labels`` is empty). Warnings (which do not withhold the
    arrays): a constant image channel, a label that is all background.
    """
    problems: list[Problem] = []
    per_file_channels = len(channel_names) if len(case.images) == 1 else 1
    if len(case.images) not in (1, len(channel_names)):
        problems.append(
            Problem(
                str(case.images[0]),
                f"case {case.case_id} has {len(case.images)} image files "
                f"but the dataset has {len(channel_names)} channel(s)",
            )
        )
        return None, problems
    first: ImageData | None = None
    channels = []
    for path in case.images:
        img = _read(path, problems)
        if img is None:
            continue
        arr = _spatial(img, path, per_file_channels, problems)
        if arr is None:
            continue
        if first is None:
            first = img
        else:
            why = _geometry_close(first, img, tolerance)
            if why:
                problems.append(Problem(str(path), f"channel geometry differs from {case.images[0].name}: {why}"))
                continue
        if arr.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            if bad:
                problems.append(Problem(str(path), f"{bad} voxel(s) are NaN or Inf"))
        problems.extend(_constant_channels(arr, path))
        channels.append(arr)
    label_arr = None
    if case.label is not None:
        lab = _read(case.label, problems)
        if lab is not None:
            label_arr = _check_label(lab, case.label, first, labels, tolerance, problems)
    if any(p.severity == "error" for p in problems):
        return None, problems
    image = channels[0] if len(channels) == 1 else np.concatenate(channels, axis=0)
    return CaseArrays(case, image, label_arr, first.spacing, first.affine, first.is_2d), problems


def _constant_channels(arr: np.ndarray, path) -> list[Problem]:
    """Warnings for channels of ``arr`` (``(C, I, J, K)``) whose voxels all hold one value."""
    out = []
    for c, channel in enumerate(arr):
        lo, hi = channel.min(), channel.max()
        if lo == hi:
            where = f"channel {c} is" if len(arr) > 1 else "image is"
            out.append(
                Problem(str(path), f"{where} constant: all {channel.size} voxels equal {float(lo):g}", "warning")
            )
    return out


def _check_label(
    lab: ImageData, path, image: ImageData | None, labels: dict[int, str], tolerance: float, problems: list[Problem]
) -> np.ndarray | None:
    try:
        a = label_plane(lab.array)
    except ValueError as exc:
        problems.append(Problem(str(path), str(exc)))
        return None
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if a.ndim != 3:
        problems.append(Problem(str(path), f"label must be 3D, found shape {list(a.shape)}"))
        return None
    if image is not None:
        why = _geometry_close(image, ImageData(a, lab.spacing, lab.affine), tolerance)
        if why:
            problems.append(Problem(str(path), f"label does not match its image: {why}"))
            return None
    if a.dtype.kind == "f":
        finite = np.isfinite(a)
        if not finite.all() or not np.array_equal(a, np.round(a)):
            bad = a[~finite | (a != np.round(a))]
            problems.append(
                Problem(str(path), f"non-integer label values, e.g. {float(bad.flat[0]):g} ({bad.size} voxel(s))")
            )
            return None
    elif a.dtype.kind not in "iub":
        problems.append(Problem(str(path), f"label has non-numeric type {a.dtype}"))
        return None
    a = a.astype(np.int32, copy=False)
    if labels:
        undeclared = sorted(set(np.unique(a).tolist()) - set(labels))
        if undeclared:
            problems.append(
                Problem(
                    str(path),
                    f"label values {undeclared} are not declared in dataset.json (declared: {sorted(labels)})",
                )
            )
            return None
    if not a.any():
        problems.append(Problem(str(path), "label is all background (0): no foreground voxel", "warning"))
    return a


def _check_case(case: Case, channel_names, labels, tolerance) -> tuple[list[Problem], bool | None]:
    """The case's problems, and whether it is 2D (None when it could not be read)."""
    arrays, problems = read_case_checked(case, channel_names, labels, tolerance)
    return problems, (arrays.is_2d if arrays is not None else None)


def mixed_dimensions(source: str, dims: dict[str, bool]) -> list[Problem]:
    """An error when some cases are 2D images and others 3D volumes (``dims``: case id -> is 2D)."""
    flat = [c for c, is_2d in dims.items() if is_2d]
    volumes = [c for c, is_2d in dims.items() if not is_2d]
    if not flat or not volumes:
        return []
    return [
        Problem(
            source,
            f"the dataset mixes 2D images ({len(flat)}, e.g. {sorted(flat)[0]}) and 3D volumes "
            f"({len(volumes)}, e.g. {sorted(volumes)[0]}); keep one kind per dataset",
        )
    ]


def dataset_problems(dataset: Dataset) -> list[Problem]:
    """Problems of the dataset as a whole: layout problems, emptiness, duplicate ids, label map."""
    problems = list(dataset.problems)
    src = str(dataset.source)
    if not dataset.cases:
        problems.append(Problem(src, "dataset is empty: no cases listed or found"))
    elif not dataset.labelled:
        problems.append(Problem(src, "no labelled cases: training needs at least one", "warning"))
    by_id: dict[str, list[Case]] = defaultdict(list)
    for case in dataset.cases:
        by_id[case.case_id].append(case)
    for case_id, cases in by_id.items():
        if len(cases) > 1:
            files = ", ".join(str(c.images[0]) for c in cases)
            problems.append(Problem(src, f"duplicate case id {case_id!r} ({len(cases)} entries: {files})"))
    if not dataset.labels:
        problems.append(Problem(src, "no label map declared; label values are not checked", "warning"))
    elif 0 not in dataset.labels:
        problems.append(Problem(src, "label map has no background (0)", "warning"))
    return problems


def verify_dataset(
    dataset: Dataset, workers: int = 1, tolerance: float = DEFAULT_TOLERANCE_MM, progress: bool = True
) -> VerifyReport:
    """Check every case of ``dataset`` (in ``workers`` processes) and the dataset as a whole."""
    if not math.isfinite(tolerance) or tolerance < 0:
        raise SamdskError(f"the geometry tolerance must be a finite number of mm >= 0, got {tolerance}")
    report = VerifyReport(dataset, dataset_problems(dataset))
    check = partial(_check_case, channel_names=dataset.channel_names, labels=dataset.labels, tolerance=tolerance)
    dims = {}
    for case, (problems, is_2d) in zip(
        dataset.cases, parallel_map(check, list(dataset.cases), workers, desc="verify", progress=progress), strict=True
    ):
        report.problems.extend(problems)
        if is_2d is not None:
            dims[case.case_id] = is_2d
    report.problems.extend(mixed_dimensions(str(dataset.source), dims))
    return report
