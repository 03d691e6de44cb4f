"""Every verify failure provoked by a fixture, with its message checked."""

import json
import shutil

import numpy as np
import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.io import load_dataset, verify_dataset, write_image
from tests.conftest import SHAPE, affine_for, case_arrays


def problems_of(root, **kw):
    report = verify_dataset(load_dataset(root, **kw), progress=False)
    return report, [str(p) for p in report.problems]


def only_error(root, **kw) -> str:
    report, lines = problems_of(root, **kw)
    assert not report.ok
    assert len(report.errors) == 1, lines
    return str(report.errors[0])


def test_clean_dataset_passes(msd_dataset, capsys):
    report, lines = problems_of(msd_dataset)
    assert report.ok and lines == []
    assert main(["verify", str(msd_dataset), "-q"]) == 0
    out = capsys.readouterr().out
    assert "3 cases, 2 labelled, 1 unlabelled" in out and "OK: no problems found" in out


def test_missing_file(msd_dataset):
    (msd_dataset / "labelsTr" / "c_002.nii.gz").unlink()
    assert only_error(msd_dataset) == f"error: {msd_dataset / 'labelsTr' / 'c_002.nii.gz'}: file is missing"


def test_unreadable_file(msd_dataset):
    path = msd_dataset / "imagesTr" / "c_001.nii.gz"
    path.write_bytes(b"this is not a nifti file")
    err = only_error(msd_dataset)
    assert err.startswith(f"error: {path}: cannot be read as an image")


def test_shape_mismatch(msd_dataset):
    image, _ = case_arrays("full")
    write_image(msd_dataset / "imagesTr" / "c_001.nii.gz", image[:-2], affine_for())
    err = only_error(msd_dataset)
    assert "labelsTr/c_001.nii.gz: label does not match its image: shape [20, 24, 28] differs from [18, 24, 28]" in err


def test_spacing_mismatch(msd_dataset):
    _, label = case_arrays("full")
    write_image(msd_dataset / "labelsTr" / "c_001.nii.gz", label, affine_for(spacing=(1.0, 1.5, 2.5)))
    err = only_error(msd_dataset)
    assert (
        "labelsTr/c_001.nii.gz: label does not match its image: spacing [1, 1.5, 2.5] differs from [1, 1.5, 2] mm"
        in err
    )


def test_affine_mismatch_beyond_tolerance_only(msd_dataset):
    _, label = case_arrays("full")
    path = msd_dataset / "labelsTr" / "c_001.nii.gz"
    write_image(path, label, affine_for(origin=(-10.0, 20.0, 5.0004)))
    assert problems_of(msd_dataset)[0].ok  # 0.4 micrometre: within the default 1e-3 mm
    write_image(path, label, affine_for(origin=(-10.0, 20.0, 7.0)))
    assert "affine (orientation/origin) differs by up to 2 mm" in only_error(msd_dataset)


def test_undeclared_label_values(msd_dataset):
    _, label = case_arrays("full")
    label[0, 0, 0], label[0, 0, 1] = 7, 9
    write_image(msd_dataset / "labelsTr" / "c_001.nii.gz", label, affine_for())
    assert "label values [7, 9] are not declared in dataset.json (declared: [0, 1, 2, 3])" in only_error(msd_dataset)


def test_non_integer_labels(msd_dataset):
    _, label = case_arrays("full")
    label = label.astype(np.float32)
    label[0, 0, 0] = 0.5
    write_image(msd_dataset / "labelsTr" / "c_002.nii.gz", label, affine_for())
    assert "non-integer label values, e.g. 0.5 (1 voxel(s))" in only_error(msd_dataset)


def test_float_labels_with_integer_values_are_accepted(msd_dataset):
    _, label = case_arrays("full")
    write_image(msd_dataset / "labelsTr" / "c_002.nii.gz", label.astype(np.float32), affine_for())
    assert problems_of(msd_dataset)[0].ok


def test_nan_and_inf_intensities(msd_dataset):
    image, _ = case_arrays("full")
    image[0, 0, :3] = [np.nan, np.inf, -np.inf]
    path = msd_dataset / "imagesTs" / "c_100.nii.gz"
    write_image(path, image, affine_for())
    assert only_error(msd_dataset) == f"error: {path}: 3 voxel(s) are NaN or Inf"


