"""Splits of labelled cases and the data lists the bundles read."""

import json
from pathlib import Path

import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.errors import DatasetError, SamdskError
from samdsk_plan.io import load_dataset
from samdsk_plan.io.datalists import datalist_files
from samdsk_plan.io.splits import make_split

REPO = Path(__file__).resolve().parents[1]


def test_committed_hippocampus_split_reproduces(hippocampus, tmp_path):
    out = tmp_path / "split.json"
    assert (
        main(
            [
                "split",
                str(hippocampus),
                "--labelled-fraction",
                "0.1",
                "--test-fraction",
                "0.2",
                "--seed",
                "0",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_text() == (REPO / "benchmarks" / "splits" / "hippocampus.json").read_text()
    split = json.loads(out.read_text())
    assert split["split"]["counts"] == {"training": 26, "hidden_label_pool": 182, "testing": 52, "unlabelled": 1}
    ids = lambda entries: {Path(e["image"]).name for e in entries}  # noqa: E731
    assert not ids(split["training"]) & ids(split["testing"])
    assert len(ids(split["training"]) | ids(split["testing"]) | ids(split["unlabelled"])) == 261


def test_split_is_seeded_and_hides_pool_labels(hippocampus):
    d = load_dataset(hippocampus)
    a, b, c = make_split(d, 0.1, 0.2, 0), make_split(d, 0.1, 0.2, 0), make_split(d, 0.1, 0.2, 1)
    assert a == b and a["training"] != c["training"]
    assert all("label" not in e for e in a["unlabelled"])
    assert all("hidden_label" in e for e in a["unlabelled"][:182])


def test_split_file_as_a_dataset_sees_only_training_labels(hippocampus, tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(make_split(load_dataset(hippocampus), 0.1, 0.2, 0)))
    d = load_dataset(path, base_dir=hippocampus)
    assert (len(d.labelled), len(d.unlabelled)) == (26, 182 + 52 + 1)  # pool, test, own unlabelled
    assert d.labels == {0: "background", 1: "Anterior", 2: "Posterior"}


@pytest.mark.parametrize("labelled, test", [(0.0, 0.2), (0.9, 0.2), (0.5, -0.1)])
def test_bad_fractions(msd_dataset, labelled, test):
    with pytest.raises(SamdskError, match="-fraction"):
        make_split(load_dataset(msd_dataset), labelled, test)


def test_too_few_cases(msd_dataset, tmp_path, capsys):
    # 2 labelled cases: round(0.99 * 2) = 2 test + at least 1 labelled training case > 2.
    out = tmp_path / "split.json"
    assert (
        main(["split", str(msd_dataset), "--labelled-fraction", "0.01", "--test-fraction", "0.99", "-o", str(out)]) == 2
    )
    assert "too few for this split" in capsys.readouterr().err
    assert not out.exists()


def test_datalist_parts_of_a_dataset_folder(msd_dataset, nnunet_dataset):
    for root in (msd_dataset, nnunet_dataset):
        train = datalist_files(root, "train", root, val_fraction=0.5)
        val = datalist_files(root, "val", root, val_fraction=0.5)
        assert len(train) == len(val) == 1
        assert {Path(train[0]["label"]).name, Path(val[0]["label"]).name} == {"c_001.nii.gz", "c_002.nii.gz"}
        unlabelled = datalist_files(root, "unlabelled", root)
        assert [Path(e["image"]).parent.name for e in unlabelled] == ["imagesTs"] and "label" not in unlabelled[0]
        assert datalist_files(root, "test", root) == []


def test_datalist_parts_of_a_split_file(hippocampus, tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(make_split(load_dataset(hippocampus), 0.1, 0.2, 0)))
    train = datalist_files(path, "train", hippocampus)
    val = datalist_files(path, "val", hippocampus)
    assert (len(train), len(val)) == (21, 5)
    assert len(datalist_files(path, "all_labelled", hippocampus)) == 26
    test = datalist_files(path, "test", hippocampus)
    assert len(test) == 52 and all(Path(e["label"]).is_file() for e in test)
    unlabelled = datalist_files(path, "unlabelled", hippocampus)
    assert len(unlabelled) == 183 and all(set(e) == {"case_id", "image"} for e in unlabelled)
    assert Path(unlabelled[0]["image"]).is_file()
    with pytest.raises(DatasetError, match="unknown data part"):
        datalist_files(path, "everything", hippocampus)


def _with_copies(root: Path) -> Path:
    """The 2D scenes dataset with three exact copies of s_000's image (labels drawn anew)."""
    import shutil

    meta = json.loads((root / "dataset.json").read_text())
    for k in (1, 2, 3):
        name = f"copy_{k}.png"
        shutil.copy(root / "imagesTr" / "s_000.png", root / "imagesTr" / name)
        shutil.copy(root / "labelsTr" / f"s_00{k}.png", root / "labelsTr" / name)
        meta["training"].append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta["numTraining"] = len(meta["training"])
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.mark.parametrize("seed", range(6))
def test_identical_images_stay_on_one_side(tmp_path, seed):
    from tests.conftest import write_scenes

    split = make_split(load_dataset(_with_copies(write_scenes(tmp_path / "d", 16))), 0.25, 0.25, seed)
    group = {"s_000", "copy_1", "copy_2", "copy_3"}
    assert split["split"]["identical_images"] == [sorted(group)]
    sides = [{e["case_id"] for e in split[part]} & group for part in ("training", "unlabelled", "testing")]
    assert sorted(len(s) for s in sides) == [0, 0, 4]
    counts = split["split"]["counts"]
    assert counts["training"] + counts["hidden_label_pool"] + counts["testing"] == 19


def test_pool_size_keeps_the_first_pool_cases_of_the_permutation(tmp_path, capsys):
    from tests.conftest import write_scenes

    root = write_scenes(tmp_path / "d", 20)
    full = make_split(load_dataset(root), 0.1, 0.2, 3)
    small = make_split(load_dataset(root), 0.1, 0.2, 3, pool_size=5)
    assert small["training"] == full["training"] and small["testing"] == full["testing"]
    pool = {e["case_id"] for e in small["unlabelled"]}
    assert len(pool) == 5 and pool < {e["case_id"] for e in full["unlabelled"]}
    assert small["split"]["counts"]["left_out"] == 14 - 5
    out = tmp_path / "s.json"
    assert main(["split", str(root), "--labelled-fraction", "0.1", "--pool-size", "5", "-o", str(out)]) == 0
    assert "(9 pool cases left out)" in capsys.readouterr().out
    assert main(["split", str(root), "--labelled-fraction", "0.1", "--pool-size", "-1", "-o", str(tmp_path / "t")]) == 2
    assert "--pool-size must be >= 0, got -1" in capsys.readouterr().err


def test_committed_psfhs_split_reproduces_and_keeps_its_duplicate_frames_together(psfhs, tmp_path):
    out = tmp_path / "split.json"
    args = ["split", str(psfhs), "--labelled-fraction", "0.05", "--test-fraction", "0.2", "--seed", "0", "-o", str(out)]
    assert main(args) == 0
    assert out.read_text() == (REPO / "benchmarks" / "splits" / "psfhs.json").read_text()
    split = json.loads(out.read_text())
    # the six pairs of identical frames that psfhs/README.md lists
    pairs = [("04316", "04398"), ("04319", "04323"), ("04403", "04404"), ("04943", "05000"), ("04959", "05012")]
    pairs.append(("05085", "05086"))
    assert split["split"]["identical_images"] == [[f"psfhs_{a}", f"psfhs_{b}"] for a, b in pairs]
    side = {e["case_id"]: part for part in ("training", "unlabelled", "testing") for e in split[part]}
    assert all(side[f"psfhs_{a}"] == side[f"psfhs_{b}"] for a, b in pairs)
    assert len(side) == 1358


@pytest.mark.parametrize(("fraction", "n"), [("0.03", 8), ("0.015", 4)])
def test_committed_few_label_hippocampus_split_reproduces_with_the_same_test_cases(hippocampus, tmp_path, fraction, n):
    out = tmp_path / "split.json"
    args = ["split", str(hippocampus), "--labelled-fraction", fraction, "--test-fraction", "0.2", "--seed", "0"]
    assert main([*args, "-o", str(out)]) == 0
    assert out.read_text() == (REPO / "benchmarks" / "splits" / f"hippocampus_{n}.json").read_text()
    few = json.loads(out.read_text())
    ten = json.loads((REPO / "benchmarks" / "splits" / "hippocampus.json").read_text())
    assert few["testing"] == ten["testing"] and len(few["training"]) == n
    assert {e["case_id"] for e in few["training"]} < {e["case_id"] for e in ten["training"]}


SEED_SPLITS = [  # (dataset, labelled fraction, file, seed) of the benchmark splits not tested above
    *[("psfhs", "0.05", f"psfhs_seed{s}", s) for s in (1, 2)],
    *[("psfhs", "0.01", f"psfhs_1pct{'_seed' + str(s) if s else ''}", s) for s in (0, 1, 2)],
    ("psfhs", "0.02", "psfhs_2pct", 0),
    *[("hippocampus", "0.015", f"hippocampus_4_seed{s}", s) for s in (1, 2)],
]


@pytest.mark.parametrize(("dataset", "fraction", "name", "seed"), SEED_SPLITS)
def test_committed_benchmark_splits_reproduce(dataset, fraction, name, seed, request, tmp_path):
    """Each file is what `split --seed S` makes; seeds label and test other cases than seed 0,
    and a smaller fraction of one seed labels a subset of the larger's cases, same test cases."""
    data = request.getfixturevalue(dataset)
    out = tmp_path / f"{name}.json"
    args = ["split", str(data), "--labelled-fraction", fraction, "--test-fraction", "0.2", "--seed", str(seed)]
    assert main([*args, "-o", str(out)]) == 0
    assert out.read_text() == (REPO / "benchmarks" / "splits" / f"{name}.json").read_text()
    split = json.loads(out.read_text())
    cases = lambda part, s=split: {e["case_id"] for e in s[part]}  # noqa: E731
    seed0 = json.loads(
        (REPO / "benchmarks" / "splits" / f"{dataset}{'_4' if dataset == 'hippocampus' else ''}.json").read_text()
    )
    if seed:
        assert cases("training") != cases("training", seed0) and cases("testing") != cases("testing", seed0)
    else:
        assert cases("testing") == cases("testing", seed0) and cases("training") < cases("training", seed0)
    assert split["split"]["identical_images"] == seed0["split"]["identical_images"]
