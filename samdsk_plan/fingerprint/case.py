"""Everything the fingerprint needs from one case, computed in a worker process.

A 3D case gives each class's 3D components and its 2D regions per slice along every axis; a 2D
image (one slice ``[x, y, 0]``, see :mod:`samdsk_plan.io.images`) gives its regions in the image
and nothing per axis.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from samdsk_plan.fingerprint.components import component_sizes, slice_components
from samdsk_plan.fingerprint.stats import intensity_summary, rnd, rnd_list
from samdsk_plan.io import Case, CaseArrays, Problem, read_case_checked


@dataclass
class ClassObservation:
    """One class in one labelled case.

    Attributes:
        voxels: number of voxels (pixels of a 2D image) of the class.
        component_voxels: ``(N,)`` sizes of its connected components in voxels: the 3D components
            of a volume, the regions of a 2D image (in pixels).
        regions_per_slice: per axis, ``(S,)`` region counts of the slices containing the class;
            ``None`` for a 2D image.
        region_areas: per axis, ``(M,)`` areas of all its 2D regions, in pixels; ``None`` for a
            2D image.
    """

    voxels: int
    component_voxels: np.ndarray
    regions_per_slice: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    region_areas: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclass
class CaseFingerprint:
    """Per-case result: the JSON record plus raw material for dataset-level aggregation."""

    case_id: str
    record: dict
    spacing: tuple[float, float, float]
    intensity_samples: list[np.ndarray] = field(default_factory=list)
    classes: dict[int, ClassObservation] = field(default_factory=dict)
    is_2d: bool = False


def nonzero_bbox(image: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the non-zero region of a ``(C, I, J, K)`` image, as nnU-Net crops it:
    voxels non-zero in any channel, holes filled. The whole image when it is all zero."""
    mask = ndimage.binary_fill_holes(np.any(image != 0, axis=0))
    objects = ndimage.find_objects(mask.astype(np.uint8))
    return objects[0] if objects else tuple(slice(0, s) for s in image.shape[1:])


def observe_class(mask: np.ndarray, connectivity: str, is_2d: bool) -> ClassObservation:
    """Region counts and sizes of one class's boolean ``(I, J, K)`` mask; for a 2D image
    (``K == 1``) only its regions, labelled in-plane."""
    if is_2d:
        return ClassObservation(
            voxels=int(np.count_nonzero(mask)), component_voxels=component_sizes(mask[:, :, 0], connectivity)
        )
    per_axis = [slice_components(mask, axis, connectivity) for axis in range(3)]
    return ClassObservation(
        voxels=int(np.count_nonzero(mask)),
        component_voxels=component_sizes(mask, connectivity),
        regions_per_slice=tuple(p[0] for p in per_axis),
        region_areas=tuple(p[1] for p in per_axis),
    )


def sample_foreground(values: np.ndarray, cap: int, case_id: str) -> np.ndarray:
    """At most ``cap`` of ``values``, drawn without replacement with a seed fixed by ``case_id``
    (so the result does not depend on worker scheduling); all of them when there are fewer."""
    if values.size <= cap:
        return values
    rng = np.random.default_rng(zlib.crc32(case_id.encode("utf-8")))
    return values[np.sort(rng.choice(values.size, size=cap, replace=False))]


def fingerprint_arrays(arrays: CaseArrays, connectivity: str, samples_per_case: int) -> CaseFingerprint:
    """Fingerprint of a case already read and checked (see :func:`fingerprint_case`)."""
    import nibabel as nib

    image, label = arrays.image, arrays.label
    bbox = nonzero_bbox(image)
    cropped = [s.stop - s.start for s in bbox]
    record: dict = {
        "labelled": label is not None,
        "shape": list(image.shape[1:]),
        "spacing": rnd_list(arrays.spacing),
        "orientation": "".join(nib.aff2axcodes(arrays.affine)),
        "shape_after_crop": cropped,
        "relative_size_after_crop": rnd(np.prod(cropped) / np.prod(image.shape[1:])),
    }
    result = CaseFingerprint(arrays.case.case_id, record, arrays.spacing, is_2d=arrays.is_2d)
    if label is None:
        return result
    fg = label > 0
    result.intensity_samples = [
        sample_foreground(channel[fg].astype(np.float32), samples_per_case, arrays.case.case_id) for channel in image
    ]
    record["foreground_intensity"] = {str(c): intensity_summary(channel[fg]) for c, channel in enumerate(image)}
    record["classes"] = {}
    for value, box in enumerate(ndimage.find_objects(label), start=1):
        if box is None:
            continue
        obs = observe_class(label[box] == value, connectivity, arrays.is_2d)
        result.classes[value] = obs
        record["classes"][str(value)] = _class_record(obs)
    return result


def _class_record(obs: ClassObservation) -> dict:
    """A class's entry in the case record: pixels and regions of a 2D image, else voxels, 3D
    components and the most regions in one slice per axis."""
    if obs.regions_per_slice is None:
        return {"pixels": obs.voxels, "regions": int(obs.component_voxels.size)}
    return {
        "voxels": obs.voxels,
        "components_3d": int(obs.component_voxels.size),
        "max_regions_per_slice": [int(c.max()) for c in obs.regions_per_slice],
    }


def fingerprint_case(
    case: Case,
    channel_names: tuple[str, ...],
    labels: dict[int, str],
    connectivity: str,
    samples_per_case: int,
    tolerance: float,
) -> CaseFingerprint | list[Problem]:
    """Read, check and fingerprint one case; the problems instead when it fails the checks."""
    arrays, problems = read_case_checked(case, channel_names, labels, tolerance)
    if arrays is None:
        return problems
    return fingerprint_arrays(arrays, connectivity, samples_per_case)
