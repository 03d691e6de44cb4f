"""3D volumes as stacks of 2D slices for the proposal generators."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def window_to_unit(volume: np.ndarray, normalization: dict) -> np.ndarray:
    """Map a ``(I, J, K)`` volume to float32 in [0, 1] with the plan's intensity window.

    CT (``scheme == "ct"``) uses the plan's fixed clip window (the dataset's foreground
    0.5 / 99.5 percentiles); every other scheme uses this volume's own 0.5 / 99.5 percentiles
    (over its non-zero voxels when the plan normalises inside the non-zero mask), the window
    nnU-Net-style per-image normalisation implies. A constant volume maps to zeros.
    """
    v = np.asarray(volume, dtype=np.float32)
    if normalization.get("scheme") == "ct":
        lo, hi = normalization["clip"]
    else:
        values = v[v != 0] if normalization.get("nonzero") and np.any(v != 0) else v
        lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        return np.zeros_like(v)
    return np.clip((v - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def slice_indices(shape: tuple[int, ...], axis: int, roi: np.ndarray | None = None, margin: int = 2) -> list[int]:
    """Indices of the slices across ``axis`` that lie within ``margin`` slices of a voxel of the
    boolean ``roi`` (predicted or labelled foreground); every slice when ``roi`` is None."""
    n = shape[axis]
    if roi is None:
        return list(range(n))
    present = np.any(roi, axis=tuple(a for a in range(roi.ndim) if a != axis))
    near = ndimage.binary_dilation(present, iterations=margin) if margin > 0 and present.any() else present
    return np.flatnonzero(near).tolist()


def get_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` across ``axis`` of a 3D array (the other axes keep their order)."""
    return np.take(volume, index, axis=axis)


def roi_window(roi: np.ndarray, margin: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The region of interest of a slice: the bounding box of the boolean ``roi`` ``(H, W)``
    (predicted or labelled foreground) grown by ``margin`` pixels per side, clipped to the
    slice, as ``(offset, size)``; None when ``roi`` is empty."""
    rows, cols = np.flatnonzero(roi.any(axis=1)), np.flatnonzero(roi.any(axis=0))
    if rows.size == 0:
        return None
    top = max(int(rows[0]) - margin, 0), max(int(cols[0]) - margin, 0)
    bottom = min(int(rows[-1]) + 1 + margin, roi.shape[0]), min(int(cols[-1]) + 1 + margin, roi.shape[1])
    return top, (bottom[0] - top[0], bottom[1] - top[1])
