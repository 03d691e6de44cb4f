"""Fingerprint of synthetic datasets whose statistics are known exactly."""

import json

import numpy as np
import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.fingerprint import FingerprintError, comparable, compute_fingerprint
from samdsk_plan.io import load_dataset
from tests.conftest import (
    BALL_SLICE_AREAS,
    BALL_VOXELS,
    BOX_VOXELS,
    INTENSITY,
    U_VOXELS,
    write_datalist,
    write_msd,
    write_nnunet,
)

VOXELS = 20 * 24 * 28


@pytest.fixture
def fp(msd_dataset):
    return compute_fingerprint(load_dataset(msd_dataset), progress=False)


def test_geometry(fp):
    assert fp["n_cases"] == {"labelled": 2, "unlabelled": 1}
    assert fp["spacing"]["median"] == [1.0, 1.5, 2.0]
    assert fp["shape"]["median"] == [20, 24, 28]
    assert fp["shape_after_crop"]["median"] == [18, 20, 28]
    assert fp["median_relative_size_after_cropping"] == 0.75
    assert fp["anisotropy"] == {"ratio": 2.0, "coarsest_axis": 2, "finest_axis": 0}
    case = fp["cases"]["c_100"]
    assert case == {
        "labelled": False,
        "orientation": "RAS",
        "relative_size_after_crop": 0.75,
        "shape": [20, 24, 28],
        "shape_after_crop": [18, 20, 28],
        "spacing": [1.0, 1.5, 2.0],
    }


def test_names_and_conventions(fp):
    assert fp["schema_version"] == 1
    assert fp["channel_names"] == {"0": "MRI"}
    assert fp["labels"] == {"0": "background", "1": "spheres", "2": "box", "3": "u_shape"}
    assert fp["conventions"]["connectivity"] == {"name": "full", "neighbours_3d": 26, "neighbours_2d": 8}


def test_foreground_intensity(fp):
    values = np.repeat([INTENSITY[1], INTENSITY[2], INTENSITY[3]], [3 * BALL_VOXELS, BOX_VOXELS, 2 * U_VOXELS])
    got = fp["foreground_intensity_properties_per_channel"]["0"]
    assert got["n_voxels"] == values.size == 753
    assert got["mean"] == pytest.approx(values.mean(), rel=1e-8)
    assert got["std"] == pytest.approx(values.std(), rel=1e-8)
    assert (got["min"], got["median"], got["max"]) == (110.0, 120.0, 130.0)
    assert (got["percentile_00_5"], got["percentile_99_5"]) == (110.0, 130.0)


def test_per_case_class_records(fp):
    assert fp["cases"]["c_001"]["classes"] == {
        "1": {"voxels": 2 * BALL_VOXELS, "components_3d": 2, "max_regions_per_slice": [1, 2, 2]},
        "2": {"voxels": BOX_VOXELS, "components_3d": 1, "max_regions_per_slice": [1, 1, 1]},
        "3": {"voxels": U_VOXELS, "components_3d": 1, "max_regions_per_slice": [1, 1, 2]},
    }
    assert set(fp["cases"]["c_002"]["classes"]) == {"1", "3"}


def test_class_presence_and_volume(fp):
    c1, c2 = fp["classes"]["1"], fp["classes"]["2"]
    assert (c1["name"], c1["n_cases_present"], c1["present_fraction"]) == ("spheres", 2, 1.0)
    assert (c2["n_cases_present"], c2["present_fraction"]) == (1, 0.5)
    assert c1["volume_fraction"]["max"] == pytest.approx(2 * BALL_VOXELS / VOXELS)
    assert c1["volume_fraction"]["min"] == pytest.approx(BALL_VOXELS / VOXELS)
    assert c2["volume_fraction"]["min"] == 0.0


def test_roi_counts_in_3d(fp):
    assert fp["classes"]["1"]["components_3d"] == {
        "n": 2,
        "histogram": {"1": 1, "2": 1},
        "min": 1,
        "max": 2,
        "mode": 1,
        "p95": 2,
        "mean": 1.5,
    }
    # The box is absent from one of the two cases: zero components there.
    assert fp["classes"]["2"]["components_3d"]["histogram"] == {"0": 1, "1": 1}
    assert fp["classes"]["3"]["components_3d"]["histogram"] == {"1": 2}


def test_roi_counts_per_slice(fp):
    balls = fp["classes"]["1"]["regions_per_slice"]
    assert balls["0"]["histogram"] == {"1": 21}  # 14 + 7 slices, the balls never share one
    assert balls["1"]["histogram"] == balls["2"]["histogram"] == {"1": 7, "2": 7}
    u = fp["classes"]["3"]["regions_per_slice"]
    assert u["0"]["histogram"] == {"1": 6} and u["1"]["histogram"] == {"1": 16}
    assert u["2"] == {"n": 16, "histogram": {"1": 4, "2": 12}, "min": 1, "max": 2, "mode": 2, "p95": 2, "mean": 1.75}
    box = fp["classes"]["2"]["regions_per_slice"]
    assert [box[a]["n"] for a in "012"] == [4, 6, 6]


def test_component_sizes_in_voxels_and_mm(fp):
    sizes = fp["classes"]["1"]["component_size"]
    assert sizes["voxels"]["n"] == 3 and sizes["voxels"]["min"] == sizes["voxels"]["max"] == BALL_VOXELS
    assert sizes["mm3"]["median"] == BALL_VOXELS * 1.0 * 1.5 * 2.0
    assert fp["classes"]["2"]["component_size"]["mm3"]["max"] == BOX_VOXELS * 3.0
    areas = fp["classes"]["1"]["region_area"]
    expected = np.array(BALL_SLICE_AREAS * 3)
    for axis, pixel_mm2 in (("0", 1.5 * 2.0), ("1", 1.0 * 2.0), ("2", 1.0 * 1.5)):
        assert areas[axis]["pixels"]["n"] == 21
        assert areas[axis]["pixels"]["median"] == np.median(expected)
        assert areas[axis]["mm2"]["max"] == 29 * pixel_mm2
        assert areas[axis]["mm2"]["mean"] == pytest.approx(expected.mean() * pixel_mm2)


