"""Planning from a fingerprint: isotropic and anisotropic 3D / 2D configurations, patch shrinking,
small images.

The rules behind the known answers are listed in tests/planning_cases.py.
"""

from __future__ import annotations

import pytest

from samdsk_plan.errors import SamdskError
from samdsk_plan.planning import plan_configuration, plan_from_fingerprint, plan_topology
from tests.planning_cases import aniso_fp, iso_fp, permute

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
