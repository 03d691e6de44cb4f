"""One loop per run folder: an advisory lock that the kernel releases when its holder dies."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from samdsk_plan.errors import SamdskError


class RunLock:
    """Hold ``RUN/NAME`` (``.lock``: the run's coordinator; one per shard for ``--shard``) for the
    life of this object (or of the process).

    The lock is ``flock`` on an open file, so a killed loop never leaves a stale lock; the
    file names the holder (host, pid, start time) for the message the second command prints.
    """

    def __init__(self, run_dir: str | Path, name: str = ".lock", what: str = "the run folder") -> None:
        self.path = Path(run_dir) / name
        self._fd = -1
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            self.release()
            raise SamdskError(
                f"{run_dir}: {what} is in use by {holder}; wait for it to finish or stop it first"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(
            self._fd,
            f"samdsk-plan loop, process {os.getpid()} on {socket.gethostname()}, started "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
            0,
        )

    def release(self) -> None:
        """Give the lock up (it is also released when the process ends)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()
