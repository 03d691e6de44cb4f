"""The SamDSK loop on a few real hippocampus cases: two rounds through the bundle, provenance,
reports against the hidden labels, and resuming after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.loop import Loop, LoopSettings
from tests.test_bundle_run import run_bundle

# real data or bundle runs: left out of `make test-fast`; one pytest-xdist worker runs the file, whose tests
# share the module's trained run (`finished`)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("loop")]

REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "benchmarks" / "splits" / "hippocampus.json"
# slim network and a few iterations: the loop's mechanics, not the model's quality, are tested
TINY = (
    "--epochs 1 --iterations-per-epoch 2 --batch-size 2 --val-interval 1 --fast --threshold 0 --max-accepted 2 "
    "--set network_def#filters=[8,16,32,64] --set num_workers=0 --threads 1 -q"
).split()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The committed bundle with one region per slice for every class (the assignment solver):
    an undertrained model predicts foreground everywhere, where the subset search is slow."""
    dst = tmp_path_factory.mktemp("loop") / "hippocampus"
    shutil.copytree(REPO / "bundles" / "hippocampus", dst)
    plans = json.loads((dst / "configs" / "plans.json").read_text())
    for cls in plans["samdsk"]["classes"].values():
        for bounds in cls["regions_per_slice"].values():
            bounds["upper"] = 1
    (dst / "configs" / "plans.json").write_text(json.dumps(plans))
    return dst


@pytest.fixture(scope="module")
def datalist(tmp_path_factory) -> Path:
    """3 labelled training, 2 validation, 2 test and 4 hidden-label pool cases of the split."""
    split = json.loads(SPLIT.read_text())
    path = tmp_path_factory.mktemp("data") / "small.json"
    path.write_text(
        json.dumps(
            {
                "training": split["training"][:3],
                "validation": split["training"][3:5],
                "testing": split["testing"][:2],
                "unlabelled": split["unlabelled"][:4],
            }
        )
    )
    return path


def _args(bundle: Path, hippocampus: Path, datalist: Path, run: Path) -> list[str]:
    return [
        "loop",
        str(bundle),
        "--data",
        str(hippocampus),
        "--datalist",
        str(datalist),
        "-o",
        str(run),
        "--rounds",
        "2",
        *TINY,
    ]


