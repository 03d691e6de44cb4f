"""Connected components of binary masks: how many separate regions, and how large.

Plain functions on numpy arrays (scipy.ndimage underneath). ``connectivity`` is ``"face"``
(6-neighbourhood in 3D, 4 in 2D) or ``"full"`` (26 in 3D, 8 in 2D).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CONNECTIVITIES = ("face", "full")


def structuring_element(ndim: int, connectivity: str) -> np.ndarray:
    """Boolean ``(3,) * ndim`` neighbourhood for ``connectivity`` (``"face"`` or ``"full"``)."""
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")
    return ndimage.generate_binary_structure(ndim, 1 if connectivity == "face" else ndim)


def neighbour_count(ndim: int, connectivity: str) -> int:
    """Number of neighbours a voxel has under ``connectivity`` (6 or 26 in 3D, 4 or 8 in 2D)."""
    return int(structuring_element(ndim, connectivity).sum()) - 1


def component_sizes(mask: np.ndarray, connectivity: str = "full") -> np.ndarray:
    """Sizes in voxels of the connected components of a boolean ``mask`` (any ndim), sorted
    by label order; empty when the mask is empty."""
    labels, n = ndimage.label(mask, structure=structuring_element(mask.ndim, connectivity))
    return np.bincount(labels.ravel(), minlength=n + 1)[1:]


def slice_components(mask: np.ndarray, axis: int, connectivity: str = "full") -> tuple[np.ndarray, np.ndarray]:
    """2D connected components of every slice of a 3D ``mask`` cut perpendicular to ``axis``.

    All slices are labelled in one pass with a structuring element that has no neighbours
    across ``axis``.

    Returns:
        counts: ``(S,)`` number of regions in each slice that contains the mask (slices
            without foreground are left out), in slice order.
        areas: ``(N,)`` size in pixels of every 2D region, N = ``counts.sum()``.
    """
    plane = structuring_element(2, connectivity)
    structure = np.zeros((3, 3, 3), dtype=bool)
    np.moveaxis(structure, axis, 0)[1] = plane
    labels, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    slice_of = np.array([obj[axis].start for obj in ndimage.find_objects(labels)])
    per_slice = np.bincount(slice_of, minlength=mask.shape[axis])
    return per_slice[per_slice > 0], areas
