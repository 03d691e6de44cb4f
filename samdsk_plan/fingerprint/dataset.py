"""Dataset fingerprint: per-case records aggregated into the statistics planning needs.

The JSON written by :func:`write_fingerprint` is deterministic: keys sorted, floats rounded
to 9 significant digits, cases processed in case-id order, intensity samples seeded per case.
Only ``provenance`` (tool version, creation time, source layout) may differ between two runs
on the same data; everything else is the comparable part.

``dimensions`` is 2 when every case is a 2D image (one slice ``[x, y, 0]``, see
:mod:`samdsk_plan.io.images`), else 3. A 2D fingerprint gives each class's knowledge per image:
``area_fraction``, ``regions_per_image`` and ``region_area`` in pixels and mm²; a 3D one gives
``volume_fraction``, ``components_3d``, ``component_size`` and per axis ``regions_per_slice``
and ``region_area``.
"""

from __future__ import annotations

import datetime as _dt
import json
from functools import partial
from pathlib import Path

import numpy as np

from samdsk_plan import __version__
from samdsk_plan.errors import DatasetError, SamdskError
from samdsk_plan.fingerprint.case import CaseFingerprint, fingerprint_case
from samdsk_plan.fingerprint.components import CONNECTIVITIES, neighbour_count
from samdsk_plan.fingerprint.stats import (
    axis_summary,
    count_summary,
    intensity_summary,
    rnd,
    value_summary,
)
from samdsk_plan.io import Dataset, Problem
from samdsk_plan.io.atomic import atomic_write_text, dumps_json
from samdsk_plan.io.parallel import parallel_map
from samdsk_plan.io.verify import DEFAULT_TOLERANCE_MM, dataset_problems, mixed_dimensions

SCHEMA_VERSION = 1
DEFAULT_INTENSITY_SAMPLES = 10_000_000