@pytest.fixture(scope="module")
def finished(bundle, hippocampus, datalist, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "run"
    assert main(_args(bundle, hippocampus, datalist, run)) == 0
    return run


def test_the_module_runs_on_one_worker(request):
    """Under `make test` (pytest-xdist, `--dist loadgroup`) one worker runs this file, so the
    two-round run its tests share (``finished``, about two minutes) is made once. xdist marks a
    grouped test by an "@loop" suffix on its node id; pytest 9.2 drops it (pytest-xdist#1386),
    and the tests then spread over the workers, each making the run again."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest-xdist's --dist loadgroup")
    assert request.node.nodeid.endswith("@loop"), f"{request.node.nodeid}: the xdist_group was lost"


def _state(run: Path) -> dict:
    return json.loads((run / "state.json").read_text())


def test_two_rounds_add_every_pool_case_with_provenance(finished, bundle, hippocampus):
    state = _state(finished)
    weight = json.loads((bundle / "configs" / "plans.json").read_text())["samdsk"]["pseudo_label_weight"]
    assert weight == 0.5, "the plan's default lambda"
    steps = ["prepare", "train", "evaluate"]
    per_round = ["predict", "match", "accept", "train", "evaluate"]
    assert state["done"] == [f"0/{s}" for s in steps] + [f"{r}/{s}" for r in (1, 2) for s in per_round]
    assert len(state["rounds"]["1"]["accepted"]) == len(state["rounds"]["2"]["accepted"]) == 2
    final = json.loads((finished / "round_2" / "datalist.json").read_text())
    assert final["unlabelled"] == []
    machine = [e for e in final["training"] if "samdsk" in e]
    assert len(machine) == 4 and len(final["training"]) == 7
    for entry in machine:
        label = Path(entry["label"])
        assert finished in label.parents, "pseudo-labels live in the run folder"
        image = nib.load(entry["image"])
        seg = nib.load(label)
        assert seg.shape == image.shape
        np.testing.assert_allclose(seg.affine, image.affine, atol=1e-5)
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}
        assert entry["weight"] == weight and entry["samdsk"]["generator"] == "classical"
        record = json.loads(label.with_name(label.name.replace(".nii.gz", ".json")).read_text())
        assert entry["samdsk"]["beta"] == record["beta"] and entry["samdsk"]["round"] in (1, 2)
    # the betas were ranked: round 1 took the two best of its pool
    r1 = {
        Path(p).name.removesuffix(".json"): json.loads(p.read_text())["beta"]
        for p in (finished / "round_1" / "matches" / "pool").glob("*.json")
    }
    assert sorted(r1, key=lambda c: (-r1[c], c))[:2] == state["rounds"]["1"]["accepted"]
    for r in ("0", "1", "2"):
        assert state["rounds"][r]["evaluation"]["part"] == "test"
        assert state["rounds"][r]["evaluation"]["mean"]["Anterior"]["n"] == 2


def test_steps_and_cases_keep_their_wall_times(finished):
    """Every done step has its seconds in the state; every match record its proposal and
    matching seconds, and a case matched again in round 2 takes its classical proposals from
    the run's cache (reading them back is faster than making them in round 1)."""
    state = _state(finished)
    assert sorted(state["seconds"]) == sorted(state["done"])  # state.json is written with sorted keys
    assert all(t >= 0 for t in state["seconds"].values())
    assert state["seconds"]["0/train"] > state["seconds"]["0/prepare"]
    records = {
        r: {p.stem: json.loads(p.read_text()) for p in (finished / f"round_{r}" / "matches" / "pool").glob("*.json")}
        for r in (1, 2)
    }
    for per_round in records.values():
        for rec in per_round.values():
            assert set(rec["seconds"]) == {"proposals", "matching"} and min(rec["seconds"].values()) >= 0
    again = set(records[1]) & set(records[2])
    assert len(again) == 2
    for case in again:
        assert records[2][case]["seconds"]["proposals"] < records[1][case]["seconds"]["proposals"]


def test_round_report_measures_accepted_labels_against_hidden_labels(finished, hippocampus):
    report = json.loads((finished / "round_1" / "report.json").read_text())
    split = json.loads(SPLIT.read_text())
    hidden = {Path(e["image"]).name.removesuffix(".nii.gz"): e["hidden_label"] for e in split["unlabelled"][:4]}
    dices = []
    for cid in report["accepted"]:
        label = np.asarray(nib.load(finished / "round_1" / "matches" / "pool" / f"{cid}.nii.gz").dataobj)
        truth = np.asarray(nib.load(hippocampus / hidden[cid]).dataobj)
        per_class = []
        for c in (1, 2):
            a, b = label == c, truth == c
            per_class.append(2 * (a & b).sum() / (a.sum() + b.sum()))
        dices.append(np.mean(per_class))
    assert report["true_dice"]["accepted_pseudo_labels"]["mean"] == pytest.approx(np.mean(dices))
    assert set(report["true_dice"]) == {
        "n_cases",
        "accepted_pseudo_labels",
        "accepted_predictions",
        "confidence_selected_predictions",
    }
    assert report["true_dice"]["n_cases"] == 2
    assert sum(b["count"] for b in report["beta_histogram"]) == report["n_pool"] == 4
    assert "beta histogram" in (finished / "round_1" / "report.md").read_text()


def test_each_case_records_the_floor_the_plan_gave_it(finished, bundle):
    """Every pool case's record holds the floor of the plan's rule for its own probabilities,
    and the round report summarises them."""
    from samdsk_plan.io.datalists import read_probabilities
    from samdsk_plan.matching import MatchSettings
    from samdsk_plan.planning.plans import Plans

    plans = Plans.load(bundle / "configs" / "plans.json")
    rule = MatchSettings(**plans.samdsk.matching)
    assert rule.floor_rule == "background"
    r1 = finished / "round_1"
    floors = []
    for path in sorted((r1 / "matches" / "pool").glob("*.json")):
        record = json.loads(path.read_text())
        shape = nib.load(record["image"]).shape
        probs = read_probabilities(next((r1 / "predictions" / "pool").glob(f"{path.stem}_prob.*")), shape, 3)
        assert record["floor"] == pytest.approx(rule.floor(probs))
        floors.append(record["floor"])
    report = json.loads((r1 / "report.json").read_text())
    assert report["floor"]["median"] == pytest.approx(np.median(floors)) and report["floor"]["n_cases"] == 4
    assert "- matching floor: median" in (r1 / "report.md").read_text()


def test_killed_run_resumes_to_the_same_state(finished, bundle, hippocampus, datalist, tmp_path):
    """Start from the finished run's round 0, kill the loop mid-round 1, rerun it."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(finished / "round_0", run / "round_0")
    shutil.copy(finished / "hidden_labels.json", run / "hidden_labels.json")
    state = _state(finished)
    state.update(done=state["done"][:3], rounds={"0": state["rounds"]["0"]}, stopped=None)
    (run / "state.json").write_text(json.dumps(state))

    child = subprocess.Popen(
        [sys.executable, "-m", "samdsk_plan", *_args(bundle, hippocampus, datalist, run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while "1/predict" not in _state(run)["done"]:
        assert child.poll() is None and time.time() < deadline, (
            child.stderr.read() if child.poll() is not None else "slow"
        )
        time.sleep(0.1)
    time.sleep(1.0)  # into the matching step
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert "1/accept" not in _state(run)["done"]

    assert main(_args(bundle, hippocampus, datalist, run)) == 0
    resumed, reference = _state(run), _state(finished)
    assert resumed["done"] == reference["done"]
    for r in ("1", "2"):
        assert resumed["rounds"][r]["accepted"] == reference["rounds"][r]["accepted"]
    for name in ("1", "2"):
        got = json.loads((run / f"round_{name}" / "datalist.json").read_text())
        want = json.loads((finished / f"round_{name}" / "datalist.json").read_text())
        assert [e["image"] for e in got["training"]] == [e["image"] for e in want["training"]]
    assert [
        e["samdsk"]["beta"]
        for e in json.loads((run / "round_1" / "datalist.json").read_text())["training"]
        if "samdsk" in e
    ] == pytest.approx(
        [
            e["samdsk"]["beta"]
            for e in json.loads((finished / "round_1" / "datalist.json").read_text())["training"]
            if "samdsk" in e
        ]
    )
    for record in (run / "round_1" / "matches" / "pool").glob("*.json"):
        json.loads(record.read_text())  # every record under its final name is complete


def test_calibrated_round_reports_its_curve(finished, bundle, hippocampus, datalist, tmp_path):
    """One round from the finished run's round 0 with the threshold calibrated on the two
    validation cases: the chosen threshold is the lowest curve point that passes both and whose
    labels beat the predictions, and exactly the pool cases at or above it are accepted."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(finished / "round_0", run / "round_0")
    shutil.copy(finished / "hidden_labels.json", run / "hidden_labels.json")
    state = _state(finished)
    state["header"]["settings"]["threshold"] = None
    state.update(done=state["done"][:3], rounds={"0": state["rounds"]["0"]}, stopped=None)
    (run / "state.json").write_text(json.dumps(state))
    args = _args(bundle, hippocampus, datalist, run)
    i = args.index("--threshold")
    del args[i : i + 2]
    args[args.index("--rounds") + 1] = "1"
    assert main(args) == 0
    report = json.loads((run / "round_1" / "report.json").read_text())
    curve = report["calibration"]
    assert 1 <= len(curve) <= 2 and curve[0]["n_accepted"] == 2
    # a threshold must pass both validation cases (calibration_min_cases 2): the curve's first point
    passing = [
        row["threshold"] for row in curve if row["label_dice"] >= row["prediction_dice"] and row["n_accepted"] >= 2
    ]
    assert report["threshold_source"] == (
        "calibrated on validation cases"
        if passing
        else "no threshold passes 2 or more validation cases whose labels are as accurate as the predictions"
    )
    assert report["threshold"] == (min(passing) if passing else None)
    betas = {
        p.name.removesuffix(".json"): json.loads(p.read_text())["beta"]
        for p in (run / "round_1" / "matches" / "pool").glob("*.json")
    }
    expected = sorted((c for c, b in betas.items() if passing and b >= min(passing)), key=lambda c: (-betas[c], c))
    assert report["accepted"] == expected[:2]
    assert (_state(run)["stopped"] == "round 1 accepted no case") == (not expected)


def test_a_run_folder_refuses_other_settings_and_the_dataset_folder(finished, bundle, hippocampus, datalist, capsys):
    args = _args(bundle, hippocampus, datalist, finished)
    args[args.index("--max-accepted") + 1] = "3"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was started with settings" in err and "Traceback" not in err
    inside = _args(bundle, hippocampus, datalist, hippocampus / "run")
    assert main(inside) == 2
    assert "must lie outside the dataset folder" in capsys.readouterr().err
    assert not (hippocampus / "run").exists()


def test_loop_settings_are_validated(bundle, hippocampus, tmp_path, capsys):
    assert main(["loop", str(bundle), "--data", str(hippocampus), "-o", str(tmp_path / "r"), "--epochs", "0"]) == 2
    assert "--epochs must be positive" in capsys.readouterr().err
    with pytest.raises(Exception, match="retrain must be one of"):
        Loop(bundle, hippocampus, tmp_path / "r2", settings=LoopSettings(retrain="warm"))
    bad = tmp_path / "bad_bundle"
    shutil.copytree(bundle, bad)
    plans = json.loads((bad / "configs" / "plans.json").read_text())
    plans["samdsk"]["fusion"] = "average"
    plans["samdsk"]["matching"]["target"] = "fuzzy"
    (bad / "configs" / "plans.json").write_text(json.dumps(plans))
    assert main(["loop", str(bad), "--data", str(hippocampus), "-o", str(tmp_path / "r3")]) == 2
    err = capsys.readouterr().err
    assert f"{bad / 'configs' / 'plans.json'}: not a samdsk-plan plans file" in err
    assert "samdsk.fusion: 'average' is not one of" in err and "samdsk.matching.target: 'fuzzy' is not one of" in err


def test_pseudolabel_config_runs_one_pass_through_monai_bundle(finished, bundle, hippocampus, datalist, tmp_path):
    """inference.json + pseudolabel.json with round 0's model: predictions, matches, accepted.json."""
    work = tmp_path / "bundle"
    shutil.copytree(bundle, work)
    args = {
        "dataset_dir": hippocampus,
        "datalist": datalist,
        "ckpt_dir": finished / "round_0" / "models",
        "network_def#filters": "[8,16,32,64]",
        "acceptance_threshold": 0,
        "max_accepted": 3,
        "fast": True,
    }
    run_bundle(work, ["inference.json", "pseudolabel.json"], overrides=args)
    accepted = json.loads((work / "pseudolabels" / "accepted.json").read_text())
    assert len(accepted["training"]) == 3 and len(accepted["unlabelled"]) == 1
    betas = [e["samdsk"]["beta"] for e in accepted["training"]]
    assert betas == sorted(betas, reverse=True)
    for entry in accepted["training"]:
        assert Path(entry["label"]).parent == work / "pseudolabels" and Path(entry["label"]).is_file()
    assert len(list((work / "pseudolabels" / "predictions").glob("*_prob.nii.gz"))) == 4
    assert len(list((work / "proposals").glob("*.npz"))) == 4


def test_calibration_without_validation_cases_is_refused_before_training(bundle, hippocampus, tmp_path, capsys):
    split = json.loads(SPLIT.read_text())
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"training": split["training"][:1], "unlabelled": split["unlabelled"][:1]}))
    assert (
        main(["loop", str(bundle), "--data", str(hippocampus), "--datalist", str(one), "-o", str(tmp_path / "run")])
        == 2
    )
    err = capsys.readouterr().err
    assert "no labelled validation case to calibrate the acceptance threshold on" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "round_0" / "models").exists()


