"""Canonical JSON and atomic writes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from samdsk_plan.io.atomic import atomic_write_json, dumps_json, remove_orphans
from samdsk_plan.io.images import write_image


def test_number_lists_go_on_one_line_and_strings_stay_as_they_are(tmp_path):
    obj = {"spacing": [1.0, 2.5, -3], "nested": [[1, 2], [3]], "override": "[8,16,32,64]", "empty": []}
    text = dumps_json(obj)
    assert '"spacing": [1.0, 2.5, -3]' in text and '"override": "[8,16,32,64]"' in text
    assert json.loads(text) == obj
    path = atomic_write_json(tmp_path / "a" / "b.json", obj)
    assert json.loads(path.read_text()) == obj
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write_and_no_other(tmp_path):
    host = socket.gethostname()
    dead, alive = _dead_pid(), os.getppid()
    orphan = tmp_path / f".b.json.~{host}~{dead}~x1y2.tmp"
    live = tmp_path / f".b.json.~{host}~{alive}~a1b2.tmp"  # a writer still running
    remote = tmp_path / f".b.json.~other-machine~{dead}~c3d4.tmp"  # a pid on another host says nothing here
    image_orphan = tmp_path / f".case.~{host}~{dead}~e5f6.nii.gz"
    other_file = tmp_path / f".b.jsonl.~{host}~{dead}~g7h8.tmp"  # another file's orphan: its own writer sweeps it
    for p in (orphan, live, remote, image_orphan, other_file):
        p.write_text("partial")
    atomic_write_json(tmp_path / "b.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["b.json", live.name, remote.name, image_orphan.name, other_file.name]
    )
    write_image(tmp_path / "case.nii.gz", np.zeros((2, 2, 2), np.uint8), np.eye(4))
    assert not image_orphan.exists() and (tmp_path / "case.nii.gz").is_file()
    assert remove_orphans(tmp_path, "b.jsonl") == [other_file]
