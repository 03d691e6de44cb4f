"""One typed view of a plans document, built and validated once (as nnU-Net v2's
``PlansManager`` / ``ConfigurationManager``).

A plans file stays plain JSON (``samdsk-plan plan`` writes it, a bundle carries it as
``configs/plans.json``); the stages read it through :class:`Plans` only::

    plans = Plans.load("bundles/hippocampus/configs/plans.json")   # SamdskError if invalid
    plans.configuration("3d_fullres").patch_size                    # [40, 56, 40]
    plans.samdsk.bounds[2]                                          # [(1, 3), (1, 2)] per class
    plans.samdsk.matching                                           # {"metric": "iou", "target": "soft", ...}

Every view is frozen and derived from the validated document, so a key read here is a key the
schema (``samdsk_plan/schemas/plans.schema.json``) guarantees; :meth:`Plans.to_json` gives the
document back unchanged.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.layouts import read_json_object
from samdsk_plan.io.schemas import validate_plans

# the proposal generator a plan names when the user gives none (``samdsk.proposals.generator``)
DEFAULT_GENERATOR = "classical"
# region area (pixels) the classical generator is scaled to when the fingerprint saw no region on an axis
DEFAULT_OBJECT_AREA_PX = 90.0


@dataclass(frozen=True)
class NetworkPlan:
    """``DynUNet`` topology of one configuration (lists per stage, as MONAI's ``DynUNet`` takes them)."""

    kernel_size: list[list[int]]
    strides: list[list[int]]
    upsample_kernel_size: list[list[int]]
    filters: list[int]
    norm_name: str | list
    deep_supervision: bool
    deep_supr_num: int
    res_block: bool

    @property
    def n_stages(self) -> int:
        return len(self.strides)


@dataclass(frozen=True)
class ConfigurationPlan:
    """One configuration (``3d_fullres`` or ``2d``): spacing in mm and shapes in voxels, per
    spatial axis of the configuration (3 for ``3d_fullres``, 2 for ``2d``); ``divisible_by``: the
    factor each input size must be a multiple of (the product of the network's strides)."""

    name: str
    spacing: list[float]
    median_shape: list[float]
    patch_size: list[int]
    batch_size: int
    network: NetworkPlan
    divisible_by: list[int]
    slice_axis: int | None = None

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)


@dataclass(frozen=True)
class TrainingPlan:
    """The training schedule (``training`` section)."""

    epochs: int
    iterations_per_epoch: int
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    foreground_oversampling: float
    val_fraction: float


@dataclass(frozen=True)
class SamPlan:
    """SAM settings (``samdsk.proposals.sam``): ``checkpoint`` is the default checkpoint path
    (None: the user gives one); ``mode`` ``"automatic"`` (the point grid, with the thresholds
    below) or ``"prompted"`` (boxes around the predicted regions, and with ``point`` a positive
    point inside each; MedSAM is box-only)."""

    model_type: str
    checkpoint: str | None
    mode: str
    point: bool
    points_per_side: int
    pred_iou_thresh: float
    stability_score_thresh: float
    box_nms_thresh: float
    crop_nms_thresh: float

    def generator_settings(self) -> dict[str, float | int]:
        """Keyword arguments of :class:`~samdsk_plan.proposals.sam.SamGenerator` (model excepted)."""
        return {
            "points_per_side": self.points_per_side,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "box_nms_thresh": self.box_nms_thresh,
            "crop_nms_thresh": self.crop_nms_thresh,
        }


@dataclass(frozen=True)
class PromptPlan:
    """Box prompts around the predicted regions (``samdsk.proposals.prompts``; LiteMedSAM and
    SAM's prompted mode): variants per region (``box_scales`` about the centre, ``box_shift`` of
    the box size each way), the extra regions of ``p > lower_cut`` (None: argmax only) and the
    number of largest regions prompted per class and slice (None: all)."""

    box_scales: list[float]
    box_shift: float
    lower_cut: float | None
    max_regions: int | None = None


@dataclass(frozen=True)
class LiteMedSamPlan:
    """LiteMedSAM settings (``samdsk.proposals.litemedsam``): the grid of the automatic mode and
    the embedding cache's bound in GB."""

    grid_overlap: float
    grid_max_boxes: int
    embedding_cache_gb: float


@dataclass(frozen=True)
class ClassPlan:
    """SamDSK settings of one foreground class.

    Attributes:
        value: label value; ``name``: its name.
        bounds: axis -> ``(lower, upper)`` regions per slice where the model predicts the class.
        max_components_3d: 3D connected components kept.
        median_area_px: axis -> median region area in pixels over the labelled slices (None
            when the fingerprint saw no region of the class on that axis).
    """

    value: int
    name: str
    bounds: dict[int, tuple[int, int]]
    max_components_3d: int
    median_area_px: dict[int, float | None]


