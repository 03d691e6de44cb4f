"""Start ``python -m monai.bundle run`` processes from one that has already imported MONAI.

Importing MONAI costs 8-12 s on a slow CPU (it loads every submodule, and with them torchvision's
ops and ``torch._dynamo``), more than a short bundle run's own work. A :class:`WarmStarter` pays
that once: it starts a server process (``python -c "...warm_start import serve; serve()" TAG``) that imports
MONAI and the bundle runtime and then forks one child per bundle run. Each child is what a fresh
``python -m monai.bundle run`` would be: the run's working directory (also ``sys.path[0]``),
environment, argument vector and log file (stdout and stderr, stdin from ``/dev/null``), default
``SIGINT`` handling, and an exit status that the server reports back.

The server has one thread and runs no tensor work before it forks, so no OpenMP pool or CUDA
state is copied into a child. CPU runs only: importing MONAI may initialise the CUDA driver, after
which a forked child cannot use the GPU (GPU runs start fresh; their import is a small share).
The server gets ``SIGKILL`` when its parent dies, and each child when the server dies, so a killed
loop leaves no process behind; both show ``TAG`` (a log folder of the run) in ``ps``.

Protocol: one JSON line per run on the server's stdin (``{"args", "cwd", "log", "env"}``), answered
on its stdout by ``{"pid": N}`` when the child starts and ``{"returncode": N}`` when it ends (a
negative code is the signal that ended it, as in :mod:`subprocess`).
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import signal
import subprocess
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.parallel import die_with_parent


class WarmStarter:
    """Runs ``monai.bundle`` command lines in children forked from a warm server.

    Args:
        env: the server's environment (fixed for its life; the OpenMP runtime reads its thread
            count once, when torch loads).
        tag: shown on the server's command line (and its children's) in ``ps``.
    """

    def __init__(self, env: Mapping[str, str], tag: str) -> None:
        self.env = dict(env)
        self.tag = tag
        self._server: subprocess.Popen | None = None

    def run(self, args: Sequence[str], cwd: str | Path, log_file: str | Path, env: Mapping[str, str]) -> int:
        """``python -m monai.bundle ARGS`` in ``cwd`` with ``env``, output to ``log_file``;
        returns its exit status. Interrupted here, the child is killed before this raises."""
        server = self._start()
        job = {"args": list(args), "cwd": str(cwd), "log": str(log_file), "env": dict(env)}
        with contextlib.suppress(BrokenPipeError):  # a server that died answers with EOF below
            server.stdin.write(json.dumps(job) + "\n")
            server.stdin.flush()
        pid = self._reply("pid")
        try:
            return self._reply("returncode")
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.close()  # its reply is no longer expected: the next run starts a new server
            raise

    def close(self) -> None:
        """End the server (it also ends when this process does)."""
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            for stream in (self._server.stdin, self._server.stdout):
                with contextlib.suppress(BrokenPipeError):  # a request left unsent in the buffer of a dead server
                    stream.close()  # (closed all the same: the flush fails, the close is done)
            self._server = None

    def _start(self) -> subprocess.Popen:
        if self._server is None or self._server.poll() is not None:
            self._server = subprocess.Popen(
                [sys.executable, "-c", f"from {__name__} import serve; serve()", self.tag],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=self.env,
                text=True,
                preexec_fn=die_with_parent,
            )
        return self._server

    def _reply(self, key: str) -> int:
        line = self._server.stdout.readline()
        if not line:
            code = self._server.wait()
            self.close()
            raise SamdskError(f"the bundle runs' warm-start server ended (exit {code}) before a run finished")
        return int(json.loads(line)[key])


def serve() -> None:
    """The server's loop: import MONAI once, then fork one child per request on stdin."""
    import monai.bundle.scripts  # noqa: F401  (the import this server exists to pay once)

    import samdsk_plan.bundle.runtime  # noqa: F401  (what the bundle's configs instantiate)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the child and the loop
    replies, server = sys.stdout, os.getpid()
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            sys.exit(_child(job, server))  # the interpreter's own exit, as a fresh process's
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


def _child(job: dict, server: int) -> int:
    """Become ``python -m monai.bundle ARGS`` for ``job`` and return its exit status."""
    die_with_parent()
    if os.getppid() != server:  # the server died before the line above
        os._exit(1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.path[0] = job["cwd"]
    sys.argv = ["monai.bundle", *job["args"]]
    try:
        runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0
