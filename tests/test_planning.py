"""Planning from a fingerprint: known answers hand-computed from nnU-Net v2's rules.

Rules used in the comments below (nnU-Net v2 default planner, min feature-map edge 4):
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

import copy
import json
from pathlib import Path

import pytest

from samdsk_plan.errors import SamdskError
from samdsk_plan.planning import (
    normalization,
    parse_override,
    plan_configuration,
    plan_from_fingerprint,
    plan_topology,
    samdsk_settings,
    target_spacing,
)
from samdsk_plan.planning.planner import coverage_count

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


def make_fp(cases, *, channel_names=None, intensity=None, median_rel=1.0, classes=None,
            name: str = "synthetic") -> dict:
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
        "cases": {f"case_{i:04d}": {"shape": list(shape), "shape_after_crop": list(shape), "spacing": list(spacing)}
                  for i, (shape, spacing) in enumerate(cases)},
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


# --------------------------------------------------------------------------- target spacing


def test_isotropic_target_spacing_is_the_median():
    fp = make_fp([((30, 30, 30), (1.0, 1.0, 1.0)), ((30, 30, 30), (1.2, 1.0, 0.9)), ((30, 30, 30), (1.4, 1.1, 0.8))])
    spacing, reason = target_spacing(fp)
    # Per-axis medians: axis 0 of [1.0, 1.2, 1.4] = 1.2, axis 1 of [1.0, 1.0, 1.1] = 1.0,
    # axis 2 of [1.0, 0.9, 0.8] = 0.9; 1.2 < 3 * 0.9, so not anisotropic.
    assert spacing == pytest.approx([1.2, 1.0, 0.9])
    assert "median" in reason


@pytest.mark.parametrize("coarse_axis", [0, 2])
def test_anisotropic_target_spacing_takes_the_10th_percentile(coarse_axis):
    fp = aniso_fp(coarse_axis)
    spacing, reason = target_spacing(fp)
    # Median coarse spacing 5.0 > 3 * 0.8 = 2.4 and median coarse voxels 20 * 3 = 60 < 400:
    # anisotropic -> 10th percentile of [3.5, 4.0, 5 x8, 6.0] = 4.0 (>= 0.8, so kept).
    assert spacing == pytest.approx(permute([4.0, 0.8, 0.8], coarse_axis))
    assert "anisotropic" in reason


def test_anisotropic_10th_percentile_interpolates_linearly():
    # 10 cases, sorted coarse spacings [3.0, 4.0, 5 x8]: np.percentile(.., 10) at index 0.9
    # -> 3.0 + 0.9 * (4.0 - 3.0) = 3.9 (median 5.0 -> anisotropic as above).
    fp = aniso_fp(0, coarse_spacings=[3.0, 4.0] + [5.0] * 8)
    spacing, _ = target_spacing(fp)
    assert spacing == pytest.approx([3.9, 0.8, 0.8])


def test_anisotropic_10th_percentile_is_not_finer_than_the_other_axes():
    # Sorted coarse spacings [0.3, 0.5, 5 x9]: median 5.0 (anisotropic), 10th percentile 0.5 is
    # finer than the in-plane 0.8 mm, so it is raised to 0.8 (+1e-5 in nnU-Net).
    fp = aniso_fp(0, coarse_spacings=[0.3, 0.5] + [5.0] * 9)
    spacing, _ = target_spacing(fp)
    assert spacing[0] >= 0.8
    assert spacing == pytest.approx([0.8, 0.8, 0.8], abs=1e-4)


def test_anisotropic_spacing_but_enough_voxels_keeps_the_median():
    # Spacing condition holds (5.0 > 2.4), but 200 coarse voxels * 3 = 600 >= 400 in-plane voxels:
    # the voxel-count condition fails, so the median 5.0 is kept (not the 10th percentile 4.0).
    fp = aniso_fp(0, coarse_voxels=200)
    spacing, reason = target_spacing(fp)
    assert spacing == pytest.approx([5.0, 0.8, 0.8])
    assert "not anisotropic" in reason


# --------------------------------------------------------------------------- isotropic plan


def test_isotropic_3d_configuration():
    # 100 cases of 35 x 50 x 36 at 1 mm.
    plan = plan_from_fingerprint(iso_fp(100))
    cfg = plan["configurations"]["3d_fullres"]
    assert plan["target_spacing"] == [1.0, 1.0, 1.0]
    assert cfg["median_shape"] == [35.0, 50.0, 36.0]
    # Initial patch 256^3 clipped to [35, 50, 36]. Pooling: [35,50,36] -> [18,25,18] -> [9,13,9]
    # -> [5,7,5] (all >= 8 before each step), then none >= 8: 3 pools per axis, divisible by 8
    # -> patch [40, 56, 40]; 4 stages -> filters [32, 64, 128, 256]; all spacings equal -> kernel 3.
    assert cfg["patch_size"] == [40, 56, 40]
    net = cfg["network"]
    assert net["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert net["kernel_size"] == [[3, 3, 3]] * 4
    assert net["filters"] == [32, 64, 128, 256]
    assert net["divisible_by"] == [8, 8, 8]
    assert net["upsample_kernel_size"] == [[2, 2, 2]] * 3
    # Memory: elements = 2*32*40*56*40 + 2*64*20*28*20 + 2*128*10*14*10 + 256*5*7*5
    #   = 5,734,400 + 1,433,600 + 358,400 + 44,800 = 7,571,200 x 19.5 B -> 0.1476384 GB per sample;
    # memory batch = floor(7 / 0.1476384) = 47; 5% cap = round(0.05 * 100 * 63,000 / 89,600)
    #   = round(3.516) = 4 -> batch 4; estimate 1 + 4 * 0.1476384 = 1.5905536.
    assert cfg["batch_size"] == 4
    assert cfg["estimated_memory_gb"] == pytest.approx(1.591)


def test_isotropic_2d_configuration():
    plan = plan_from_fingerprint(iso_fp(100))
    cfg = plan["configurations"]["2d"]
    # Spacing ties -> slice axis 2 (the last); in-plane axes 0, 1: spacing [1, 1], median [35, 50].
    # 2048^2 clipped to [35, 50]; [35,50] -> [18,25] -> [9,13] -> [5,7]: 3 pools -> [40, 56].
    assert cfg["slice_axis"] == 2
    assert cfg["spacing"] == [1.0, 1.0]
    assert cfg["median_shape"] == [35.0, 50.0]
    assert cfg["patch_size"] == [40, 56]
    assert cfg["network"]["strides"] == [[1, 1], [2, 2], [2, 2], [2, 2]]
    assert cfg["network"]["kernel_size"] == [[3, 3]] * 4
    assert cfg["network"]["filters"] == [32, 64, 128, 256]
    # Memory: 2*32*2240 + 2*64*560 + 2*128*140 + 256*35 = 259,840 elements -> 0.00506688 GB,
    # memory batch floor(7 / 0.00506688) = 1381; 5% cap round(315,000 / 2240) = round(140.625)
    # = 141 -> batch 141.
    assert cfg["batch_size"] == 141


def test_2d_filters_cap_at_512():
    # 2D, 1 mm, 400 x 400: 400 -> 200 -> 100 -> 50 -> 25 -> 13 -> 7: 6 pools, 7 stages;
    # filters 32 * 2**i capped at 512 (3D would cap at 320); padded to 448 (multiple of 64).
    topo = plan_topology([1.0, 1.0], [400, 400])
    assert topo.filters == (32, 64, 128, 256, 512, 512, 512)
    assert topo.patch_size == (448, 448)
    assert topo.divisible_by == (64, 64)


def test_single_remaining_axis_needs_12_voxels():
    # Spacing [1, 1, 4], patch [16, 16, 10]:
    #  stage 1: axis 2 (4 / 1 >= 2) not pooled -> (2,2,1), sizes [8,8,10], spacing [2,2,4]
    #  stage 2: 4 / 2 >= 2 -> (2,2,1), sizes [4,4,10], spacing [4,4,4]
    #  stage 3: only axis 2 is >= 8 and it is the single remaining axis with 10 < 12 -> stop.
    # Kernels: axis 2 is 1 until its spacing is within 2x of the finest: [3,3,1], [3,3,1], bottleneck 3.
    topo = plan_topology([1.0, 1.0, 4.0], [16, 16, 10])
    assert topo.strides == ((1, 1, 1), (2, 2, 1), (2, 2, 1))
    assert topo.kernel_sizes == ((3, 3, 1), (3, 3, 1), (3, 3, 3))
    assert topo.divisible_by == (4, 4, 1)
    assert topo.patch_size == (16, 16, 10)
    # With 12 voxels on axis 2 the single remaining axis is pooled once more: [4,4,12] -> [4,4,6].
    topo = plan_topology([1.0, 1.0, 4.0], [16, 16, 12])
    assert topo.strides == ((1, 1, 1), (2, 2, 1), (2, 2, 1), (1, 1, 2))
    assert topo.divisible_by == (4, 4, 2)


# --------------------------------------------------------------------------- anisotropic plan


@pytest.mark.parametrize("coarse_axis", [0, 2])
def test_anisotropic_3d_configuration(coarse_axis):
    # Target spacing (coarse axis first) [4.0, 0.8, 0.8]; resampled coarse sizes 20 * s / 4 =
    # [17.5, 20, 25 x8, 30] -> median 25; in-plane 400. Initial patch: 1/spacing = [0.25, 1.25, 1.25],
    # scale = (2**24 / 0.390625)**(1/3) = 350.2 -> [88, 438, 438] clipped to [25, 400, 400].
    # Topology (coarse first):
    #  1: 4/0.8 >= 2 -> pool in-plane only (1,2,2), kernel [1,3,3]; sizes [25,200,200], sp [4,1.6,1.6]
    #  2: 4/1.6 = 2.5 -> (1,2,2), kernel [1,3,3]; [25,100,100], sp [4,3.2,3.2]
    #  3: 4/3.2 < 2 -> (2,2,2), kernel [3,3,3]; [13,50,50]
    #  4: (2,2,2); [7,25,25]
    #  5: 7 < 8 -> (1,2,2); [7,13,13]
    #  6: (1,2,2); [7,7,7]; then nothing >= 8.
    # Pools [2, 6, 6] -> divisible [4, 64, 64] -> patch [28, 448, 448]; 7 stages ->
    # filters [32, 64, 128, 256, 320, 320, 320].
    # Memory per sample: 2*32*5,619,712 + 2*64*1,404,928 + 2*128*351,232 + 2*256*43,904
    #   + 2*320*5,488 + 2*320*1,372 + 320*343 = 656,386,752 elements -> 13.12773504 GB;
    # batch 2 -> 27.255 GB, fits 40 GB (no shrinking); memory batch floor(39 / 13.128) = 2;
    # 5% cap round(0.05 * 160,000 * 267.5 / 5,619,712) = 0 -> batch 2.
    plan = plan_from_fingerprint(aniso_fp(coarse_axis), gpu_memory_gb=40.0)
    cfg = plan["configurations"]["3d_fullres"]
    net = cfg["network"]
    assert plan["target_spacing"] == pytest.approx(permute([4.0, 0.8, 0.8], coarse_axis))
    assert cfg["median_shape"] == permute([25.0, 400.0, 400.0], coarse_axis)
    assert cfg["patch_size"] == permute([28, 448, 448], coarse_axis)
    expected_strides = [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert net["strides"] == [permute(s, coarse_axis) for s in expected_strides]
    expected_kernels = [[1, 3, 3], [1, 3, 3]] + [[3, 3, 3]] * 5
    assert net["kernel_size"] == [permute(k, coarse_axis) for k in expected_kernels]
    assert net["filters"] == [32, 64, 128, 256, 320, 320, 320]
    assert net["divisible_by"] == permute([4, 64, 64], coarse_axis)
    assert cfg["batch_size"] == 2
    # 26.2551 GB of feature maps at 20 B/element before recalibration -> x 19.5/20 + 1 GB overhead.
    assert cfg["estimated_memory_gb"] == pytest.approx(26.599)


@pytest.mark.parametrize("coarse_axis", [0, 2])
def test_anisotropic_early_stages_at_default_budget(coarse_axis):
    # Whatever the patch shrinks to at 8 GB, the first two stages are set by the spacing alone:
    # no pooling and kernel 1 along the coarse axis.
    plan = plan_from_fingerprint(aniso_fp(coarse_axis))
    net = plan["configurations"]["3d_fullres"]["network"]
    assert net["strides"][1] == permute([1, 2, 2], coarse_axis)
    assert net["strides"][2] == permute([1, 2, 2], coarse_axis)
    assert net["kernel_size"][0] == permute([1, 3, 3], coarse_axis)
    assert net["kernel_size"][1] == permute([1, 3, 3], coarse_axis)
    assert net["kernel_size"][-1] == [3, 3, 3]


@pytest.mark.parametrize("coarse_axis", [0, 2])
def test_anisotropic_2d_and_samdsk_use_the_coarse_axis(coarse_axis):
    plan = plan_from_fingerprint(aniso_fp(coarse_axis))
    # Coarsest target-spacing axis = slice axis; 2D works in the other two (0.8 mm, 400 x 400).
    assert plan["samdsk"]["slice_axis"] == coarse_axis
    assert plan["samdsk"]["axes"] == [coarse_axis]
    assert plan["samdsk"]["fusion"] == "single"
    assert list(plan["samdsk"]["classes"]["1"]["regions_per_slice"]) == [str(coarse_axis)]
    assert list(plan["samdsk"]["classes"]["1"]["region_area_px"]) == [str(coarse_axis)]
    cfg2d = plan["configurations"]["2d"]
    assert cfg2d["slice_axis"] == coarse_axis
    assert cfg2d["spacing"] == [0.8, 0.8]
    assert cfg2d["median_shape"] == [400.0, 400.0]


# --------------------------------------------------------------------------- memory budget


def test_patch_shrinks_along_the_axis_with_the_largest_patch_to_median_ratio():
    # Unshrunk: [40, 56, 40], batch 2 -> 1 + 2 * 0.1476384 = 1.2952768 GB > 1.25.
    # Ratios 40/35 = 1.143 > 56/50 = 1.12 > 40/36 = 1.111 -> axis 0 loses 8 (the divisibility of
    # the candidate [32, 56, 40], still 3 pools) -> [32, 56, 40]. Elements 2*32*71,680 +
    # 2*64*8,960 + 2*128*1,120 + 256*140 = 6,056,960 -> 0.11811072 GB; batch 2 -> 1.236 <= 1.25.
    # Memory batch floor(0.25 / 0.11811072) = 2 -> batch 2.
    plan = plan_from_fingerprint(iso_fp(2000), gpu_memory_gb=1.25)
    cfg = plan["configurations"]["3d_fullres"]
    assert cfg["patch_size"] == [32, 56, 40]
    assert cfg["batch_size"] == 2
    assert cfg["estimated_memory_gb"] == pytest.approx(1.236)
    assert "shrunk" in cfg["reasons"]["patch_size"]


def test_tiny_budget_shrinks_the_patch_and_fits():
    fp = iso_fp(20, shape=(160, 160, 160))
    big = plan_from_fingerprint(fp, gpu_memory_gb=8.0)["configurations"]["3d_fullres"]
    small = plan_from_fingerprint(fp, gpu_memory_gb=1.2)["configurations"]["3d_fullres"]
    # Patch at 1.2 GB is smaller on every axis and in total than at 8 GB.
    assert all(s <= b for s, b in zip(small["patch_size"], big["patch_size"]))
    assert small["patch_size"] != big["patch_size"]
    assert small["estimated_memory_gb"] <= 1.2
    assert big["estimated_memory_gb"] <= 8.0
    assert small["batch_size"] == 2
    # Still a valid patch: a multiple of 2**pools on every axis.
    assert all(p % d == 0 for p, d in zip(small["patch_size"], small["network"]["divisible_by"]))


@pytest.mark.parametrize("budget", [1.0, 0.5])
def test_budget_at_or_below_the_fixed_overhead_raises(budget):
    with pytest.raises(SamdskError):
        plan_from_fingerprint(iso_fp(10), gpu_memory_gb=budget)


# --------------------------------------------------------------------------- batch size


@pytest.mark.parametrize(
    ("n_cases", "batch"),
    [
        # 5% cap: round(0.05 * n * 63,000 / 89,600); memory batch is 47 (see the isotropic test).
        (100, 4),  # round(3.516) = 4 < 47
        (1000, 35),  # round(35.16) = 35 < 47
        (2000, 47),  # round(70.31) = 70 > 47 -> memory bound 47
        (10, 2),  # round(0.352) = 0 -> at least 2
    ],
)
def test_batch_size_is_capped_at_5_percent_of_the_dataset(n_cases, batch):
    cfg = plan_from_fingerprint(iso_fp(n_cases))["configurations"]["3d_fullres"]
    assert cfg["patch_size"] == [40, 56, 40]
    assert cfg["batch_size"] == batch


def test_plan_configuration_batch_from_dataset_voxels():
    # Direct: 3,000,000 voxels * 5% / 89,600 = 1.67 -> 2; 9,000,000 * 5% / 89,600 = 5.02 -> 5.
    assert plan_configuration([1.0, 1.0, 1.0], [35, 50, 36], 3e6, 8.0)["batch_size"] == 2
    assert plan_configuration([1.0, 1.0, 1.0], [35, 50, 36], 9e6, 8.0)["batch_size"] == 5


# --------------------------------------------------------------------------- normalisation


def test_ct_normalisation_clips_and_uses_fingerprint_mean_std():
    props = {"mean": 40.5, "std": 75.25, "percentile_00_5": -980.0, "percentile_99_5": 1234.5}
    fp = iso_fp(5, channel_names={"0": "CT"}, intensity={"0": props}, median_rel=0.5)
    (ch,) = normalization(fp)
    assert ch["scheme"] == "ct"
    assert ch["channel"] == 0
    assert ch["clip"] == [-980.0, 1234.5]
    assert ch["mean"] == 40.5
    assert ch["std"] == 75.25


@pytest.mark.parametrize("name", ["MRI", "T2", "ADC"])
@pytest.mark.parametrize(("median_rel", "nonzero"), [(1.0, False), (0.75, False), (0.74, True), (0.3, True)])
def test_non_ct_channels_use_zscore(name, median_rel, nonzero):
    fp = iso_fp(5, channel_names={"0": name}, median_rel=median_rel)
    (ch,) = normalization(fp)
    assert ch["scheme"] == "zscore"
    assert ch["nonzero"] is nonzero


def test_multi_channel_normalisation():
    names = {"0": "CT", "1": "T2", "2": "noNorm"}
    fp = iso_fp(5, channel_names=names, median_rel=0.5)
    out = normalization(fp)
    assert [c["channel"] for c in out] == [0, 1, 2]
    assert [c["scheme"] for c in out] == ["ct", "zscore", "nonorm"]
    assert out[1]["nonzero"] is True
    plan = plan_from_fingerprint(fp)
    assert [c["scheme"] for c in plan["normalization"]] == ["ct", "zscore", "nonorm"]


# --------------------------------------------------------------------------- SamDSK section


@pytest.mark.parametrize(
    ("histogram", "expected"),
    [
        ({"1": 97, "2": 2, "3": 1}, 2),  # 97% < 99%, 99% >= 99% -> 2
        ({"1": 50, "2": 50}, 2),  # 50% < 99% -> 2
        ({"1": 990, "4": 10}, 1),  # 990 / 1000 = 99% exactly -> 1
        ({"2": 1, "1": 98, "5": 1}, 2),  # keys unsorted: 1 -> 98%, 2 -> 99% -> 2
        ({"0": 100}, 1),  # at least 1
        ({}, 1),  # empty -> 1
        ({"0": 5, "1": 90, "2": 4, "7": 1}, 2),  # 5%, 95%, 99% -> 2
    ],
)
def test_coverage_count(histogram, expected):
    assert coverage_count({"histogram": histogram}) == expected


def test_samdsk_settings_isotropic():
    cls = make_class(
        "liver",
        components={0: 1, 1: 90, 2: 8, 3: 1},  # 1%, 91%, 99% -> 2
        per_slice={0: {1: 97, 2: 2, 3: 1},  # -> 2
                   1: {1: 100},  # -> 1
                   2: {1: 50, 3: 49, 6: 1}},  # 50%, 99% -> 3
    )
    fp = iso_fp(10, classes={"1": cls})
    plan = plan_from_fingerprint(fp)
    sam = plan["samdsk"]
    assert sam["axes"] == [0, 1, 2]
    assert sam["fusion"] == "vote"
    assert sam["slice_axis"] == 2  # ties -> last axis
    c = sam["classes"]["1"]
    assert c["name"] == "liver"
    assert c["regions_per_slice"] == {"0": {"lower": 1, "upper": 2}, "1": {"lower": 1, "upper": 1},
                                      "2": {"lower": 1, "upper": 3}}
    assert c["max_components_3d"] == 2
    assert c["region_area_px"] == {str(a): cls["region_area"][str(a)]["pixels"] for a in range(3)}
    # SamDSK paper settings.
    sam_cfg = sam["proposals"]["sam"]
    assert sam_cfg["pred_iou_thresh"] == 0.5
    assert sam_cfg["stability_score_thresh"] == 0.5
    assert sam_cfg["box_nms_thresh"] == 0.5
    assert sam["acceptance_threshold"] == 0.9


def test_samdsk_settings_direct_anisotropy_threshold():
    fp = iso_fp(3)
    # Ratio 2.9 < 3 -> isotropic (all axes); ratio 3.0 -> in-plane only, slice axis = coarsest.
    assert samdsk_settings(fp, [1.0, 2.9, 1.0])["axes"] == [0, 1, 2]
    s = samdsk_settings(fp, [1.0, 1.0, 3.0])
    assert s["axes"] == [2] and s["slice_axis"] == 2 and s["fusion"] == "single"


# --------------------------------------------------------------------------- overrides


def test_override_sets_value_and_is_recorded():
    plan = plan_from_fingerprint(iso_fp(10), overrides={"samdsk.acceptance_threshold": 0.8})
    assert plan["samdsk"]["acceptance_threshold"] == 0.8
    assert plan["overrides"] == {"samdsk.acceptance_threshold": 0.8}
    assert plan_from_fingerprint(iso_fp(10))["overrides"] == {}


def test_nested_override():
    plan = plan_from_fingerprint(iso_fp(10), overrides={"configurations.3d_fullres.batch_size": 3})
    assert plan["configurations"]["3d_fullres"]["batch_size"] == 3
    assert plan["overrides"] == {"configurations.3d_fullres.batch_size": 3}


@pytest.mark.parametrize("key", ["samdsk.no_such_setting", "no_such_section.x", "samdsk.acceptance_threshold.x"])
def test_unknown_override_key_raises(key):
    with pytest.raises(SamdskError, match=key.replace(".", r"\.")):
        plan_from_fingerprint(iso_fp(10), overrides={key: 1})


def test_parse_override():
    assert parse_override("a.b=2") == ("a.b", 2)
    assert parse_override("a=foo") == ("a", "foo")
    assert parse_override("x.y=0.8") == ("x.y", 0.8)
    assert parse_override("x=[1, 2]") == ("x", [1, 2])
    assert parse_override("x=true") == ("x", True)
    for bad in ("no_equals_sign", "=3"):
        with pytest.raises(SamdskError):
            parse_override(bad)


def test_unsupported_schema_version_raises():
    fp = iso_fp(3)
    fp["schema_version"] = 2
    with pytest.raises(SamdskError, match="schema"):
        plan_from_fingerprint(fp)


# --------------------------------------------------------------------------- committed hippocampus


@pytest.fixture(scope="module")
def hippocampus_plan() -> dict:
    return plan_from_fingerprint(json.loads(HIPPOCAMPUS_FP.read_text()))


def test_hippocampus_matches_nnunet_v2(hippocampus_plan):
    # nnU-Net v2's nnUNetPlans for Dataset004_Hippocampus: 3d_fullres patch [40, 56, 40], batch 9;
    # 2d patch [56, 40], batch 366 (both set by the 5% cap: 260 * 63,000 voxels).
    full = hippocampus_plan["configurations"]["3d_fullres"]
    two_d = hippocampus_plan["configurations"]["2d"]
    assert hippocampus_plan["target_spacing"] == [1.0, 1.0, 1.0]
    assert full["patch_size"] == [40, 56, 40]
    assert full["batch_size"] == 9
    assert full["network"]["strides"] == [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    assert full["network"]["filters"] == [32, 64, 128, 256]
    assert two_d["patch_size"] == [40, 56]  # nnU-Net's [56, 40] is in (y, x) = our (j, i) order
    assert two_d["batch_size"] == 366
    assert hippocampus_plan["normalization"][0]["scheme"] == "zscore"
    assert hippocampus_plan["normalization"][0]["nonzero"] is False
    assert hippocampus_plan["samdsk"]["axes"] == [0, 1, 2]


# --------------------------------------------------------------------------- JSON


JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def _assert_plain_json(obj, path="plan"):
    assert type(obj) in JSON_TYPES, f"{path}: {type(obj).__name__}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert type(k) is str, f"{path}: key {k!r}"
            _assert_plain_json(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _assert_plain_json(v, f"{path}[{i}]")


@pytest.mark.parametrize("which", ["isotropic", "anisotropic", "ct", "hippocampus"])
def test_plan_is_plain_deterministic_json(which):
    fp = {
        "isotropic": lambda: iso_fp(10),
        "anisotropic": lambda: aniso_fp(2),
        "ct": lambda: iso_fp(5, channel_names={"0": "CT", "1": "T2"}, median_rel=0.5),
        "hippocampus": lambda: json.loads(HIPPOCAMPUS_FP.read_text()),
    }[which]()
    original = copy.deepcopy(fp)
    first = plan_from_fingerprint(fp)
    second = plan_from_fingerprint(copy.deepcopy(fp))
    assert fp == original  # the fingerprint is not modified
    text = json.dumps(first)  # default settings: fails on numpy ints/bools
    assert text == json.dumps(second)
    json.dumps(first, allow_nan=False)
    assert json.loads(text) == first  # no tuples, no non-string keys
    _assert_plain_json(first)  # no numpy scalars, even float64 (a float subclass)


def test_anisotropy_compares_with_the_next_coarsest_axis():
    # Median spacing (0.8, 1.5, 4.45): 4.45 > 3 * 0.8 but not > 3 * 1.5 = 4.5, so nnU-Net keeps the
    # median 4.45 even though the coarse axis has few voxels (40 * 3 < 200).
    cases = [((200, 200, 40), (0.8, 1.5, 4.0 + 0.1 * i)) for i in range(10)]
    spacing = plan_from_fingerprint(make_fp(cases))["target_spacing"]
    assert spacing == pytest.approx([0.8, 1.5, 4.45])


def test_patch_shrinking_does_not_skip_sizes():
    # 1 mm, median 256^3: batch 2 of the 256^3 start does not fit 8 GB. Shrinking the axis with
    # the largest patch/median ratio (ties: the first) by the divisibility the reduced patch needs
    # ends, as in nnU-Net, at its reference 128^3 patch (7.97 GB at batch 2); stepping by the
    # current divisibility (64 at 256) would skip 224 and 160 and end smaller.
    cfg = plan_from_fingerprint(iso_fp(20, shape=(256, 256, 256)))["configurations"]["3d_fullres"]
    assert cfg["patch_size"] == [128, 128, 128]
    assert cfg["batch_size"] == 2
    assert cfg["estimated_memory_gb"] <= 8.0


def test_small_images_get_two_stages_without_deep_supervision_or_an_error():
    # 2D median 14 x 14: one pool (14 >= 8, 7 < 8) -> 2 stages, 1 up-sampling layer: DynUNet cannot
    # have an extra head, so deep supervision is off. 6^3: no axis can be pooled at all.
    two_d = plan_configuration([1.0, 1.0], [14.0, 14.0], 1e6, 8.0)
    assert two_d["network"]["strides"] == [[1, 1], [2, 2]] and two_d["network"]["deep_supervision"] is False
    with pytest.raises(SamdskError, match="too small for a U-Net"):
        plan_configuration([1.0, 1.0, 1.0], [6.0, 6.0, 6.0], 1e6, 8.0)