@dataclass(frozen=True)
class SamdskPlan:
    """The ``samdsk`` section: where, how and with which bounds pseudo-labels are made.

    Attributes:
        axes: slicing axes of the volume the proposals and matching run along.
        slice_axis: the plan's main slicing axis (the ``2d`` configuration's).
        fusion, connectivity, slice_margin: see :func:`~samdsk_plan.matching.match_volume`.
        classes: the foreground classes in label order.
        matching: the matching metric, target and search budgets (the keyword arguments of
            :class:`~samdsk_plan.matching.MatchSettings`; planning does not import matching).
        generator: the proposal generator used when the user names none.
        roi_margin: the classical generator's region of interest per slice, in typical region
            sides around the predicted foreground's box (None: whole slices), see
            :meth:`roi_margin_px`.
        sam: SAM settings; ``prompts``: the box prompts of the prompted generators;
            ``litemedsam``: LiteMedSAM settings.
        acceptance_threshold, calibrate_threshold, calibration_min_cases, max_accepted_per_round,
        pseudo_label_weight, retrain: the loop's acceptance and retraining settings.
    """

    axes: list[int]
    slice_axis: int
    fusion: str
    connectivity: str
    slice_margin: int
    classes: list[ClassPlan]
    matching: dict[str, Any]
    generator: str
    roi_margin: float | None
    sam: SamPlan
    prompts: PromptPlan
    litemedsam: LiteMedSamPlan
    acceptance_threshold: float
    calibrate_threshold: bool
    calibration_min_cases: int
    max_accepted_per_round: int | None
    pseudo_label_weight: float
    retrain: str

    @property
    def class_values(self) -> list[int]:
        return [c.value for c in self.classes]

    @cached_property
    def bounds(self) -> dict[int, list[tuple[int, int]]]:
        """Axis -> per class (label order) ``(lower, upper)`` regions per slice."""
        return {axis: [c.bounds[axis] for c in self.classes] for axis in self.axes}

    @property
    def max_components(self) -> list[int]:
        """Per class (label order) the 3D components kept."""
        return [c.max_components_3d for c in self.classes]

    def _median_areas(self, axis: int) -> list[float]:
        """Per class seen on ``axis``, its median region area there (pixels)."""
        return [a for c in self.classes if (a := c.median_area_px.get(axis)) is not None]

    def object_area_px(self, axis: int) -> float:
        """Median over classes of the classes' median region area on ``axis`` (pixels), the
        scale of the classical generator on that axis."""
        areas = self._median_areas(axis)
        return float(statistics.median(areas)) if areas else DEFAULT_OBJECT_AREA_PX

    def smallest_area_px(self, axis: int) -> float:
        """The smallest over classes of the classes' median region area on ``axis`` (pixels),
        which decides how far the classical generator may shrink a slice."""
        areas = self._median_areas(axis)
        return float(min(areas)) if areas else DEFAULT_OBJECT_AREA_PX

    def roi_margin_px(self, axis: int) -> int | None:
        """Pixels added to each side of the predicted foreground's bounding box on an ``axis``
        slice to make the window the classical generator proposes on: ``roi_margin`` times the
        typical region side ``sqrt(object_area_px(axis))``, rounded up; None: whole slices."""
        if self.roi_margin is None:
            return None
        return math.ceil(self.roi_margin * math.sqrt(self.object_area_px(axis)))

    def grid_box_sides(self, axis: int) -> list[float]:
        """Sides (px) of the square boxes of LiteMedSAM's grid mode on ``axis``: per class a box
        20 % wider than a square of the class's median region area, one per distinct side."""
        areas = self._median_areas(axis) or [DEFAULT_OBJECT_AREA_PX]
        return sorted({round(1.2 * math.sqrt(a), 1) for a in areas})


