"""Faulty datasets through the CLI: the known exit code, no traceback, a message naming the file
and the problem, and the input folder byte-identical afterwards."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.io import write_image
from tests.conftest import affine_for, case_arrays, write_datalist, write_msd


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``; links are recorded by their target, never followed."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(args: list[str], capsys, root: Path) -> tuple[int, str, str]:
    """Run the CLI; assert it printed no traceback and left ``root`` unchanged."""
    before = snapshot(root)
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert snapshot(root) == before
    return code, out, err


@pytest.fixture
def msd(tmp_path) -> Path:
    return write_msd(tmp_path / "synth")


def test_msd_dataset_json_without_modality_is_an_error(msd, capsys):
    meta = json.loads((msd / "dataset.json").read_text())
    del meta["modality"]
    (msd / "dataset.json").write_text(json.dumps(meta))
    for target in (msd, msd / "dataset.json"):
        code, out, err = cli(["verify", str(target), "-q"], capsys, msd)
        assert code == 2 and out == ""
        assert (
            err.startswith(f"samdsk-plan: error: {msd / 'dataset.json'}: a Medical Segmentation Decathlon dataset.json")
            and "without 'modality'" in err
        )
        assert len(err.strip().splitlines()) == 1


def test_datalist_named_dataset_json_is_still_a_datalist(tmp_path, capsys):
    path = write_datalist(tmp_path / "synth")
    meta = json.loads(path.read_text())
    del meta["modality"]
    renamed = path.with_name("dataset.json")
    renamed.write_text(json.dumps(meta))  # has 'testing': a MONAI datalist, never an MSD file
    code, out, _ = cli(
        ["verify", str(renamed), "--base-dir", str(tmp_path / "synth" / "data"), "-q"], capsys, tmp_path / "synth"
    )
    assert code == 0 and "(datalist," in out and "OK: no problems found" in out


def test_all_background_label_and_constant_image_warn(msd, capsys):
    label = msd / "labelsTr" / "c_002.nii.gz"
    write_image(label, np.zeros(case_arrays("partial")[1].shape, np.uint8), affine_for())
    image = msd / "imagesTs" / "c_100.nii.gz"
    write_image(image, np.full(case_arrays("full")[0].shape, 7.0, np.float32), affine_for())
    code, out, _ = cli(["verify", str(msd), "-q"], capsys, msd)
    assert code == 0
    assert f"warning: {label}: label is all background (0): no foreground voxel" in out.splitlines()
    assert f"warning: {image}: image is constant: all {20 * 24 * 28} voxels equal 7" in out.splitlines()
    assert out.splitlines()[-1] == "OK: 0 error(s), 2 warning(s)"


def test_warnings_do_not_stop_the_fingerprint(msd, tmp_path, capsys):
    write_image(msd / "labelsTr" / "c_002.nii.gz", np.zeros(case_arrays("partial")[1].shape, np.uint8), affine_for())
    out_file = tmp_path / "fp.json"
    code, _, err = cli(["fingerprint", str(msd), "-o", str(out_file), "-q"], capsys, msd)
    assert code == 0, err
    assert json.loads(out_file.read_text())["n_cases"]["labelled"] == 2


def test_symlink_loop_and_broken_link_are_named(msd, capsys):
    loop = msd / "labelsTr" / "c_001.nii.gz"
    loop.unlink()
    os.symlink(loop.name, loop)  # points at itself
    dangling = msd / "imagesTs" / "c_100.nii.gz"
    dangling.unlink()
    os.symlink("gone.nii.gz", dangling)
    code, out, _ = cli(["verify", str(msd), "-q"], capsys, msd)
    assert code == 1
    lines = out.splitlines()
    assert f"error: {loop}: symlink loop: the link cannot be resolved" in lines
    assert f"error: {dangling}: broken symbolic link: its target gone.nii.gz does not exist" in lines
    assert lines[-1] == "FAILED: 2 error(s), 0 warning(s)"


def test_dataset_json_that_is_a_symlink_loop(tmp_path, capsys):
    root = tmp_path / "ds"
    root.mkdir()
    os.symlink("dataset.json", root / "dataset.json")
    code, _, err = cli(["verify", str(root / "dataset.json")], capsys, root)
    assert code == 2
    assert err.strip() == f"samdsk-plan: error: {root / 'dataset.json'}: symlink loop: the link cannot be resolved"


def _channel_datalist(tmp_path: Path, files_per_entry: list[int], modality: dict | None = None) -> Path:
    """A datalist whose entry ``i`` lists ``files_per_entry[i]`` channel files of one grid."""
    data = tmp_path / "data"
    image, label = case_arrays("full")
    entries = []
    for i, n in enumerate(files_per_entry):
        channels = [f"c_{i:03d}_{c:04d}.nii.gz" for c in range(n)]
        for name in channels:
            write_image(data / name, image, affine_for())
        write_image(data / f"c_{i:03d}.nii.gz", label, affine_for())
        entries.append({"image": channels if n > 1 else channels[0], "label": f"c_{i:03d}.nii.gz"})
    meta = {
        "labels": {"0": "background", "1": "a", "2": "b", "3": "c"},
        "training": entries,
        **({"modality": modality} if modality else {}),
    }
    path = data / "list.json"
    path.write_text(json.dumps(meta))
    return path


def test_datalist_channel_count_is_the_most_common_one(tmp_path, capsys):
    path = _channel_datalist(tmp_path, [2, 2, 3, 2])
    code, out, _ = cli(["verify", str(path), "-q"], capsys, tmp_path)
    assert code == 1 and "2 channel(s)" in out.splitlines()[0]
    odd = tmp_path / "data" / "c_002_0000.nii.gz"
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {odd}: case c_002 has 3 image files but the dataset has 2 channel(s)"]
    assert (
        f"warning: {path}: no 'modality' declared: assuming 2 channel(s), the number of image files most "
        "entries have (3 of 4)"
    ) in out.splitlines()


def test_datalist_declared_modality_wins_over_the_files(tmp_path, capsys):
    path = _channel_datalist(tmp_path, [1, 1, 2], modality={"0": "T1", "1": "T2"})
    code, out, _ = cli(["verify", str(path), "-q"], capsys, tmp_path)
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {tmp_path / 'data' / f'c_00{i}_0000.nii.gz'}: holds 1 channel(s), expected 2" for i in (0, 1)
    ]


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "-0.001"])
def test_bad_tolerance_is_refused(msd, capsys, value):
    for command in ("verify", "fingerprint"):
        extra = ["-o", str(msd.parent / "fp.json")] if command == "fingerprint" else []
        code, out, err = cli([command, str(msd), "--tolerance", value, "-q", *extra], capsys, msd)
        assert code == 2 and out == ""
        assert err.strip() == f"samdsk-plan: error: --tolerance must be a finite number of mm >= 0, got {float(value)}"
        assert not (msd.parent / "fp.json").exists()


def test_zero_tolerance_is_accepted(msd, capsys):
    assert cli(["verify", str(msd), "--tolerance", "0", "-q"], capsys, msd)[0] == 0


@pytest.mark.parametrize(
    "labelled, test, message",
    [
        ("0.5", "-0.1", "--test-fraction must be a number in [0, 1), got -0.1"),
        ("0.5", "nan", "--test-fraction must be a number in [0, 1), got nan"),
        ("0.5", "1", "--test-fraction must be a number in [0, 1), got 1.0"),
        ("0", "0.2", "--labelled-fraction must be a number in (0, 1], got 0.0"),
        ("inf", "0.2", "--labelled-fraction must be a number in (0, 1], got inf"),
        ("0.9", "0.2", "--labelled-fraction + --test-fraction must be at most 1, got 0.9 + 0.2 = 1.1"),
    ],
)
def test_bad_split_fractions_name_the_option(msd, tmp_path, capsys, labelled, test, message):
    out_file = tmp_path / "split.json"
    code, _, err = cli(
        ["split", str(msd), "--labelled-fraction", labelled, "--test-fraction", test, "-o", str(out_file)], capsys, msd
    )
    assert code == 2 and err.strip() == f"samdsk-plan: error: {message}"
    assert not out_file.exists()


def test_real_cases_with_faults_are_all_reported(hippocampus, tmp_path, capsys):
    """Three real hippocampus cases copied: one label all background, one image a symlink loop."""
    root = tmp_path / "hippo"
    cases = ("hippocampus_001", "hippocampus_003", "hippocampus_004")
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
        for case in cases:
            shutil.copyfile(hippocampus / folder / f"{case}.nii.gz", root / folder / f"{case}.nii.gz")
    meta = json.loads((hippocampus / "dataset.json").read_text())
    meta.update(
        numTraining=3,
        numTest=0,
        test=[],
        training=[{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
    )
    (root / "dataset.json").write_text(json.dumps(meta))
    label = root / "labelsTr" / "hippocampus_003.nii.gz"
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine, img.header), label)
    loop = root / "imagesTr" / "hippocampus_004.nii.gz"
    loop.unlink()
    os.symlink(loop.name, loop)
    code, out, _ = cli(["verify", str(root), "-q", "-j", "2"], capsys, root)
    assert code == 1
    lines = out.splitlines()
    assert f"error: {loop}: symlink loop: the link cannot be resolved" in lines
    assert f"warning: {label}: label is all background (0): no foreground voxel" in lines
    assert lines[-1] == "FAILED: 1 error(s), 1 warning(s)"
