"""Bundle runs forked from the warm-start server behave as fresh ``python -m monai.bundle run``
processes: same working directory, environment, ``sys.path[0]`` and arguments, and Ctrl-C ends
the run, the caller and the server (the weights' identity is tested in test_bundle_run_2d)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from samdsk_plan.errors import SamdskError
from samdsk_plan.loop.bundle_runner import BundleRunner, bundle_command
from samdsk_plan.loop.warm_start import WarmStarter
from tests.test_faults import _processes_mentioning, _wait_gone

pytestmark = pytest.mark.slow  # each test imports MONAI twice: left out of `make test-fast`

SHOW = "$print(__import__('os').getcwd(), __import__('os').environ.get('WARM_MARK'), __import__('sys').path[0])"


def _bundle(root: Path, run: str) -> Path:
    """A bundle folder whose ``train.json`` only runs the expression ``run``."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "train.json").write_text(json.dumps({"device": "cpu", "run": [run]}))
    return root


def test_a_warm_run_sees_what_a_fresh_run_sees(tmp_path, monkeypatch):
    bundle = _bundle(tmp_path / "bundle", SHOW)
    monkeypatch.setenv("WARM_MARK", "first")
    runner = BundleRunner(bundle, tmp_path)
    runner.run(["train.json"], tmp_path / "logs" / "warm.log")
    monkeypatch.setenv("WARM_MARK", "second")  # read at each run, not when the server started
    runner.run(["train.json"], tmp_path / "logs" / "warm2.log")
    runner.close()
    fresh = subprocess.run(
        bundle_command(["train.json"], {"device": "cpu", "dataset_dir": tmp_path}),
        cwd=bundle,
        capture_output=True,
        text=True,
        check=True,
    )
    last = lambda text: text.strip().splitlines()[-1]  # noqa: E731
    assert last((tmp_path / "logs" / "warm.log").read_text()) == f"{bundle} first {bundle}"
    assert last((tmp_path / "logs" / "warm2.log").read_text()) == f"{bundle} second {bundle}"
    assert last(fresh.stdout) == f"{bundle} second {bundle}"


def test_ctrl_c_during_a_warm_run_ends_it_and_leaves_no_process(tmp_path):
    bundle = _bundle(tmp_path / "bundle", "$__import__('time').sleep(600)")
    log = tmp_path / "logs" / "train.log"
    caller = (
        "import sys\n"
        "from samdsk_plan.loop.bundle_runner import BundleRunner\n"
        f"runner = BundleRunner({str(bundle)!r}, {str(tmp_path)!r})\n"
        "try:\n"
        f"    runner.run(['train.json'], {str(log)!r})\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(3)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", caller], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(_processes_mentioning(str(log.parent))) < 2:  # the server and its sleeping child
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends: the whole process group
        assert proc.wait(timeout=60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _wait_gone(str(log.parent)) == []


def test_a_server_that_died_before_a_request_is_reported_not_a_broken_pipe(tmp_path, monkeypatch):
    """The race between the runner's check that its server lives and its write of the request:
    a server that died in between gives the same SamdskError as one dying during a run (the
    write's BrokenPipeError is not raised), and the next run starts a new server."""
    warm = WarmStarter(dict(os.environ), str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    dead.wait()
    monkeypatch.setattr(warm, "_start", lambda: dead)  # the check passed; the server is gone by the write
    warm._server = dead
    with pytest.raises(SamdskError, match=r"warm-start server ended \(exit 0\) before a run finished"):
        warm.run(["run"], tmp_path, tmp_path / "x.log", os.environ)
    assert warm._server is None and dead.stdin.closed  # closed: the next run starts another server