class FingerprintError(SamdskError):
    """The dataset failed the checks the fingerprint relies on; ``problems`` lists them all."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def compute_fingerprint(
    dataset: Dataset,
    workers: int = 1,
    connectivity: str = "full",
    max_intensity_samples: int = DEFAULT_INTENSITY_SAMPLES,
    tolerance: float = DEFAULT_TOLERANCE_MM,
    progress: bool = True,
) -> dict:
    """Fingerprint ``dataset`` (see ``docs/fingerprint.md`` for every field).

    Args:
        dataset: the dataset description (:func:`samdsk_plan.io.load_dataset`).
        workers: processes reading cases in parallel.
        connectivity: ``"full"`` (26 in 3D / 8 in 2D) or ``"face"`` (6 / 4) for region counts.
        max_intensity_samples: foreground voxels pooled per channel for the dataset intensity
            percentiles, split evenly over labelled cases (exact when the dataset has fewer).
        tolerance: geometry tolerance in mm for the case checks.

    Raises:
        FingerprintError: the dataset has errors (every one is listed).
        DatasetError: there is no labelled case to learn class statistics from.
    """
    if connectivity not in CONNECTIVITIES:
        raise SamdskError(f"connectivity must be one of {', '.join(CONNECTIVITIES)}, got {connectivity!r}")
    errors = [p for p in dataset_problems(dataset) if p.severity == "error"]
    if errors:
        raise FingerprintError(errors)
    if not dataset.labelled:
        raise DatasetError(f"{dataset.source}: no labelled cases; the fingerprint needs at least one")
    cases = sorted(dataset.cases, key=lambda c: c.case_id)
    per_case = max(1, max_intensity_samples // len(dataset.labelled))
    work = partial(
        fingerprint_case,
        channel_names=dataset.channel_names,
        labels=dataset.labels,
        connectivity=connectivity,
        samples_per_case=per_case,
        tolerance=tolerance,
    )
    results = parallel_map(work, cases, workers, desc="fingerprint", progress=progress)
    problems = [p for r in results if isinstance(r, list) for p in r]
    problems += mixed_dimensions(str(dataset.source), {r.case_id: r.is_2d for r in results if not isinstance(r, list)})
    if problems:
        raise FingerprintError(problems)
    return _aggregate(dataset, results, connectivity)


def _aggregate(dataset: Dataset, results: list[CaseFingerprint], connectivity: str) -> dict:
    flat = all(r.is_2d for r in results)
    labelled = [r for r in results if r.record["labelled"]]
    shapes = np.array([r.record["shape"] for r in results])
    spacings = np.array([r.record["spacing"] for r in results])
    cropped = np.array([r.record["shape_after_crop"] for r in results])
    # a 2D image's spacing along its one slice says nothing of the image
    median_spacing = np.median(spacings, axis=0)[: 2 if flat else 3]
    values = sorted(dataset.foreground_labels) or sorted({v for r in labelled for v in r.classes})
    names = {v: dataset.labels.get(v, f"label_{v}") for v in values}
    intensity = {
        str(c): intensity_summary(np.concatenate([r.intensity_samples[c] for r in labelled]))
        for c in range(len(dataset.channel_names))
    }
    class_statistics = _image_class_statistics if flat else _volume_class_statistics
    return {
        "schema_version": SCHEMA_VERSION,
        "provenance": {
            "tool": "samdsk-plan",
            "version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "layout": dataset.layout,
            "source": f"{dataset.name}/{dataset.source.name}",
        },
        "name": dataset.name,
        "dimensions": 2 if flat else 3,
        "channel_names": {str(i): n for i, n in enumerate(dataset.channel_names)},
        "labels": {str(v): n for v, n in sorted({0: dataset.labels.get(0, "background"), **names}.items())},
        "conventions": _conventions(connectivity, flat),
        "n_cases": {"labelled": len(labelled), "unlabelled": len(results) - len(labelled)},
        "cases": {r.case_id: r.record for r in results},
        "spacing": axis_summary(spacings),
        "shape": axis_summary(shapes),
        "shape_after_crop": axis_summary(cropped),
        "median_relative_size_after_cropping": rnd(np.median([r.record["relative_size_after_crop"] for r in results])),
        "anisotropy": {
            "ratio": rnd(median_spacing.max() / median_spacing.min()),
            "coarsest_axis": int(np.argmax(median_spacing)),
            "finest_axis": int(np.argmin(median_spacing)),
        },
        "foreground_intensity_properties_per_channel": intensity,
        "classes": {str(v): class_statistics(v, names[v], labelled) for v in values},
    }


def _conventions(connectivity: str, flat: bool) -> dict:
    """Axes, units and connectivity of the fingerprint, for 2D images or for volumes."""
    if flat:
        return {
            "images": "2D images: each case is one slice [x, y, 0] (x the column, y the row of a natural image)",
            "axes": "pixel axes 0, 1 (x, y) of the image; axis 2 is its one slice",
            "spacing_unit": "mm; natural images (PNG, JPEG, BMP, TIFF) carry no spacing and are read with 1: "
            "1 px, its size in mm unknown",
            "area_unit": "pixels, and mm2 = pixels x spacing[0] x spacing[1]",
            "connectivity": {"name": connectivity, "neighbours_2d": neighbour_count(2, connectivity)},
            "intensity": "foreground (label > 0) pixels of labelled images",
            "shape_statistics": "over all images, labelled and unlabelled",
        }
    return {
        "axes": "voxel axes 0, 1, 2 of the stored image (NIfTI i, j, k order)",
        "spacing_unit": "mm",
        "connectivity": {
            "name": connectivity,
            "neighbours_3d": neighbour_count(3, connectivity),
            "neighbours_2d": neighbour_count(2, connectivity),
        },
        "intensity": "foreground (label > 0) voxels of labelled cases",
        "shape_statistics": "over all cases, labelled and unlabelled",
    }


def _presence(value: int, name: str, labelled: list[CaseFingerprint]) -> tuple[dict, list[float]]:
    """A class's name and presence over the labelled cases, and its share of each case's voxels
    (0 where absent)."""
    observed = [(r, r.classes.get(value)) for r in labelled]
    present = sum(o is not None for _, o in observed)
    fractions = [(o.voxels if o else 0) / np.prod(r.record["shape"]) for r, o in observed]
    return {"name": name, "n_cases_present": present, "present_fraction": rnd(present / len(labelled))}, fractions


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays) if arrays else np.zeros(0)


def _image_class_statistics(value: int, name: str, labelled: list[CaseFingerprint]) -> dict:
    """Class statistics and ROI-count priors of one label value over labelled 2D images: the
    regions per image containing the class, and their areas."""
    statistics, fractions = _presence(value, name, labelled)
    present = [(r, r.classes[value]) for r in labelled if value in r.classes]
    pixel_mm2 = [float(r.spacing[0] * r.spacing[1]) for r, _ in present]
    return {
        **statistics,
        "area_fraction": value_summary(fractions),
        "regions_per_image": count_summary([o.component_voxels.size for _, o in present]),
        "region_area": {
            "pixels": value_summary(_concat([o.component_voxels for _, o in present])),
            "mm2": value_summary(
                _concat([o.component_voxels * a for (_, o), a in zip(present, pixel_mm2, strict=True)])
            ),
        },
    }


def _volume_class_statistics(value: int, name: str, labelled: list[CaseFingerprint]) -> dict:
    """Class statistics and ROI-count priors of one label value over labelled volumes: 3D
    components, and 2D regions per slice along each axis."""
    statistics, fractions = _presence(value, name, labelled)
    observed = [(r, r.classes.get(value)) for r in labelled]
    present = [(r, o) for r, o in observed if o is not None]
    voxel_mm3 = [float(np.prod(r.spacing)) for r, _ in present]
    areas_mm2 = {axis: [float(np.prod(np.delete(r.spacing, axis))) for r, _ in present] for axis in range(3)}
    return {
        **statistics,
        "volume_fraction": value_summary(fractions),
        "components_3d": count_summary([o.component_voxels.size if o else 0 for _, o in observed]),
        "regions_per_slice": {
            str(axis): count_summary(_concat([o.regions_per_slice[axis] for _, o in present])) for axis in range(3)
        },
        "component_size": {
            "voxels": value_summary(_concat([o.component_voxels for _, o in present])),
            "mm3": value_summary(
                _concat([o.component_voxels * v for (_, o), v in zip(present, voxel_mm3, strict=True)])
            ),
        },
        "region_area": {
            str(axis): {
                "pixels": value_summary(_concat([o.region_areas[axis] for _, o in present])),
                "mm2": value_summary(
                    _concat([o.region_areas[axis] * a for (_, o), a in zip(present, areas_mm2[axis], strict=True)])
                ),
            }
            for axis in range(3)
        },
    }


def write_fingerprint(fingerprint: dict, path: str | Path) -> bool:
    """Write ``fingerprint`` as canonical JSON, atomically; a file at ``path`` that holds the same
    fingerprint, its creation time aside, is left as it is (a rerun on unchanged data changes
    nothing, so a committed fingerprint stays clean). Returns whether the file was written."""
    path = Path(path)
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    text = dumps_json(fingerprint)
    if isinstance(old, dict) and _timeless(old) == _timeless(json.loads(text)):
        return False
    atomic_write_text(path, text)
    return True


def _timeless(fingerprint: dict) -> dict:
    """A fingerprint as read from its JSON, without ``provenance.created``."""
    provenance = fingerprint.get("provenance")
    if isinstance(provenance, dict):
        provenance = {k: v for k, v in provenance.items() if k != "created"}
    return {**fingerprint, "provenance": provenance}


def comparable(fingerprint: dict) -> dict:
    """The part of a fingerprint that must be identical for identical data (no provenance)."""
    return {k: v for k, v in fingerprint.items() if k != "provenance"}
