"""``RUN/state.json``: the steps a loop run has done and its per-round summaries, written atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.atomic import atomic_write_json
from samdsk_plan.io.layouts import read_json_object

logger = logging.getLogger(__name__)
STATE_FORMAT = 1
# the step after which a run folder is tied to its settings
TIED_AFTER = "0/train"


def round0_trained(path: Path) -> bool:
    """Whether the run whose state file is ``path`` has finished training round 0 (it is then
    tied to its settings)."""
    return path.is_file() and TIED_AFTER in read_json_object(path).get("done", [])


class RunState:
    """Done steps (``"R/name"``), their wall times and per-round summaries of a run folder.

    A run folder is tied to its settings (``header``) once round 0 has trained; before that (a
    run that failed its checks or its first training) a command with other settings starts it
    afresh.

    Raises:
        SamdskError: the state file is of an unknown format, or the run is tied to other settings.
    """

    def __init__(self, path: Path, header: dict, log: Callable[[str], None] = logger.info) -> None:
        self.path = path
        self.data = {"format": STATE_FORMAT, "header": header, "done": [], "rounds": {}, "stopped": None}
        if path.is_file():
            old = read_json_object(path)
            if old.get("format") != STATE_FORMAT:
                raise SamdskError(f"{path}: unknown run state format {old.get('format')!r}")
            changed = [k for k, v in header.items() if old["header"].get(k) != v]
            if not changed:
                self.data = old
                return
            if round0_trained(path):
                key = changed[0]
                raise SamdskError(
                    f"{path}: this run folder was started with {key} = {old['header'].get(key)!r}, "
                    f"not {header[key]!r}; use another output folder"
                )
            log(
                f"{path}: round 0 never finished training; starting afresh with the new settings ({', '.join(changed)})"
            )
        self.save()

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def done(self, step: str) -> bool:
        return step in self.data["done"]

    def mark(self, step: str, seconds: float | None = None) -> None:
        """Record ``step`` as done, with its wall time in ``seconds`` (under ``"seconds"``)."""
        self.data["done"].append(step)
        if seconds is not None:
            self.data.setdefault("seconds", {})[step] = round(seconds, 3)
        self.save()

    def round(self, r: int) -> dict:
        return self.data["rounds"].setdefault(str(r), {})