def test_choosing_the_generator_without_validation_cases_is_refused_before_training(
    bundle, hippocampus, tmp_path, capsys
):
    split = json.loads(SPLIT.read_text())
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"training": split["training"][:1], "unlabelled": split["unlabelled"][:1]}))
    args = ["loop", str(bundle), "--data", str(hippocampus), "--datalist", str(one), "-o", str(tmp_path / "run")]
    assert main([*args, "--generator", "auto", "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "no labelled validation case to choose the proposal generator on (--generator auto)" in err
    assert "name one with --generator" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "round_0" / "models").exists()


def test_calibration_on_a_single_validation_case_is_refused_before_training(bundle, hippocampus, tmp_path, capsys):
    split = json.loads(SPLIT.read_text())
    few = tmp_path / "few.json"
    few.write_text(
        json.dumps(
            {
                "training": split["training"][:2],
                "validation": split["training"][2:3],
                "unlabelled": split["unlabelled"][:1],
            }
        )
    )
    args = ["loop", str(bundle), "--data", str(hippocampus), "--datalist", str(few), "-o", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 labelled validation case(s) to calibrate the acceptance threshold on" in err
    assert "at least 2 validation cases" in err and "--threshold" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "round_0" / "models").exists()


def _nnunet_hippocampus(hippocampus: Path, root: Path, n: int = 8) -> Path:
    """``n`` hippocampus cases as an nnU-Net v2 raw dataset (``CASE_0000.nii.gz`` images,
    ``CASE.nii.gz`` labels), linked to the shared files (read-only)."""
    meta = json.loads((hippocampus / "dataset.json").read_text())
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for entry in meta["training"][:n]:
        case = Path(entry["image"]).name.removesuffix(".nii.gz")
        (root / "imagesTr" / f"{case}_0000.nii.gz").symlink_to((hippocampus / entry["image"]).resolve())
        (root / "labelsTr" / f"{case}.nii.gz").symlink_to((hippocampus / entry["label"]).resolve())
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "MRI"},
                "labels": {"background": 0, "Anterior": 1, "Posterior": 2},
                "numTraining": n,
                "file_ending": ".nii.gz",
            }
        )
    )
    return root


