"""``loop --shard I/N``: the deterministic split, refusals, and a real round shared by two processes
whose records are the ones one process makes from the same predictions."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from samdsk_plan.cli.main import main
from samdsk_plan.errors import SamdskError
from samdsk_plan.io import read_image
from samdsk_plan.io.datalists import prediction_file
from samdsk_plan.loop.pseudolabel import match_entries
from samdsk_plan.loop.selection import select
from samdsk_plan.loop.shards import Shard
from samdsk_plan.planning import Plans
from samdsk_plan.proposals.pipeline import make_generators
from tests.conftest import write_scenes
from tests.test_bundle_run_2d import _bundle, scene_lists, short_loop, short_loop_args


def entries(ids: list[str]) -> list[dict]:
    return [{"case_id": c, "image": f"imagesTr/{c}.png"} for c in ids]


def test_shards_deal_the_sorted_cases_out_in_turn():
    pool = entries(["c", "a", "e", "b", "d"])
    shares = [[e["case_id"] for e in Shard(i, 2).of(pool)] for i in range(2)]
    assert shares == [["a", "c", "e"], ["b", "d"]]
    assert Shard(1, 2).of(list(reversed(pool))) == Shard(1, 2).of(pool), "independent of the input order"
    assert Shard(0, 2).owners(pool) == {"a": 0, "b": 1, "c": 0, "d": 1, "e": 0}
    three = [Shard(i, 3).of(pool) for i in range(3)]
    assert sorted(e["case_id"] for share in three for e in share) == list("abcde")  # a partition
    assert Shard.parse(" 3 / 8 ") == Shard(3, 8) and Shard().coordinator and not Shard(1, 2).coordinator


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2", "0/0", "1/2/3"])
def test_a_bad_shard_is_refused(text, tmp_path, capsys):
    with pytest.raises(SamdskError, match="--shard"):
        Shard.parse(text)
    args = ["loop", str(tmp_path), "--data", str(tmp_path), "-o", str(tmp_path / "run"), "--shard", text]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--shard" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_shard_refuses_a_run_folder_started_with_other_settings(hippocampus, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    state = {"format": 1, "header": {"bundle": "elsewhere"}, "done": ["0/prepare"], "rounds": {}, "stopped": None}
    (run / "state.json").write_text(json.dumps(state))
    bundle = Path(__file__).resolve().parents[1] / "bundles" / "hippocampus"
    args = ["loop", str(bundle), "--data", str(hippocampus), "-o", str(run), "--shard", "1/2", "--shard-poll", "0.1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other settings than this shard's" in err and "Traceback" not in err
    assert json.loads((run / "state.json").read_text()) == state, "a shard never writes the state"


@pytest.mark.slow
def test_a_round_shared_by_two_processes_matches_as_one_process_would(tmp_path):
    """Shard 1/2 runs as a second process beside the coordinator: each predicts and matches only
    its share of the pool, the coordinator waits for the other's records before accepting, and
    every record is what one process makes from the same probabilities. The worker is killed
    (SIGKILL) while it predicts and started again: the round still ends as one process's would."""
    data = write_scenes(tmp_path / "data", 14)
    bundle = _bundle(data, tmp_path)
    lists = scene_lists(5)
    (tmp_path / "list.json").write_text(json.dumps(lists))
    run = tmp_path / "run"
    shard_args = ["--generator", "classical", "--shard-poll", "0.2"]
    # the worker starts first and waits for the coordinator to create and train the run
    command = [sys.executable, "-m", "samdsk_plan", *short_loop_args(bundle, data, tmp_path, 1, 10, *shard_args)]
    command += ["--shard", "1/2"]
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    restarted = threading.Event()

    def kill_while_predicting_then_restart() -> None:
        deadline = time.monotonic() + 300
        while not (run / "round_1" / "predictions" / "pool_1_of_2").is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        with (tmp_path / "worker.log").open("w") as log:
            workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        restarted.set()

    killer = threading.Thread(target=kill_while_predicting_then_restart, daemon=True)
    killer.start()
    try:
        short_loop(bundle, data, lists, tmp_path, 1, 10, *shard_args, "--shard", "0/2")
        assert restarted.wait(timeout=60) and workers[1].wait(timeout=300) == 0, (tmp_path / "worker.log").read_text()
    finally:
        for worker in workers:
            worker.kill()
    assert workers[0].returncode == -signal.SIGKILL, "the first worker was killed, not finished"
    assert "shard 1/2: round 1: predict and match 2 pool case(s)" in (tmp_path / "worker.log").read_text()
    assert not [p for p in run.rglob(".*") if p.name.endswith(".tmp")], "no temporary file outlives the rerun"

    r1 = run / "round_1"
    pool = json.loads((run / "round_0" / "datalist.json").read_text())["unlabelled"]
    owners = Shard(0, 2).owners(pool)
    assert owners == {"s_009": 0, "s_010": 1, "s_011": 0, "s_012": 1, "s_013": 0}
    for k in range(2):  # each shard predicted exactly its share
        folder = r1 / "predictions" / f"pool_{k}_of_2"
        assert sorted(p.name for p in folder.glob("*_prob.*")) == sorted(
            prediction_file(folder, e, "prob").name for e in pool if owners[e["case_id"]] == k
        )
    records = {p.stem: json.loads(p.read_text()) for p in (r1 / "matches" / "pool").glob("*.json")}
    assert sorted(records) == sorted(owners)

    # one process, the same probabilities: the same records and labels
    plans = Plans.load(bundle / "configs" / "plans.json")
    again = {}
    for k in range(2):
        share = [e for e in pool if owners[e["case_id"]] == k]
        found = match_entries(
            share, r1 / "predictions" / f"pool_{k}_of_2", tmp_path / "again", plans, make_generators(plans, "classical")
        )
        again.update({rec.case_id: rec for rec in found})
    for c, rec in records.items():
        assert rec["beta"] == pytest.approx(again[c].beta, abs=1e-12) and rec["chosen"] == again[c].chosen
        np.testing.assert_array_equal(read_image(rec["label"]).array, read_image(again[c].label).array)
    report = json.loads((r1 / "report.json").read_text())
    threshold = report["threshold"] if report["threshold"] is not None else float("inf")
    assert report["accepted"] == select({c: r["beta"] for c, r in records.items()}, threshold)
    assert report["n_pool"] == 5
