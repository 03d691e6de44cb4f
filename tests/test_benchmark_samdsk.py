"""benchmarks/samdsk.py end to end on a tiny configuration (so it does not rot), and its
comparison arithmetic on numbers with known answers."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from samdsk_plan.cli.main import main
from tests.conftest import write_scenes
from tests.test_bundle_run_2d import ONE_BOX

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "samdsk.py"
PROMPT_BOXES = REPO / "benchmarks" / "prompt_boxes.py"


def _module():
    spec = importlib.util.spec_from_file_location("samdsk_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _result(dice: tuple[float, float], n_train: int, accepted: list[int] | None = None) -> dict:
    out = {
        "metrics": {name: {"dice": d, "hd95": 1.0, "n": 4} for name, d in zip(("disc", "bar"), dice, strict=True)},
        "n_train": n_train,
        "seconds": {"train": 60.0},
    }
    if accepted is not None:
        out.update(rounds=[{"accepted": n} for n in accepted], spearman=0.5, reference="litemedsam")
    return out


def test_comparison_reports_the_share_of_the_gap_closed_and_the_margin_over_self_training(capsys):
    """few 0.60, ceiling 0.80 (mean over classes and seeds): an arm at 0.70 closes 50 %, one
    at 0.65 closes 25 %; the best arm beats self-training (0.62, 0.64: sd 0.0141) by 0.07, by 0.08
    and 0.06 per seed."""
    results = {
        "seed0": {
            "few": _result((0.6, 0.6), 10),
            "pool-truth": _result((0.8, 0.8), 20),
            "classical": _result((0.65, 0.65), 10, [0]),
            "litemedsam": _result((0.7, 0.7), 18, [8]),
            "self-training": _result((0.62, 0.62), 18, [8]),
        },
        "seed1": {
            "few": _result((0.6, 0.6), 10),
            "pool-truth": _result((0.8, 0.8), 20),
            "classical": _result((0.65, 0.65), 10, [0]),
            "litemedsam": _result((0.72, 0.68), 16, [6]),
            "self-training": _result((0.64, 0.64), 16, [6]),
        },
    }
    _module().print_tables(results, {1: "disc", 2: "bar"}, ["pool-truth", "classical", "litemedsam", "self-training"])
    out = capsys.readouterr().out
    rows = {}  # the first line of each arm: its row of the metrics table
    for line in out.splitlines():
        if line.split() and line.split()[0] in results["seed0"]:
            rows.setdefault(line.split()[0], line)
    assert rows["litemedsam"].rstrip().endswith("50 %") and rows["classical"].rstrip().endswith("25 %")
    assert rows["pool-truth"].rstrip().endswith("100 %") and rows["few"].rstrip().endswith("-")
    assert "0.700 ± 0.000" in rows["litemedsam"]  # mean Dice: (0.7 + 0.7) / 2 per seed
    assert "0.630 ± 0.014" in rows["self-training"]
    assert "best SamDSK arm: litemedsam; closes 50 % of the few -> pool-truth gap of +0.2000" in out
    assert "beats self-training by +0.0700 mean Dice (target > one seed-sd of self-training, 0.0141)" in out
    assert "ahead on 2 of 2 seed(s), the per-seed difference's sd 0.0141" in out  # 0.08 and 0.06
    assert "seed1: r1: 6" in out


def test_under_finetune_the_gap_runs_from_the_continued_few_label_model(capsys):
    """few 0.50 (round 0), few-continued 0.60, ceiling 0.80: an arm at 0.70 closes half of the
    few-continued -> pool-truth gap (it would be 67 % of round 0's); both low ends show no share."""
    seed = {
        "few": _result((0.5, 0.5), 10),
        "few-continued": _result((0.6, 0.6), 10),
        "pool-truth": _result((0.8, 0.8), 20),
        "litemedsam": _result((0.7, 0.7), 18, [8]),
        "self-training": _result((0.62, 0.62), 18, [8]),
    }
    _module().print_tables({"seed0": seed}, {1: "disc", 2: "bar"}, list(seed)[1:])
    out = capsys.readouterr().out
    rows = {}  # the first line of each arm: its row of the metrics table
    for line in out.splitlines():
        if line.split() and line.split()[0] in seed:
            rows.setdefault(line.split()[0], line)
    assert rows["litemedsam"].rstrip().endswith("50 %") and rows["self-training"].rstrip().endswith("10 %")
    assert rows["few"].rstrip().endswith("-") and rows["few-continued"].rstrip().endswith("-")
    assert "best SamDSK arm: litemedsam; closes 50 % of the few-continued -> pool-truth gap of +0.2000" in out


def test_benchmark_refuses_a_continued_few_label_arm_without_finetune(tmp_path):
    """Retrained from scratch, a continued few-label model would be round 0 again: refused."""
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--arms", "pool-truth,few-continued"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "few-continued is the round-0 model fine-tuned on its own labels: it needs --retrain finetune" in done.stderr
    assert not (tmp_path / "out").exists()


def _init_checkpoint(log: Path) -> str | None:
    """The ``init_checkpoint`` a bundle run's log shows (MONAI prints the overridden arguments)."""
    hits = re.findall(r"> init_checkpoint: '([^']*)'", log.read_text())
    return hits[-1] if hits else None


@pytest.mark.slow
def test_benchmark_runs_every_arm_on_a_tiny_configuration(tmp_path):
    """One seed of synthetic scenes (the arithmetic over seeds is tested above), a pool of 3,
    one round of one 50-iteration epoch, retrained by fine-tuning: every arm trains and is
    evaluated, the arms share round 0, every later training starts from the model before it,
    and the counts agree with the runs."""
    data = write_scenes(tmp_path / "data", 20)
    split = tmp_path / "split.json"
    assert main(["split", str(data), "--labelled-fraction", "0.4", "--seed", "0", "-o", str(split)]) == 0
    out = tmp_path / "out"
    arms = "pool-truth,classical,litemedsam,union,self-training"
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--splits", str(split)]
    cmd += ["--out", str(out), "--pool", "3", "--rounds", "1", "--iterations", "50", "--batch-size", "2"]
    cmd += ["--val-interval", "1", "--filters", "8,16,32,64", "--arms", arms, "--pseudo-label-weight", "0.5"]
    cmd += ["--train-seed", "1"]  # under seeds 0 and 3 no LiteMedSAM label passes calibration here
    cmd += ["--retrain", "finetune"]
    cmd += [a for kv in ONE_BOX[1::2] for a in ("--plan-set", kv)]  # one prompt box per region: 8x fewer decodes
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == ["seed0"]
    for seed, arms_of in results.items():
        assert set(arms_of) == {"few", "few-continued", *arms.split(",")}
        labelled = len(json.loads((out / seed / "classical" / "round_0" / "datalist.json").read_text())["training"])
        assert arms_of["few"]["n_train"] == labelled == 6  # 8 labelled, two kept for validation (calibration needs two)
        assert arms_of["pool-truth"]["n_train"] == labelled + 3
        for arm in ("classical", "litemedsam", "union"):
            state = json.loads((out / seed / arm / "state.json").read_text())
            assert (
                state["rounds"]["0"] == json.loads((out / seed / "classical" / "state.json").read_text())["rounds"]["0"]
            )
            accepted = len(state["rounds"]["1"]["accepted"])
            assert arms_of[arm]["n_train"] == labelled + accepted
            if not accepted:  # nothing added: the arm is its round-0 model
                assert arms_of[arm]["metrics"] == arms_of["few"]["metrics"]
        base = {
            e["image"]
            for e in json.loads((out / seed / "classical" / "round_0" / "datalist.json").read_text())["training"]
        }
        assert json.loads((out / seed / "litemedsam" / "state.json").read_text())["rounds"]["1"]["accepted"]
        for record in (out / seed / "union" / "round_1" / "matches" / "pool").glob("*.json"):
            assert json.loads(record.read_text())["generator"] == "union"
        chosen = json.loads((out / seed / "self-training.json").read_text())
        counts = []
        if chosen["reference"] is not None:
            state = json.loads((out / seed / chosen["reference"] / "state.json").read_text())
            counts = [n] if (n := len(state["rounds"]["1"]["accepted"])) else []
        assert chosen["counts"] == counts
        # something was added: the weights are checked (self-training adds as many as its reference,
        # which may be classical here and accept none)
        for arm in ["litemedsam", "union"] + (["self-training"] if counts else []):
            last = max((out / seed / arm).glob("round_*/datalist.json"), key=lambda p: int(p.parent.name.split("_")[1]))
            added = [e for e in json.loads(last.read_text())["training"] if e["image"] not in base]
            assert all(e["weight"] == 0.5 for e in added), (arm, added)  # machine labels carry the asked weight
        assert arms_of["self-training"]["n_train"] == labelled + sum(counts)
        assert arms_of["few-continued"]["n_train"] == labelled
        r0 = out / seed / "classical" / "round_0"
        assert _init_checkpoint(r0 / "logs" / "train.log") is None  # round 0: from scratch
        continued = sorted(p.name for p in (out / seed / "few-continued").glob("round_*"))
        assert continued == [f"round_{r}" for r in range(1, len(counts) + 1)]  # the reference's trainings
        for name in continued:  # on the labelled cases alone, from round 0
            again = json.loads((out / seed / "few-continued" / name / "datalist.json").read_text())
            assert again["training"] == json.loads((r0 / "datalist.json").read_text())["training"]
            assert _init_checkpoint(out / seed / "few-continued" / name / "logs" / "train.log") == str(
                r0 / "models" / "model.pt"
            )
        assert _init_checkpoint(out / seed / "pool-truth" / "logs" / "train.log") == str(r0 / "models" / "model.pt")
        for arm in ("classical", "litemedsam", "union"):  # a trained round 1 from its round 0 (the shared one's copy)
            if json.loads((out / seed / arm / "state.json").read_text())["rounds"]["1"]["accepted"]:
                log = out / seed / arm / "round_1" / "logs" / "train.log"
                assert _init_checkpoint(log) == str(out / seed / arm / "round_0" / "models" / "model.pt")
        if counts:
            log = out / seed / "self-training" / "round_1" / "logs" / "train.log"
            assert _init_checkpoint(log) == str(r0 / "models" / "model.pt")
    for arm in ("few", *arms.split(",")):
        assert any(line.startswith(arm) for line in done.stdout.splitlines()), arm
    assert "machine-label weight 0.5, training seed 1, retrain finetune" in done.stdout
    assert f"with {torch.backends.cpu.get_cpu_capability()} kernels" in done.stdout  # runs compare on one kernel set
    for seed in results:  # every training of the run, the loop's included, ran under the bundle's seed
        for arm in ("classical", "litemedsam", "union"):
            header = json.loads((out / seed / arm / "state.json").read_text())["header"]
            assert header["settings"]["overrides"]["seed"] == "1"
    assert json.loads((out / "setup.json").read_text())["train_seed"] == 1
    assert json.loads((out / "setup.json").read_text())["plan_sets"] == list(ONE_BOX[1::2])
    prompts = json.loads((out / "bundle" / "configs" / "plans.json").read_text())["samdsk"]["proposals"]["prompts"]
    assert prompts["box_scales"] == [1.0] and prompts["box_shift"] == 0
    assert "plan --set samdsk.proposals.prompts.box_scales=[1.0], plan --set" in done.stdout
    assert "Wall time per arm" in done.stdout and "Spearman" in done.stdout
    _prompt_boxes_score_the_accepted_labels_as_the_loop_did(out)
    _rematch_reads_the_finished_round_and_names_what_it_cannot(out)
    missing = subprocess.run([sys.executable, str(PROMPT_BOXES), str(out)], capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr  # rematch's check removed the probabilities
    assert "no probabilities of case" in missing.stderr


def _prompt_boxes_score_the_accepted_labels_as_the_loop_did(out: Path) -> None:
    """benchmarks/prompt_boxes.py on the tiny run's LiteMedSAM round: per class, its prediction
    and matched-label columns are the round report's true Dice of the accepted cases."""
    done = subprocess.run([sys.executable, str(PROMPT_BOXES), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "seed0" / "litemedsam" / "round_1" / "report.json").read_text())
    rows = [line for line in done.stdout.splitlines() if line.startswith("seed0 ")]
    plans = json.loads((out / "bundle" / "configs" / "plans.json").read_text())
    assert len(rows) == len(plans["samdsk"]["classes"])
    for row, c in zip(rows, sorted(plans["samdsk"]["classes"], key=int), strict=True):
        values = [float(v) for v in row[24:].split("(n=")[0].split()]
        assert len(values) == 8 and all(0 <= v <= 1 for v in values)
        assert values[0] == pytest.approx(report["true_dice"]["accepted_predictions"][c], abs=5e-4)
        assert values[1] == pytest.approx(report["true_dice"]["accepted_pseudo_labels"][c], abs=5e-4)
        assert f"(n={report['true_dice']['n_cases']})" in row


def _rematch_reads_the_finished_round_and_names_what_it_cannot(out: Path) -> None:
    """benchmarks/rematch.py on the tiny run's LiteMedSAM round: one line per variant, the run's
    own count of accepted images; a truncated cache file or a missing probability map ends the run
    with the file named and no traceback."""
    variants = ["soft:0.05", "soft:bg+0.05"]
    rematch = [sys.executable, str(REPO / "benchmarks" / "rematch.py"), str(out), "--variants", ",".join(variants)]
    done = subprocess.run(rematch, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    accepted = len(json.loads((out / "seed0" / "litemedsam" / "state.json").read_text())["rounds"]["1"]["accepted"])
    assert f"seed0: {accepted} accepted by the run" in done.stdout
    assert [line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")] == variants
    rdir = out / "seed0" / "litemedsam" / "round_1"
    cache = sorted((rdir / "proposals").glob("*.npz"))[0]
    cache.write_bytes(cache.read_bytes()[:100])
    done = subprocess.run(rematch, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{cache}: unreadable proposal cache file" in done.stderr
    for prob in (rdir / "predictions" / "pool").glob("*_prob.*"):
        prob.unlink()
    done = subprocess.run(rematch, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{rdir / 'predictions' / 'pool'}: no probabilities of case" in done.stderr


def test_benchmark_refuses_a_plan_setting_the_plan_refuses(tmp_path):
    """A bad ``--plan-set`` ends the run with the plan's message, no traceback, and the work
    folder's settings unrecorded (a corrected rerun into it is not refused)."""
    data = write_scenes(tmp_path / "data", 4)
    out = tmp_path / "out"
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out), "--plan-set", "samdsk.nope=1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "samdsk.nope" in done.stderr and "samdsk-plan plan failed (exit 2) while preparing the bundle" in done.stderr
    assert not (out / "setup.json").exists() and not (out / "bundle").exists()


def test_benchmark_refuses_a_machine_label_weight_that_is_not_positive(tmp_path):
    """A weight of 0 would train the SamDSK arms on human labels only: refused before any work."""
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--pseudo-label-weight", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--pseudo-label-weight must be a finite number > 0, got 0.0" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "changed, message",
    [
        ({"train_seed": 1}, "train_seed 1 -> 0"),
        ({"retrain": "finetune"}, "retrain 'finetune' -> 'scratch'"),
        ({"plan_sets": ("samdsk.pseudo_label_weight=1",)}, "plan_sets ['samdsk.pseudo_label_weight=1'] -> []"),
    ],
)
def test_benchmark_refuses_a_work_folder_of_other_settings(tmp_path, psfhs, changed, message):
    """A work folder keeps finished trainings: a rerun with another training seed (or retraining
    mode, budget, weight, pool) would mix them with the new ones, so it is refused, naming what
    changed, before the bundle is made."""
    bench = _module()
    out = tmp_path / "out"
    out.mkdir()
    # the defaults (400 iterations: 8 epochs of batch 4, validation every 4) but one setting changed
    setup = bench.Setup(psfhs.resolve(), out / "bundle", out, 8, 4, 4, bench.FILTERS["psfhs"], **changed)
    recorded = setup.fixed(60)
    if not setup.plan_sets:  # as a folder from before --plan-set records it: read as the plan's settings
        del recorded["plan_sets"]
    (out / "setup.json").write_text(json.dumps(recorded))
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{out}: the work folder holds results of other settings ({message})" in done.stderr
    assert not (out / "bundle").exists()


def test_benchmark_refuses_a_work_folder_whose_settings_file_is_truncated(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "setup.json").write_text('{"data": ')
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{out / 'setup.json'}: not valid JSON" in done.stderr and "choose another --out" in done.stderr
    assert (out / "setup.json").read_text() == '{"data": ' and not (out / "bundle").exists()


def test_benchmark_refuses_a_work_folder_inside_the_dataset(tmp_path):
    """``--out`` inside the dataset folder would write beside the images: refused, naming both,
    before anything is made (a stand-in dataset folder, so a broken check writes nothing real)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}")
    out = data / "bench"
    cmd = [sys.executable, str(SCRIPT), "--data", str(data), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{out}: the work folder (--out) lies inside the input dataset folder {data}" in done.stderr
    assert sorted(p.name for p in data.iterdir()) == ["dataset.json"]


def test_the_committed_bundle_serves_only_the_data_it_was_emitted_from(tmp_path, hippocampus):
    """``bundles/hippocampus`` is copied for the shared hippocampus folder; another ``--data``
    (here 2D scenes) gets a bundle emitted from its own fingerprint, not the committed 3D one."""
    prepare_bundle = _module().prepare_bundle
    committed = json.loads((REPO / "bundles" / "hippocampus" / "configs" / "train.json").read_text())
    copied = prepare_bundle("hippocampus", hippocampus, tmp_path / "shared")
    assert json.loads((copied / "configs" / "train.json").read_text()) == committed
    assert not (tmp_path / "shared" / "fp.json").exists()  # copied, not planned again
    emitted = prepare_bundle("hippocampus", write_scenes(tmp_path / "scenes", 6), tmp_path / "other")
    assert (tmp_path / "other" / "fp.json").is_file()
    assert json.loads((emitted / "configs" / "train.json").read_text())["network_def"]["spatial_dims"] == 2
    assert committed["network_def"]["spatial_dims"] == 3


def test_the_shards_benchmark_never_empties_a_folder_inside_the_dataset(tmp_path):
    """``benchmarks/shards.py`` empties its ``--out`` first: inside the dataset folder that
    would delete images, so it is refused and the folder keeps its files."""
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "imagesTr" / "a.png").write_bytes(b"image")
    cmd = [sys.executable, str(REPO / "benchmarks" / "shards.py"), "--data", str(data), "--out", str(data / "imagesTr")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{data / 'imagesTr'}: the work folder (--out) lies inside the input dataset folder {data}" in done.stderr
    assert (data / "imagesTr" / "a.png").read_bytes() == b"image"
