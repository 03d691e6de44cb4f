"""A bundle run on a bad input file fails with a last line naming the file and the problem, and
leaves the inputs as they were. Each run uses three real hippocampus cases and a slim network
(a few seconds on the CPU); the faulty files are copies, never the shared data."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from samdsk_plan.bundle.runtime.components import CheckLabelValuesd, LoadImageNamedd, error_summary
from samdsk_plan.errors import SamdskError
from samdsk_plan.loop.bundle_runner import bundle_command

pytestmark = pytest.mark.slow  # real data or bundle runs: left out of `make test-fast`

REPO = Path(__file__).resolve().parents[1]
CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004")
SMALL_NET = ["--network_def#filters", "[8,16,32,64]"]
TINY_TRAINING = ["--epochs", "1", "--iterations_per_epoch", "1", "--batch_size", "1", "--val_interval", "1"]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("bundle") / "hippocampus"
    shutil.copytree(REPO / "bundles" / "hippocampus", dst)
    return dst


@pytest.fixture
def data(hippocampus, tmp_path) -> Path:
    """An MSD copy of three real cases: all three for training/validation, the first also as the
    unlabelled test image."""
    root = tmp_path / "data"
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
        for case in CASES:
            shutil.copyfile(hippocampus / folder / f"{case}.nii.gz", root / folder / f"{case}.nii.gz")
    meta = json.loads((hippocampus / "dataset.json").read_text())
    meta.update(
        numTraining=3,
        numTest=1,
        test=[f"./imagesTr/{CASES[0]}.nii.gz"],
        training=[{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in CASES],
    )
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def run_failing(bundle: Path, data: Path, configs: list[str], *args: str) -> str:
    """Run the bundle on ``data``; assert it fails and leaves ``data`` unchanged; its last stderr line."""
    before = snapshot(data)
    cmd = bundle_command(configs, {"device": "cpu", "dataset_dir": data, "datalist": data}) + [*SMALL_NET, *args]
    done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stdout[-3000:]
    assert snapshot(data) == before
    return done.stderr.strip().splitlines()[-1]


def save_network(bundle: Path, path: Path) -> Path:
    """A checkpoint that fits the bundle's slim network."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["network_def"]["filters"] = [8, 16, 32, 64]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def test_truncated_image_is_named(bundle, data, tmp_path):
    bad = data / "imagesTr" / f"{CASES[1]}.nii.gz"
    bad.write_bytes(bad.read_bytes()[:20000])
    last = run_failing(
        bundle, data, ["train.json"], "--num_workers", "0", "--ckpt_dir", str(tmp_path / "m"), *TINY_TRAINING
    )
    assert last.startswith(f"samdsk-plan: error: {bad}: cannot be read as an image (EOFError"), last
    assert not (tmp_path / "m" / "model.pt").exists()


def test_single_undeclared_label_voxel_is_refused(bundle, data, tmp_path):
    path = data / "labelsTr" / f"{CASES[2]}.nii.gz"
    img = nib.load(path)
    label = np.asarray(img.dataobj).copy()
    label[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(label, img.affine, img.header), path)
    last = run_failing(
        bundle, data, ["train.json"], "--num_workers", "0", "--ckpt_dir", str(tmp_path / "m"), *TINY_TRAINING
    )
    assert last == (
        f"samdsk-plan: error: {path}: label values not declared in the plan's labels [0, 1, 2]: 7 (1 voxel(s))"
    )


@pytest.mark.parametrize(
    "content, problem", [(b"garbage\n", "corrupt, truncated or not a saved model"), (b"", "the file is empty")]
)
def test_garbage_checkpoint_is_named_by_inference(bundle, data, tmp_path, content, problem):
    model = tmp_path / "m" / "model.pt"
    model.parent.mkdir()
    model.write_bytes(content)
    last = run_failing(
        bundle,
        data,
        ["inference.json"],
        "--num_workers",
        "0",
        "--ckpt_dir",
        str(model.parent),
        "--output_dir",
        str(tmp_path / "pred"),
    )
    assert last.startswith(f"samdsk-plan: error: {model}: not a PyTorch checkpoint ({problem}"), last
    assert model.read_bytes() == content


