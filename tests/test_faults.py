"""Fault injection on the writing commands and the loop: each fault ends in one message naming the
file or setting, a non-zero exit and no traceback, writes nothing partial, and leaves the input
folder byte-identical. Kill tests: SIGKILL at random moments, no orphan process, and a rerun
reaches the same final state. The table in docs/reliability.md lists these faults."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.fingerprint.dataset import comparable
from samdsk_plan.io.atomic import atomic_write_json

pytestmark = pytest.mark.slow  # real data or bundle runs: left out of `make test-fast`

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "hippocampus"
N_CASES = 8


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (links followed), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def data(tmp_path, hippocampus) -> Path:
    """A small copy of real hippocampus cases (MSD layout): 8 labelled, 1 unlabelled."""
    meta = json.loads((hippocampus / "dataset.json").read_text())
    root = tmp_path / "hippo"
    meta["training"] = meta["training"][:N_CASES]
    meta["numTraining"] = N_CASES
    for entry in meta["training"]:
        for key in ("image", "label"):
            (root / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(hippocampus / entry[key], root / entry[key])
    for image in meta["test"]:
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(hippocampus / image, root / image)
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# ---------------------------------------------------------------- outputs never touch input data
@pytest.mark.parametrize("command", ["fingerprint", "split"])
@pytest.mark.parametrize("target", ["dataset.json", "imagesTr/new.json", "link/dataset.json"])
def test_output_into_the_dataset_is_refused(data, tmp_path, capsys, command, target):
    (tmp_path / "link").symlink_to(data)
    out = (tmp_path / target) if target.startswith("link") else (data / target)
    before = tree_digest(data)
    extra = ["--labelled-fraction", "0.5"] if command == "split" else []
    code, err = run_cli([command, data, "-o", out, *extra], capsys)
    assert code == 2
    assert "inside the input dataset folder" in err or "would replace the input file" in err
    assert str(out) in err
    assert tree_digest(data) == before


def test_propose_cache_inside_the_dataset_is_refused(data, capsys):
    before = tree_digest(data)
    code, err = run_cli(["propose", BUNDLE, data, "-o", data / "cache", "--fast", "-q"], capsys)
    assert code == 2 and "inside the input dataset folder" in err
    assert tree_digest(data) == before


def test_emit_into_a_dataset_folder_is_refused(data, tmp_path, capsys):
    before = tree_digest(data)
    (tmp_path / "link").symlink_to(data)
    for out in (data, data / "bundle", tmp_path / "link" / "imagesTr"):
        code, err = run_cli(["emit", BUNDLE / "configs" / "plans.json", "-o", out], capsys)
        assert code == 2 and "lies inside the dataset folder" in err and str(out) in err
    assert tree_digest(data) == before


def test_plan_never_replaces_its_fingerprint(tmp_path, capsys):
    fp = tmp_path / "fp.json"
    shutil.copy(REPO / "dataset_fingerprints" / "hippocampus.json", fp)
    before = fp.read_bytes()
    code, err = run_cli(["plan", fp, "-o", fp], capsys)
    assert code == 2 and "would replace the input file" in err
    assert fp.read_bytes() == before


def test_split_refuses_a_dataset_with_a_duplicate_entry(data, tmp_path, capsys):
    meta = json.loads((data / "dataset.json").read_text())
    meta["training"].append(meta["training"][0])
    meta["numTraining"] += 1
    (data / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "split.json"
    code, err = run_cli(["split", data, "--labelled-fraction", "0.5", "-o", out], capsys)
    assert code == 2 and "duplicate case id 'hippocampus_001'" in err and "fails verification" in err
    assert not out.exists()


def test_split_refuses_a_dataset_with_a_missing_file(data, tmp_path, capsys):
    label = data / json.loads((data / "dataset.json").read_text())["training"][2]["label"]
    label.unlink()
    code, err = run_cli(["split", data, "--labelled-fraction", "0.5", "-o", tmp_path / "s.json"], capsys)
    assert code == 2 and f"{label.resolve()}: file is missing" in err.replace(str(label), str(label.resolve()))
    assert not (tmp_path / "s.json").exists()


# ---------------------------------------------------------------- unusable output paths
@pytest.mark.parametrize("kind", ["existing folder", "parent is a file"])
def test_unusable_output_path_is_one_line(data, tmp_path, capsys, kind):
    if kind == "existing folder":
        out = tmp_path / "out.json"
        out.mkdir()
        expected = "is an existing folder"
    else:
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out.json"
        expected = "is a file, not a folder"
    for command, extra in (("fingerprint", []), ("split", ["--labelled-fraction", "0.5"])):
        code, err = run_cli([command, data, "-o", out, *extra], capsys)
        assert code == 2 and expected in err and str(out) in err, (command, err)


def test_full_disk_while_writing_names_the_file_and_the_cause(data, tmp_path, capsys, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    out = tmp_path / "split.json"
    code, err = run_cli(["split", data, "--labelled-fraction", "0.5", "-o", out], capsys)
    assert code == 2 and f"{out}: could not write (no space left on device)" in err
    assert list(tmp_path.glob("*split.json*")) == [], "no temporary file is left behind"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == mode


# ---------------------------------------------------------------- propose arguments
@pytest.mark.parametrize(
    "args, message",
    [
        (["-j", "0"], "argument -j/--workers: must be at least 1, got 0"),
        (["-j", "-3"], "argument -j/--workers: must be at least 1, got -3"),
        (["-j", "two"], "argument -j/--workers: expected a whole number of processes, got 'two'"),
        (["--roi-dir", "/no/such/folder"], "--roi-dir /no/such/folder: no such folder"),
        (["--prob-dir", "/no/such/folder"], "--prob-dir /no/such/folder: no such folder"),
    ],
)
def test_propose_bad_arguments(data, tmp_path, capsys, args, message):
    code, err = run_cli(["propose", BUNDLE, data, "-o", tmp_path / "cache", *args], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_propose_names_a_corrupt_unlabelled_image(data, tmp_path, capsys, workers):
    image = data / json.loads((data / "dataset.json").read_text())["test"][0]
    image.write_bytes(image.read_bytes()[:200])
    code, err = run_cli(["propose", BUNDLE, data, "-o", tmp_path / "cache", "--fast", "-q", "-j", workers], capsys)
    assert code == 2 and f"{image}: cannot be read as an image" in err.replace(str(image.resolve()), str(image))


@pytest.mark.parametrize("content", [b"", "truncated"])
def test_propose_names_a_broken_probability_file(data, tmp_path, capsys, content):
    """``--prob-dir``: an empty or truncated ``IMAGE_prob.nii.gz`` is one error naming it (LiteMedSAM loads first)."""
    image = data / json.loads((data / "dataset.json").read_text())["test"][0]
    prob = tmp_path / "pred" / image.name.replace(".nii.gz", "_prob.nii.gz")
    prob.parent.mkdir()
    prob.write_bytes(image.read_bytes()[:200] if content == "truncated" else content)
    args = ["propose", BUNDLE, data, "-o", tmp_path / "cache", "--generator", "litemedsam", "--prob-dir", prob.parent]
    code, err = run_cli([*args, "-q"], capsys)
    assert code == 2 and f"{prob}: cannot be read as an image" in err


# ---------------------------------------------------------------- the loop fails before it trains
def _small_datalist(data: Path, tmp_path: Path) -> Path:
    meta = json.loads((data / "dataset.json").read_text())
    tr = meta["training"]
    split = {
        "training": tr[:2],
        "validation": tr[2:4],
        "testing": tr[4:6],
        "unlabelled": [{"image": e["image"], "hidden_label": e["label"]} for e in tr[6:8]],
    }
    path = tmp_path / "small.json"
    path.write_text(json.dumps(split))
    return path


TINY = (
    "--epochs 1 --iterations-per-epoch 1 --batch-size 2 --val-interval 1 --fast "
    "--set network_def#filters=[8,16,32,64] --set num_workers=0 --threads 1 -q"
).split()


def _loop_args(data: Path, datalist: Path, run: Path, *extra: str) -> list:
    return ["loop", BUNDLE, "--data", data, "--datalist", datalist, "-o", run, "--rounds", "1", *TINY, *extra]


def _trained(run: Path) -> bool:
    return (run / "state.json").is_file() and "0/train" in json.loads((run / "state.json").read_text())["done"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--device", "cuda:7"], "--device 'cuda:7'"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--threshold", "nan"], "--threshold must be a number in [0, 1], got nan"),
        (["--threshold", "7"], "--threshold must be a number in [0, 1], got 7.0"),
        (["--pseudo-label-weight", "inf"], "--pseudo-label-weight must be a finite number > 0, got inf"),
        (["--generator", "sam", "--checkpoint", "/no/such/sam.pth"], "/no/such/sam.pth"),
    ],
)
def test_loop_refuses_bad_settings_before_training(data, tmp_path, capsys, extra, message):
    datalist = _small_datalist(data, tmp_path)
    run = tmp_path / "run"
    before = tree_digest(data)
    code, err = run_cli(_loop_args(data, datalist, run, *extra), capsys)
    assert code == 2 and message in err
    assert not run.exists(), "nothing is created for a run that cannot start"
    assert tree_digest(data) == before


def test_loop_refuses_an_unreadable_pool_image_then_restarts_with_corrected_settings(data, tmp_path, capsys):
    datalist = _small_datalist(data, tmp_path)
    pool_image = data / json.loads(datalist.read_text())["unlabelled"][0]["image"]
    good = pool_image.read_bytes()
    pool_image.write_bytes(good[: len(good) // 3])  # truncated NIfTI
    run = tmp_path / "run"
    code, err = run_cli(_loop_args(data, datalist, run, "--threshold", "nan"), capsys)
    assert code == 2 and "--threshold" in err  # settings first
    code, err = run_cli(_loop_args(data, datalist, run, "--threshold", "0.5"), capsys)
    assert (
        code == 2
        and "cannot be read" in err
        and str(pool_image.resolve()) in err.replace(str(pool_image), str(pool_image.resolve()))
    )
    assert not _trained(run)
    pool_image.write_bytes(good)
    # corrected settings (another threshold) on the same run folder: accepted, since round 0 never trained
    code, err = run_cli(_loop_args(data, datalist, run, "--threshold", "0.9", "--rounds", "0"), capsys)
    assert code == 0, err
    assert _trained(run)
    assert json.loads((run / "state.json").read_text())["header"]["settings"]["threshold"] == 0.9


def test_loop_refuses_an_image_listed_in_two_parts(data, tmp_path, capsys):
    datalist = _small_datalist(data, tmp_path)
    split = json.loads(datalist.read_text())
    split["testing"].append(split["training"][0])
    datalist.write_text(json.dumps(split))
    code, err = run_cli(_loop_args(data, datalist, tmp_path / "run"), capsys)
    assert code == 2 and "appear in more than one entry" in err
    assert "hippocampus_001.nii.gz: listed 2 times (testing, training)" in err


def test_loop_refuses_a_hash_in_the_run_folder(data, tmp_path, capsys):
    code, err = run_cli(_loop_args(data, _small_datalist(data, tmp_path), tmp_path / "a#b"), capsys)
    assert code == 2 and "holds '#'" in err
    assert not (tmp_path / "a#b").exists() and not (tmp_path / "a::b").exists()


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line holds ``text`` (forked workers keep their parent's)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(
                    (line for line in (proc / "status").read_text().splitlines() if line.startswith("State:")), ""
                )
            except OSError:
                continue
            if text in cmdline and "zombie" not in state:
                pids.append(int(proc.name))
    return pids


def _wait_gone(text: str, seconds: float = 10.0) -> list[int]:
    end = time.monotonic() + seconds
    while (left := _processes_mentioning(text)) and time.monotonic() < end:
        time.sleep(0.2)
    return left


def test_second_loop_on_the_same_run_folder_is_refused_naming_the_first(data, tmp_path, capsys):
    datalist = _small_datalist(data, tmp_path)
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "samdsk_plan", *map(str, _loop_args(data, datalist, run))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (run / ".lock").is_file() or not (run / ".lock").read_text().strip():
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        code, err = run_cli(_loop_args(data, datalist, run), capsys)
        assert code == 2 and "in use by samdsk-plan loop, process" in err and str(first.pid) in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert _wait_gone(str(run)) == [], "the killed loop's bundle run ended with it"


# ---------------------------------------------------------------- kill tests
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fingerprint_killed_at_a_random_moment_leaves_no_orphan_and_reruns_to_the_same_result(data, tmp_path, seed):
    out = tmp_path / f"fp{seed}.json"
    cmd = [sys.executable, "-m", "samdsk_plan", "fingerprint", str(data), "-o", str(out), "-j", "2", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(1.0, 4.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_gone(str(out)) == [], "no worker outlives the killed command"
    assert not out.exists() or json.loads(out.read_text())  # whole or absent, never partial
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary file left"
    subprocess.run(cmd, check=True, capture_output=True)
    reference = tmp_path / "reference" / out.name  # the same name: the fingerprint's name comes from it
    subprocess.run([*cmd[:6], str(reference), "-q"], check=True, capture_output=True)
    assert comparable(json.loads(out.read_text())) == comparable(json.loads(reference.read_text()))


@pytest.mark.parametrize("seed", [0, 1])
def test_propose_killed_at_a_random_moment_reruns_to_the_same_cache(data, tmp_path, seed):
    from samdsk_plan.proposals.cache import ProposalCache

    cmd = [sys.executable, "-m", "samdsk_plan", "propose", str(BUNDLE), str(data), "--all", "--fast", "-q", "-j", "2"]
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([*cmd, "-o", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(2.0, 6.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_gone(str(killed)) == []
    subprocess.run([*cmd, "-o", str(killed)], check=True, capture_output=True)
    subprocess.run([*cmd, "-o", str(clean)], check=True, capture_output=True)
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in clean.iterdir())
    for path in clean.iterdir():
        import numpy as np

        with np.load(path) as a, np.load(killed / path.name) as b:
            header = json.loads(bytes(a["header"]).decode())
            assert json.loads(bytes(b["header"]).decode())["key"] == header["key"]
            for key in a.files:
                if key != "header":
                    np.testing.assert_array_equal(a[key], b[key])
    assert ProposalCache(killed)  # the folder stays usable as a cache


def test_loop_killed_during_training_leaves_no_orphan_and_resumes(data, tmp_path, capsys):
    datalist = _small_datalist(data, tmp_path)
    run = tmp_path / "run"
    args = list(map(str, _loop_args(data, datalist, run, "--threshold", "0", "--rounds", "0")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "samdsk_plan", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (run / "round_0" / "logs" / "train.log").is_file():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    time.sleep(random.Random(0).uniform(0.5, 3.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _wait_gone(str(run)) == [], "the bundle's training run ended with the killed loop"
    code, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((run / "state.json").read_text())["done"] == ["0/prepare", "0/train", "0/evaluate"]
    assert (run / "round_0" / "models" / "model.pt").is_file()