def test_face_connectivity_is_recorded(msd_dataset):
    fp = compute_fingerprint(load_dataset(msd_dataset), connectivity="face", progress=False)
    assert fp["conventions"]["connectivity"] == {"name": "face", "neighbours_3d": 6, "neighbours_2d": 4}
    # Ball slices at the poles are single pixels: face connectivity changes nothing here.
    assert fp["classes"]["1"]["components_3d"]["histogram"] == {"1": 1, "2": 1}


def test_three_layouts_and_itk_files_give_the_same_fingerprint(tmp_path):
    msd = compute_fingerprint(load_dataset(write_msd(tmp_path / "a" / "synth")), progress=False)
    nnu = compute_fingerprint(load_dataset(write_nnunet(tmp_path / "b" / "synth")), progress=False)
    dl = compute_fingerprint(
        load_dataset(
            write_datalist(tmp_path / "c" / "synth"), base_dir=tmp_path / "c" / "synth" / "data", name="synth"
        ),
        progress=False,
    )
    mha = compute_fingerprint(load_dataset(write_nnunet(tmp_path / "d" / "synth", ".mha")), progress=False)
    assert comparable(msd) == comparable(nnu) == comparable(dl) == comparable(mha)
    assert [x["provenance"]["layout"] for x in (msd, nnu, dl)] == ["msd", "nnunetv2", "datalist"]


def test_workers_do_not_change_the_result(msd_dataset):
    d = load_dataset(msd_dataset)
    assert comparable(compute_fingerprint(d, workers=1, progress=False)) == comparable(
        compute_fingerprint(d, workers=2, progress=False)
    )


def test_intensity_sampling_is_capped_and_deterministic(msd_dataset):
    d = load_dataset(msd_dataset)
    a = compute_fingerprint(d, max_intensity_samples=200, progress=False)
    b = compute_fingerprint(d, max_intensity_samples=200, progress=False)
    props = a["foreground_intensity_properties_per_channel"]["0"]
    assert props["n_voxels"] == 200
    assert props == b["foreground_intensity_properties_per_channel"]["0"]
    # per-case statistics still use every foreground voxel
    assert a["cases"]["c_001"]["foreground_intensity"]["0"]["n_voxels"] == 2 * BALL_VOXELS + BOX_VOXELS + U_VOXELS


def test_cli_writes_canonical_json(msd_dataset, tmp_path, capsys):
    out = tmp_path / "fp" / "synth.json"
    assert main(["fingerprint", str(msd_dataset), "-o", str(out), "-q", "-j", "2"]) == 0
    assert "2 labelled + 1 unlabelled cases, 3 classes" in capsys.readouterr().out
    text = out.read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert '"spacing": [1.0, 1.5, 2.0]' in text  # lists of numbers on one line
    assert [p.name for p in out.parent.iterdir()] == ["synth.json"]


def test_broken_dataset_writes_nothing(msd_dataset, tmp_path, capsys):
    (msd_dataset / "labelsTr" / "c_002.nii.gz").write_bytes(b"broken")
    out = tmp_path / "fp.json"
    out.write_text("previous")
    assert main(["fingerprint", str(msd_dataset), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "nothing was written" in err and "labelsTr/c_002.nii.gz: cannot be read" in err
    assert "Traceback" not in err
    assert out.read_text() == "previous"
    with pytest.raises(FingerprintError):
        compute_fingerprint(load_dataset(msd_dataset), progress=False)


def test_dataset_without_labelled_cases_is_an_error(msd_dataset, tmp_path, capsys):
    meta = json.loads((msd_dataset / "dataset.json").read_text())
    meta["training"], meta["numTraining"] = [], 0
    (msd_dataset / "dataset.json").write_text(json.dumps(meta))
    assert main(["fingerprint", str(msd_dataset), "-o", str(tmp_path / "x.json"), "-q"]) == 2
    assert "no labelled cases" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_rerun_on_unchanged_data_leaves_the_file_as_it_is(fp, tmp_path):
    """The same fingerprint at another time keeps the written file (bytes and modification
    time); other content, or an unreadable file, is written over."""
    from samdsk_plan.fingerprint import write_fingerprint

    out = tmp_path / "fp.json"
    assert write_fingerprint(fp, out)
    before, stamp = out.read_bytes(), out.stat().st_mtime_ns
    later = {**fp, "provenance": {**fp["provenance"], "created": "2030-01-01T00:00:00+00:00"}}
    assert not write_fingerprint(later, out)
    assert out.read_bytes() == before and out.stat().st_mtime_ns == stamp
    changed = {**later, "n_cases": {"labelled": 3, "unlabelled": 0}}
    assert write_fingerprint(changed, out)
    assert json.loads(out.read_text())["n_cases"] == {"labelled": 3, "unlabelled": 0}
    assert json.loads(out.read_text())["provenance"]["created"] == "2030-01-01T00:00:00+00:00"
    out.write_text("{trunc")
    write_fingerprint(fp, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(fp))


def test_the_command_says_when_it_kept_the_file(msd_dataset, tmp_path, capsys):
    out = tmp_path / "fp.json"
    assert main(["fingerprint", str(msd_dataset), "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: 2 labelled + 1 unlabelled cases")
    assert main(["fingerprint", str(msd_dataset), "-o", str(out), "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"kept (the same fingerprint) {out}: 2 labelled")
