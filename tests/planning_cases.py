"""Synthetic fingerprint builders and constants shared by the tests/test_planning_*.py files.

Known answers in those files are hand-computed from nnU-Net v2's rules.

Rules used in those files' comments (nnU-Net v2 default planner, min feature-map edge 4):
- target spacing: per-axis median; anisotropic when the coarsest axis' median spacing is > 3x the
  next coarsest axis *and* its median voxel count x 3 < the smallest other count: that axis then
  takes the 10th percentile (np.percentile, linear) of its spacings, never finer than the others.
- patch shrinking: the axis with the largest patch / median ratio (ties: the first) loses the
  divisibility factor that the reduced patch needs.
- initial patch: proportional to 1/spacing with 256^3 voxels (3D) / 2048^2 (2D), clipped to the
  median resampled shape.
- topology: an axis is pooled while its feature map is >= 8 voxels and its spacing is < 2x the
  finest poolable spacing; a single remaining axis needs >= 12; kernel 3 on axes whose spacing
  is < 2x the finest spacing (sticky), else 1; bottleneck 3 everywhere; patch padded to a
  multiple of 2**pools; filters 32 * 2**i capped at 320 (3D) / 512 (2D).
- memory model (samdsk_plan.planning.topology): 1 GB + batch * elements * 20 B, elements = sum
  over stages of voxels * filters, counted twice (encoder + decoder) except the bottleneck.
- batch: min(memory batch = floor((budget - 1) / per-sample GB), round(5% of the dataset's
  resampled voxels / patch voxels)), at least 2.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS_FP = REPO / "dataset_fingerprints" / "hippocampus.json"

DEFAULT_INTENSITY = {"mean": 100.0, "std": 20.0, "percentile_00_5": -50.0, "percentile_99_5": 250.0}


def count_dist(histogram: dict) -> dict:
    """A fingerprint count distribution (only ``histogram`` is read by the planner)."""
    return {"histogram": {str(k): v for k, v in histogram.items()}}


def make_class(name: str = "organ", components=None, per_slice=None, areas=None) -> dict:
    """A fingerprint class entry with the keys the planner reads."""
    per_slice = per_slice or {a: {1: 100} for a in range(3)}
    areas = areas or {a: {"n": 10, "min": 1.0, "median": 50.0 + a, "max": 100.0} for a in range(3)}
    return {
        "name": name,
        "components_3d": count_dist(components or {1: 100}),
        "regions_per_slice": {str(a): count_dist(h) for a, h in per_slice.items()},
        "region_area": {str(a): {"pixels": areas[a]} for a in areas},
    }


def make_fp(
    cases, *, channel_names=None, intensity=None, median_rel=1.0, classes=None, name: str = "synthetic"
) -> dict:
    """A synthetic fingerprint holding only the keys the planner reads.

    ``cases``: list of ``(shape_after_crop, spacing)``.
    """
    channel_names = channel_names or {"0": "MRI"}
    intensity = intensity or {c: dict(DEFAULT_INTENSITY) for c in channel_names}
    return {
        "schema_version": 1,
        "name": name,
        "channel_names": channel_names,
        "labels": {"0": "background", "1": "organ"},
        "n_cases": {"labelled": len(cases), "unlabelled": 0},
        "cases": {
            f"case_{i:04d}": {"shape": list(shape), "shape_after_crop": list(shape), "spacing": list(spacing)}
            for i, (shape, spacing) in enumerate(cases)
        },
        "median_relative_size_after_cropping": median_rel,
        "foreground_intensity_properties_per_channel": intensity,
        "classes": classes if classes is not None else {"1": make_class()},
    }


def iso_fp(n_cases: int = 100, shape=(35, 50, 36), **kw) -> dict:
    return make_fp([(shape, (1.0, 1.0, 1.0))] * n_cases, **kw)


# Anisotropic data set: 11 cases of 20 x 400 x 400 voxels, in-plane 0.8 mm; coarse-axis spacings
# sorted [3.5, 4.0, 5 (x8), 6.0] -> median (index 5) = 5.0, 10th percentile at index 0.1 * 10 = 1
# -> exactly 4.0 (no interpolation).
ANISO_COARSE_SPACINGS = [3.5, 4.0] + [5.0] * 8 + [6.0]


def aniso_fp(coarse_axis: int = 0, coarse_spacings=ANISO_COARSE_SPACINGS, coarse_voxels: int = 20, **kw) -> dict:
    cases = []
    for s in coarse_spacings:
        shape, spacing = [400, 400, 400], [0.8, 0.8, 0.8]
        shape[coarse_axis], spacing[coarse_axis] = coarse_voxels, s
        cases.append((tuple(shape), tuple(spacing)))
    return make_fp(cases, **kw)


def permute(values, coarse_axis):
    """Move item 0 of ``values`` (given for coarse axis 0) to ``coarse_axis``."""
    rest = list(values[1:])
    return rest[:coarse_axis] + [values[0]] + rest[coarse_axis:]