def test_channels_with_differing_geometry(nnunet_dataset):
    meta = json.loads((nnunet_dataset / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (nnunet_dataset / "dataset.json").write_text(json.dumps(meta))
    for case in ("c_001", "c_002"):
        shutil.copy(
            nnunet_dataset / "imagesTr" / f"{case}_0000.nii.gz", nnunet_dataset / "imagesTr" / f"{case}_0001.nii.gz"
        )
    shutil.copy(nnunet_dataset / "imagesTs" / "c_100_0000.nii.gz", nnunet_dataset / "imagesTs" / "c_100_0001.nii.gz")
    assert problems_of(nnunet_dataset)[0].ok
    bad = nnunet_dataset / "imagesTr" / "c_002_0001.nii.gz"
    write_image(bad, np.zeros(SHAPE, np.float32), affine_for(spacing=(1.0, 1.0, 1.0)))
    assert (
        f"{bad}: channel geometry differs from c_002_0000.nii.gz: spacing [1, 1, 1] differs from [1, 1.5, 2] mm"
        in only_error(nnunet_dataset)
    )


def test_missing_channel_file(nnunet_dataset):
    meta = json.loads((nnunet_dataset / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (nnunet_dataset / "dataset.json").write_text(json.dumps(meta))
    _, lines = problems_of(nnunet_dataset)
    assert lines == [
        f"error: {nnunet_dataset / 'imagesTr' / f'{c}_0001.nii.gz'}: file is missing" for c in ("c_001", "c_002")
    ] + [f"error: {nnunet_dataset / 'imagesTs' / 'c_100_0001.nii.gz'}: file is missing"]


def test_wrong_channel_count_in_4d_file(msd_dataset):
    image, _ = case_arrays("full")
    write_image(msd_dataset / "imagesTr" / "c_001.nii.gz", np.stack([image, image], -1), affine_for())
    assert "c_001.nii.gz: holds 2 channel(s), expected 1" in only_error(msd_dataset)


def test_duplicate_case_ids(msd_dataset):
    meta = json.loads((msd_dataset / "dataset.json").read_text())
    meta["training"].append(dict(meta["training"][0]))
    meta["numTraining"] = 3
    (msd_dataset / "dataset.json").write_text(json.dumps(meta))
    assert "duplicate case id 'c_001' (2 entries" in only_error(msd_dataset)


def test_count_mismatch_and_orphan_label_in_nnunet(nnunet_dataset):
    shutil.copy(nnunet_dataset / "labelsTr" / "c_001.nii.gz", nnunet_dataset / "labelsTr" / "c_009.nii.gz")
    meta = json.loads((nnunet_dataset / "dataset.json").read_text())
    meta["numTraining"] = 5
    (nnunet_dataset / "dataset.json").write_text(json.dumps(meta))
    _, lines = problems_of(nnunet_dataset)
    assert f"error: {nnunet_dataset / 'labelsTr' / 'c_009.nii.gz'}: label has no image in imagesTr" in lines
    assert f"error: {nnunet_dataset / 'dataset.json'}: numTraining is 5 but 2 training cases were found" in lines


def test_empty_dataset(tmp_path):
    meta = {"modality": {"0": "CT"}, "labels": {"0": "background"}, "training": [], "test": []}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    assert only_error(tmp_path) == f"error: {tmp_path / 'dataset.json'}: dataset is empty: no cases listed or found"


def test_every_problem_reported_at_once_without_traceback(msd_dataset, capsys):
    (msd_dataset / "labelsTr" / "c_002.nii.gz").unlink()
    (msd_dataset / "imagesTs" / "c_100.nii.gz").write_bytes(b"garbage")
    _, label = case_arrays("full")
    label[1, 1, 1] = 5
    write_image(msd_dataset / "labelsTr" / "c_001.nii.gz", label, affine_for())
    assert main(["verify", str(msd_dataset), "-q", "-j", "2"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "FAILED: 3 error(s), 0 warning(s)" in out
    for name in ("labelsTr/c_001.nii.gz", "labelsTr/c_002.nii.gz", "imagesTs/c_100.nii.gz"):
        assert name in out


def test_unreadable_dataset_json_exits_2(tmp_path, capsys):
    (tmp_path / "dataset.json").write_text("{")
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"samdsk-plan: error: {tmp_path / 'dataset.json'}: not valid JSON") and "Traceback" not in err


def test_datalist_without_label_map_warns(tmp_path):
    from tests.conftest import write_datalist

    path = write_datalist(tmp_path / "synth")
    meta = json.loads(path.read_text())
    del meta["labels"]
    path.write_text(json.dumps(meta))
    report, lines = problems_of(path, base_dir=tmp_path / "synth" / "data")
    assert report.ok
    assert lines == [f"warning: {path}: no label map declared; label values are not checked"]


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_the_same_report(msd_dataset, workers):
    (msd_dataset / "labelsTr" / "c_002.nii.gz").unlink()
    report = verify_dataset(load_dataset(msd_dataset), workers=workers, progress=False)
    assert [p.path for p in report.problems] == [str(msd_dataset / "labelsTr" / "c_002.nii.gz")]
