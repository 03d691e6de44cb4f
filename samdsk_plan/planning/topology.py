"""Patch size, U-Net topology and memory estimate: nnU-Net v2's rules as plain functions.

Rules (nnU-Net v2 ``get_pool_and_conv_props``): an axis is down-sampled by 2 at a stage while
its feature map stays at least ``2 * min_edge`` voxels and its current spacing is within a
factor 2 of the finest spacing among the axes that can still be pooled (and, when only one
axis remains, while it is at least ``3 * min_edge``). Convolutions use kernel 3 along an axis
once its spacing is within 2x of the finest, else 1; the bottleneck uses 3 everywhere. The
patch is padded up to a multiple of ``2 ** pools`` per axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

BASE_FILTERS = 32
MAX_FILTERS = {2: 512, 3: 320}
# Memory model (analytic, so planning needs no GPU): each stored feature-map element of the
# encoder and decoder costs BYTES_PER_ELEMENT during a mixed-precision training step
# (convolution, normalisation and activation outputs kept for the backward pass, gradients,
# deep-supervision heads), plus a fixed overhead for the CUDA context, weights, optimiser
# state and workspaces. Calibrated so that nnU-Net's reference configuration (128^3 patch,
# 6 stages of 32..320 filters, batch 2) fills the 8 GB default budget, as nnU-Net's reference
# constant does (7.97 GB).
BYTES_PER_ELEMENT = 19.5
FIXED_OVERHEAD_GB = 1.0


@dataclass(frozen=True)
class Topology:
    """A U-Net topology for a patch.

    Attributes:
        patch_size: patch in voxels, padded to a multiple of ``divisible_by``.
        strides: per stage, down-sampling factor per axis; the first stage is all 1.
        kernel_sizes: per stage, convolution kernel size per axis.
        filters: feature channels per stage (doubling from 32, capped).
        divisible_by: per axis, ``2 ** pools``: every input size must be a multiple of it.
    """

    patch_size: tuple[int, ...]
    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    filters: tuple[int, ...]
    divisible_by: tuple[int, ...]


def initial_patch_size(spacing: Sequence[float], median_shape: Sequence[float]) -> list[int]:
    """nnU-Net's starting patch: proportional to 1/spacing with 256^3 (3D) or 2048^2 (2D)
    voxels, clipped to the median (resampled) image shape."""
    budget = 256**3 if len(spacing) == 3 else 2048**2
    inv = [1.0 / s for s in spacing]
    scale = (budget / math.prod(inv)) ** (1.0 / len(spacing))
    return [min(round(i * scale), round(m)) for i, m in zip(inv, median_shape, strict=True)]


def plan_topology(spacing: Sequence[float], patch_size: Sequence[int], min_edge: int = 4) -> Topology:
    """Strides, kernels and padded patch for ``patch_size`` (voxels) at ``spacing`` (mm)."""
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [int(p) for p in patch_size]
    pools = [0] * dim
    kernel = [1] * dim
    strides: list[tuple[int, ...]] = [(1,) * dim]
    kernels: list[tuple[int, ...]] = []
    while True:
        poolable = [i for i in range(dim) if current_size[i] >= 2 * min_edge]
        if not poolable:
            break
        finest = min(current_spacing[i] for i in poolable)
        poolable = [i for i in poolable if current_spacing[i] / finest < 2]
        if len(poolable) == 1 and current_size[poolable[0]] < 3 * min_edge:
            break
        finest_all = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[i] / finest_all < 2 else 1 for i, k in enumerate(kernel)]
        kernels.append(tuple(kernel))
        strides.append(tuple(2 if i in poolable else 1 for i in range(dim)))
        for i in poolable:
            pools[i] += 1
            current_spacing[i] *= 2
            current_size[i] = math.ceil(current_size[i] / 2)
    kernels.append((3,) * dim)
    divisible_by = tuple(2**p for p in pools)
    padded = tuple(math.ceil(p / d) * d for p, d in zip(patch_size, divisible_by, strict=True))
    filters = tuple(min(BASE_FILTERS * 2**s, MAX_FILTERS[dim]) for s in range(len(strides)))
    return Topology(padded, tuple(strides), tuple(kernels), filters, divisible_by)


def feature_map_elements(topology: Topology) -> int:
    """Feature-map elements of one sample kept by encoder and decoder (bottleneck once)."""
    size = list(topology.patch_size)
    total = 0
    for stage, (stride, filters) in enumerate(zip(topology.strides, topology.filters, strict=True)):
        size = [math.ceil(s / st) for s, st in zip(size, stride, strict=True)]
        per_stage = math.prod(size) * filters
        total += per_stage if stage == len(topology.strides) - 1 else 2 * per_stage
    return total


def estimate_memory_gb(topology: Topology, batch_size: int) -> float:
    """Estimated GPU memory in GB of one training step (see the module's memory model)."""
    return FIXED_OVERHEAD_GB + batch_size * feature_map_elements(topology) * BYTES_PER_ELEMENT / 1e9