def test_nnunet_case_ids_keep_one_name_through_the_loop(bundle, hippocampus, tmp_path):
    """An nnU-Net case ``hippocampus_001`` (image ``hippocampus_001_0000.nii.gz``) is called so in
    the split, the match records, the pseudo-labels and the round's datalist and report."""
    data = _nnunet_hippocampus(hippocampus, tmp_path / "Dataset004_Hippocampus")
    split, run = tmp_path / "split.json", tmp_path / "run"
    assert main(["split", str(data), "--labelled-fraction", "0.4", "--test-fraction", "0.25", "-o", str(split)]) == 0
    pool = [e["case_id"] for e in json.loads(split.read_text())["unlabelled"]]
    assert len(pool) == 3 and not any(c.endswith("_0000") for c in pool)
    assert (
        main(
            ["loop", str(bundle), "--data", str(data), "--datalist", str(split), "-o", str(run), "--rounds", "1", *TINY]
        )
        == 0
    )
    matches = run / "round_1" / "matches" / "pool"
    assert sorted(p.name for p in matches.glob("*.json")) == sorted(f"{c}.json" for c in pool)
    assert sorted(p.name for p in matches.glob("*.nii.gz")) == sorted(f"{c}.nii.gz" for c in pool)
    # the bundle's inference names its files after the image, and the loop found them
    assert sorted(p.name for p in (run / "round_1" / "predictions" / "pool").glob("*_prob.nii.gz")) == sorted(
        f"{c}_0000_prob.nii.gz" for c in pool
    )
    report = json.loads((run / "round_1" / "report.json").read_text())
    assert len(report["accepted"]) == 2 and set(report["accepted"]) <= set(pool)
    assert report["true_dice"]["n_cases"] == 2  # the hidden labels were found under the same ids
    final = json.loads((run / "round_1" / "datalist.json").read_text())
    machine = [e for e in final["training"] if "samdsk" in e]
    assert sorted(e["case_id"] for e in machine) == sorted(report["accepted"])
    assert [e["case_id"] for e in final["unlabelled"]] == [c for c in pool if c not in report["accepted"]]