class Plans:
    """A validated plans document and its typed views.

    Args:
        document: the plans JSON object (validated against the plans schema here).
        source: where it came from, named in errors.

    Raises:
        SamdskError: the document breaks the schema (every problem listed).
    """

    def __init__(self, document: dict[str, Any], source: str | Path = "plans") -> None:
        self._doc = copy.deepcopy(validate_plans(document, source))
        self.source = str(source)

    @classmethod
    def load(cls, path: str | Path) -> Plans:
        """Read and validate a plans JSON file (``samdsk-plan plan`` output, a bundle's ``configs/plans.json``)."""
        return cls(read_json_object(Path(path)), path)

    def to_json(self) -> dict[str, Any]:
        """A copy of the document, as written."""
        return copy.deepcopy(self._doc)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plans) and self._doc == other._doc

    def __repr__(self) -> str:
        return f"Plans({self.dataset_name!r}, source={self.source!r})"

    # ------------------------------------------------------------------ dataset
    @property
    def dataset_name(self) -> str:
        return self._doc["dataset"]["name"]

    @cached_property
    def channel_names(self) -> list[str]:
        """Modality name per image channel, in channel order."""
        names = self._doc["dataset"]["channel_names"]
        return [names[k] for k in sorted(names, key=int)]

    @cached_property
    def labels(self) -> dict[int, str]:
        """Label value -> name, background included, in value order."""
        labels = self._doc["dataset"]["labels"]
        return {int(k): labels[k] for k in sorted(labels, key=int)}

    @property
    def dimensions(self) -> int:
        """2 for a dataset of 2D images (one-slice volumes, see :mod:`samdsk_plan.io.images`), else 3."""
        return int(self._doc["dataset"].get("dimensions", 3))

    @property
    def n_channels(self) -> int:
        return len(self.channel_names)

    @property
    def n_classes(self) -> int:
        """Output channels of the network: background plus every foreground class."""
        return len(self.labels)

    @property
    def n_cases(self) -> dict[str, int]:
        return dict(self._doc["dataset"]["n_cases"])

    # ------------------------------------------------------------------ preprocessing and training
    @property
    def target_spacing(self) -> list[float]:
        """Resampling target in mm, per axis of the image."""
        return list(self._doc["target_spacing"])

    @property
    def normalization(self) -> list[dict[str, Any]]:
        """Per channel its scheme and parameters (``{"channel", "modality", "scheme", ...}``)."""
        return copy.deepcopy(self._doc["normalization"])

    @cached_property
    def training(self) -> TrainingPlan:
        t = self._doc["training"]
        return TrainingPlan(**{k: t[k] for k in TrainingPlan.__dataclass_fields__})

    @property
    def configuration_names(self) -> list[str]:
        return sorted(self._doc["configurations"])

    def configuration(self, name: str = "3d_fullres") -> ConfigurationPlan:
        """The configuration ``name``; SamdskError naming the ones planned if there is none."""
        cfg = self._doc["configurations"].get(name)
        if cfg is None:
            raise SamdskError(
                f"{self.source}: no configuration {name!r} (planned: {', '.join(self.configuration_names)})"
            )
        net = cfg["network"]
        return ConfigurationPlan(
            name=name,
            spacing=list(cfg["spacing"]),
            median_shape=list(cfg["median_shape"]),
            patch_size=list(cfg["patch_size"]),
            batch_size=int(cfg["batch_size"]),
            slice_axis=cfg.get("slice_axis"),
            network=NetworkPlan(**{k: copy.deepcopy(net[k]) for k in NetworkPlan.__dataclass_fields__}),
            divisible_by=list(net["divisible_by"]),
        )

    # ------------------------------------------------------------------ SamDSK
    @cached_property
    def samdsk(self) -> SamdskPlan:
        s = self._doc["samdsk"]
        axes = [int(a) for a in s["axes"]]
        classes = []
        for key in sorted(s["classes"], key=int):
            c = s["classes"][key]
            classes.append(
                ClassPlan(
                    value=int(key),
                    name=c["name"],
                    bounds={int(a): (int(b["lower"]), int(b["upper"])) for a, b in c["regions_per_slice"].items()},
                    max_components_3d=int(c["max_components_3d"]),
                    median_area_px={
                        int(a): (d["median"] if d.get("n", 0) else None) for a, d in c["region_area_px"].items()
                    },
                )
            )
        sam = s["proposals"]["sam"]
        return SamdskPlan(
            axes=axes,
            slice_axis=int(s["slice_axis"]),
            fusion=s["fusion"],
            connectivity=s["connectivity"],
            slice_margin=int(s["slice_margin"]),
            classes=classes,
            matching=dict(s["matching"]),
            generator=s["proposals"]["generator"],
            roi_margin=s["proposals"].get("roi_margin"),
            sam=SamPlan(**{k: sam[k] for k in SamPlan.__dataclass_fields__}),
            prompts=PromptPlan(**copy.deepcopy(s["proposals"]["prompts"])),
            litemedsam=LiteMedSamPlan(**copy.deepcopy(s["proposals"]["litemedsam"])),
            acceptance_threshold=float(s["acceptance_threshold"]),
            calibrate_threshold=bool(s["calibrate_threshold"]),
            calibration_min_cases=int(s["calibration_min_cases"]),
            max_accepted_per_round=s["max_accepted_per_round"],
            pseudo_label_weight=float(s["pseudo_label_weight"]),
            retrain=s["retrain"],
        )