def test_garbage_init_checkpoint_is_named_by_training(bundle, data, tmp_path):
    bad = tmp_path / "init.pt"
    bad.write_bytes(b"\x00" * 100)
    last = run_failing(
        bundle,
        data,
        ["train.json"],
        "--num_workers",
        "0",
        "--ckpt_dir",
        str(tmp_path / "m"),
        "--init_checkpoint",
        str(bad),
        *TINY_TRAINING,
    )
    assert last.startswith(f"samdsk-plan: error: {bad}: not a PyTorch checkpoint"), last


def test_unreadable_image_in_a_dataloader_worker_is_named(bundle, data, tmp_path):
    """Inference loads in worker processes, which hand the error back as text: still named."""
    model = save_network(bundle, tmp_path / "m" / "model.pt")
    bad = data / "imagesTr" / f"{CASES[0]}.nii.gz"
    bad.write_bytes(b"not an image at all")
    last = run_failing(
        bundle,
        data,
        ["inference.json"],
        "--num_workers",
        "1",
        "--ckpt_dir",
        str(model.parent),
        "--output_dir",
        str(tmp_path / "pred"),
    )
    assert last.startswith(f"samdsk-plan: error: {bad}: cannot be read as an image"), last


def test_checkpoint_of_another_network_is_named_by_evaluate(bundle, data, tmp_path):
    model = tmp_path / "m" / "model.pt"
    model.parent.mkdir()
    torch.save(torch.nn.Linear(3, 2).state_dict(), model)
    last = run_failing(
        bundle,
        data,
        ["train.json", "evaluate.json"],
        "--num_workers",
        "0",
        "--data_part",
        "val",
        "--ckpt_dir",
        str(model.parent),
        "--output_dir",
        str(tmp_path / "eval"),
    )
    assert last.startswith(f"samdsk-plan: error: {model}: does not fit the bundle's network"), last


def test_label_check_names_file_values_and_counts(tmp_path):
    label = MetaTensor(torch.tensor([[[0.0, 1.0, 5.0], [5.0, 2.0, 0.5]]]), meta={"filename_or_obj": "/x/lab.nii.gz"})
    check = CheckLabelValuesd("label", {"0": "background", "1": "a", "2": "b"})
    assert check({"label": label[:, :1, :2]})["label"] is not None
    with pytest.raises(SamdskError) as err:
        check({"label": label})
    assert str(err.value) == (
        "/x/lab.nii.gz: label values not declared in the plan's labels [0, 1, 2]: 0.5 (1 voxel(s)), 5 (2 voxel(s))"
    )


def test_loader_names_the_failing_channel_file(tmp_path):
    good = tmp_path / "c_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), good)
    bad = tmp_path / "c_0001.nii.gz"
    bad.write_bytes(good.read_bytes()[:30])
    load = LoadImageNamedd("image")
    assert load({"image": str(good)})["image"].shape == (4, 4, 4)
    with pytest.raises(SamdskError, match=f"^{bad}: cannot be read as an image"):
        load({"image": [str(good), str(bad)]})


def test_error_summary_finds_the_cause_behind_monai_wrappers():
    try:
        try:
            raise SamdskError("/data/a.nii.gz: cannot be read as an image (EOFError)")
        except SamdskError as exc:
            raise RuntimeError("applying transform <LoadImageNamedd>") from exc
    except RuntimeError as wrapped:
        assert error_summary(wrapped) == "/data/a.nii.gz: cannot be read as an image (EOFError)"
    worker = RuntimeError(
        "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback:\n"
        "samdsk_plan.errors.SamdskError: /data/b.nii.gz: label values not declared\n\n"
        "RuntimeError: applying transform"
    )
    assert error_summary(RuntimeError("Failed to evaluate")) is None
    outer = RuntimeError("Failed to evaluate")
    outer.__cause__ = worker
    assert error_summary(outer) == "/data/b.nii.gz: label values not declared"
