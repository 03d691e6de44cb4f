"""2D bundles: for 2D images (the ``2d`` configuration on PNG / 2D NIfTI files) and slice-wise for
3D images (``emit --configuration 2d``); the reader and saver they use."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, verify_net_in_out
from PIL import Image

from samdsk_plan.bundle.configs import layout
from samdsk_plan.bundle.emit import bundle_files
from samdsk_plan.bundle.runtime.components import PlanarImageReader, SaveSegmentationd
from samdsk_plan.cli.main import main
from samdsk_plan.errors import SamdskError
from samdsk_plan.planning import plan_from_fingerprint
from samdsk_plan.planning.plans import Plans
from tests.conftest import SCENE_HW, scene, write_scenes

REPO = Path(__file__).resolve().parents[1]


def _emit(tmp_path: Path, rgb: bool = False) -> Path:
    """fingerprint -> plan -> emit for a 2D PNG dataset, through the CLI."""
    root = write_scenes(tmp_path / "data", 4, rgb=rgb)
    fp, plans, bundle = tmp_path / "fp.json", tmp_path / "plans.json", tmp_path / "bundle"
    assert main(["fingerprint", str(root), "-o", str(fp), "-q"]) == 0
    assert main(["plan", str(fp), "-o", str(plans)]) == 0
    assert main(["emit", str(plans), "-o", str(bundle)]) == 0
    return bundle


def _config(bundle: Path, *names: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / n) for n in names])
    return parser


@pytest.mark.parametrize("rgb", [False, True])
def test_a_2d_dataset_emits_a_2d_bundle(tmp_path, rgb):
    bundle = _emit(tmp_path, rgb)
    train = _config(bundle, "train.json")
    net = train.get_parsed_content("network_def")
    assert net.spatial_dims == 2 and net.input_block.conv1.conv.in_channels == (3 if rgb else 1)
    patch = train["patch_size"]
    assert len(patch) == 2 and train["inferer"]["_target_"] == "SlidingWindowInferer"
    random = train["train"]["random_transforms"]
    assert [t["spatial_axis"] for t in random if t["_target_"] == "RandFlipd"] == [0, 1]
    smooth = next(t for t in random if t["_target_"] == "RandGaussianSmoothd")
    assert "sigma_z" not in smooth
    loaders = [t for t in train["train"]["deterministic_transforms"] if t["_target_"].endswith("LoadImageNamedd")]
    assert [(t["keys"], t["reader"]["label"]) for t in loaders] == [("image", False), ("label", True)]
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["task"].startswith("2D segmentation") and meta["samdsk_plan"]["configuration"] == "2d"
    inputs = meta["network_data_format"]["inputs"]["image"]
    assert len(inputs["spatial_shape"]) == 2 and inputs["num_channels"] == (3 if rgb else 1)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        device="cpu",
        n=2,
    )


def test_the_2d_bundle_preprocesses_a_png_as_x_by_y(tmp_path):
    """Loading, channel-first, orientation and spacing give the image's ``[x, y]`` plane (column,
    row), labels included; the values survive."""
    bundle = _emit(tmp_path)
    parser = _config(bundle, "train.json")
    parser["train::deterministic_transforms"] = parser["train::deterministic_transforms"][:-2]  # no normalisation
    pre = parser.get_parsed_content("train::deterministic_transforms")
    data = {"image": str(tmp_path / "data/imagesTr/s_001.png"), "label": str(tmp_path / "data/labelsTr/s_001.png")}
    for t in pre:
        data = t(data)
    image, label = scene(1)
    h, w = SCENE_HW
    assert tuple(data["image"].shape) == (1, w, h) and tuple(data["label"].shape) == (1, w, h)
    assert np.array_equal(data["label"][0].numpy(), label.T)
    assert np.allclose(data["image"][0].numpy(), image.T)


def test_a_2d_plan_cannot_train_3d_and_configuration_names_are_checked(tmp_path):
    root = write_scenes(tmp_path / "data", 3)
    fp = tmp_path / "fp.json"
    assert main(["fingerprint", str(root), "-o", str(fp), "-q"]) == 0
    plans = Plans(plan_from_fingerprint(json.loads(fp.read_text())), "p.json")
    with pytest.raises(SamdskError, match=r"p\.json: the images are 2D; only the 2d configuration"):
        layout(plans, "3d_fullres")
    assert layout(plans).planar and layout(plans).cfg.name == "2d"


@pytest.fixture(scope="module")
def hippocampus_plans() -> Plans:
    return Plans(plan_from_fingerprint(json.loads((REPO / "dataset_fingerprints/hippocampus.json").read_text())))


def test_3d_images_with_the_2d_configuration_train_on_slices(hippocampus_plans):
    cfg = hippocampus_plans.configuration("2d")
    files = bundle_files(hippocampus_plans, "hip2d", "2d")
    train = json.loads(files["configs/train.json"])
    assert train["network_def"]["spatial_dims"] == 2 and train["patch_size"] == cfg.patch_size
    # validation, inference and evaluation run the 2D network slice by slice across the slice axis
    assert train["inferer"] == {
        "_target_": "SliceInferer",
        "roi_size": "@patch_size",
        "sw_batch_size": "@sw_batch_size",
        "overlap": 0.5,
        "mode": "gaussian",
        "spatial_dim": cfg.slice_axis,
    }
    random = train["train"]["random_transforms"]
    crop = next(t for t in random if t["_target_"] == "RandCropByPosNegLabeld")
    expected = list(cfg.patch_size)
    expected.insert(cfg.slice_axis, 1)
    assert crop["spatial_size"] == expected
    squeeze = next(t for t in random if t["_target_"] == "SqueezeDimd")
    assert squeeze["dim"] == cfg.slice_axis + 1 and random.index(squeeze) == random.index(crop) + 1
    # volumes load as in 3D (default readers, RAS, the 3D target spacing)
    det = train["train"]["deterministic_transforms"]
    assert det[0] == {"_target_": "samdsk_plan.bundle.runtime.components.LoadImageNamedd", "keys": ["image", "label"]}
    assert next(t for t in det if t["_target_"] == "Spacingd")["pixdim"] == hippocampus_plans.target_spacing
    meta = json.loads(files["configs/metadata.json"])
    assert "slice by slice" in meta["task"] and meta["samdsk_plan"]["configuration"] == "2d"


def test_the_slicewise_network_maps_one_slice_patch_to_classes(hippocampus_plans, tmp_path):
    files = bundle_files(hippocampus_plans, "hip2d", "2d")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    parser = _config(tmp_path, "inference.json")
    net, inferer = parser.get_parsed_content("network_def").eval(), parser.get_parsed_content("inferer")
    volume = torch.rand(1, 1, 30, 41, 27)
    with torch.no_grad():
        out = inferer(volume, net)
    assert tuple(out.shape) == (1, hippocampus_plans.n_classes, 30, 41, 27)


def test_emit_names_the_configuration_and_refuses_an_unknown_one(tmp_path, capsys):
    plans = tmp_path / "plans.json"
    assert main(["plan", str(REPO / "dataset_fingerprints/hippocampus.json"), "-o", str(plans)]) == 0
    assert main(["emit", str(plans), "-o", str(tmp_path / "b"), "--configuration", "2d"]) == 0
    assert "(2d configuration)" in capsys.readouterr().out
    assert main(["emit", str(plans), "-o", str(tmp_path / "c"), "--configuration", "3d_lowres"]) == 2
    assert "invalid choice: '3d_lowres'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


# --------------------------------------------------------------------------- reader and saver
def test_planar_reader_reads_png_rgb_and_2d_nifti_as_planes(tmp_path):
    image, label = scene(3)
    h, w = SCENE_HW
    Image.fromarray(image).save(tmp_path / "g.png")
    Image.fromarray(np.dstack([image, image // 2, 255 - image, np.full_like(image, 9)])).save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([label] * 3)).save(tmp_path / "l3.png")
    nib.save(nib.Nifti1Image(label.T[:, :, None], np.diag([0.5, 0.25, 2.0, 1.0])), tmp_path / "l.nii.gz")
    reader = PlanarImageReader()
    data, meta = reader.get_data(reader.read(tmp_path / "g.png"))
    assert data.shape == (w, h) and np.array_equal(data, image.T) and np.isnan(meta["original_channel_dim"])
    assert np.array_equal(meta["affine"], np.eye(3)) and list(meta["spatial_shape"]) == [w, h]
    data, meta = reader.get_data(reader.read(tmp_path / "rgba.png"))  # alpha dropped
    assert data.shape == (w, h, 3) and meta["original_channel_dim"] == -1
    assert np.array_equal(data[..., 2], (255 - image).T)
    labels = PlanarImageReader(label=True)
    data, _ = labels.get_data(labels.read(tmp_path / "l3.png"))  # equal planes: one plane
    assert np.array_equal(data, label.T)
    data, meta = labels.get_data(labels.read(tmp_path / "l.nii.gz"))  # X x Y x 1, spacing kept
    assert np.array_equal(data, label.T) and np.allclose(np.diag(meta["affine"]), [0.5, 0.25, 1.0])
    # one file per channel stacks channels last
    data, meta = reader.get_data(reader.read([tmp_path / "g.png", tmp_path / "g.png"]))
    assert data.shape == (w, h, 2) and meta["channels"] == 2


def test_planar_reader_refuses_colour_labels_and_volumes(tmp_path):
    _, label = scene(0)
    colour = np.dstack([label, label, 255 * (label > 0).astype(np.uint8)])
    Image.fromarray(colour).save(tmp_path / "c.png")
    labels = PlanarImageReader(label=True)
    with pytest.raises(ValueError, match="colour label"):
        labels.get_data(labels.read(tmp_path / "c.png"))
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(SamdskError, match=r"v.nii.gz: a volume of shape \(4, 5, 6\); this bundle is for 2D images"):
        labels.get_data(labels.read(tmp_path / "v.nii.gz"))


def test_segmentations_are_saved_in_the_input_format(tmp_path):
    from monai.transforms import EnsureChannelFirst, LoadImage

    _, label = scene(2)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(label).save(inputs / "a.png")
    Image.fromarray(label).convert("RGB").save(inputs / "b.jpg")
    nib.save(nib.Nifti1Image(label.T.copy(), np.diag([0.5, 0.5, 1.0, 1.0])), inputs / "c.nii.gz")
    load = LoadImage(reader=PlanarImageReader(), image_only=True)
    saver = SaveSegmentationd(
        "pred", output_dir=str(tmp_path / "out"), output_dtype=np.uint8, resample=False, separate_folder=False
    )
    for name in ("a.png", "b.jpg", "c.nii.gz"):
        pred = EnsureChannelFirst()(load(inputs / name))
        saver({"pred": pred[:1]})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_seg.png", "b_seg.png", "c_seg.nii.gz"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a_seg.png")), label)  # rows x columns
    written = nib.load(tmp_path / "out" / "c_seg.nii.gz")
    assert np.array_equal(np.asarray(written.dataobj).squeeze(), label.T)
    assert written.header.get_zooms()[:2] == (0.5, 0.5)
