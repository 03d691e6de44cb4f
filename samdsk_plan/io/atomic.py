"""Atomic file writes: a reader never sees a half-written file, a crash leaves no partial output."""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.outputs import describe_os_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# a temporary file's name carries its writer: ".{stem}.~{host}~{pid}~{random}{suffix}"
_WRITER = re.compile(r"~(?P<host>[^~/]*)~(?P<pid>\d+)~")


def _host() -> str:
    return socket.gethostname().replace("~", "-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(folder: str | os.PathLike, stem: str) -> list[Path]:
    """Remove the temporary files of ``folder/stem*`` whose writer was killed before it could
    clean up (SIGKILL, power loss) and return them.

    Only files written on this host by a process that no longer exists are removed, so a
    concurrent writer (another shard, another machine on a shared folder) never loses its file.
    """
    removed = []
    for path in Path(folder).glob(f".{glob.escape(stem)}.~*"):
        writer = _WRITER.match(path.name, len(stem) + 2)
        if writer and writer["host"] == _host() and not _alive(int(writer["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def temporary_file(path: str | os.PathLike, stem: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` beside ``path`` for a file named ``stem`` + ``suffix``, after
    removing the orphans a killed writer of it left (:func:`remove_orphans`).

    Returns the open descriptor and the temporary file's path.
    """
    folder = Path(path).parent
    remove_orphans(folder, stem)
    return tempfile.mkstemp(prefix=f".{stem}.~{_host()}~{os.getpid()}~", suffix=suffix, dir=folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask), not
    the temporary file's 0600. Temporary files a killed writer of ``path`` left are removed
    first (:func:`remove_orphans`). An :class:`OSError` (full disk, no permission) leaves no file
    behind and is raised as a :class:`SamdskError` naming ``path`` and the cause.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_file(path, path.name, ".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise SamdskError(f"{path}: could not write ({describe_os_error(exc)})") from exc
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# an indented array of numbers only: its '[' ends a line (a JSON string cannot hold a raw newline)
_NUMBER_LIST = re.compile(r"\[\n\s*(-?[\d.eE+-]+(?:,\n\s*-?[\d.eE+-]+)*)\n\s*\]")


def dumps_json(obj: Any, sort_keys: bool = True) -> str:
    """The project's canonical JSON: sorted keys (or, with ``sort_keys=False``, the objects' own
    key order), 2-space indent, lists of numbers on one line, trailing newline."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m[1].split(",")) + "]", text) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as canonical JSON (see :func:`dumps_json`) atomically."""
    return atomic_write_text(path, dumps_json(obj))
