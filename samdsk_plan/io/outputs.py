"""Guards for everything a command writes: never into (or over) its input data, and a one-line
error naming the path, instead of a traceback, when the output cannot be written.

Every command that writes checks its output with :func:`check_output` before any work; a full
disk or a permission problem met later is reported by the atomic writer (and the CLI) as a
:class:`~samdsk_plan.errors.SamdskError` naming the path and :func:`describe_os_error`'s cause.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.cases import Dataset

DATASET_MARKERS = ("dataset.json", "imagesTr")


def protected_folders(dataset: Dataset) -> list[Path]:
    """The folders a command must not write into for ``dataset``: the dataset folder of an MSD
    or nnU-Net layout, and for a data list every folder holding one of its files (the list
    itself included)."""
    folders = {dataset.source.parent}
    if dataset.layout != "datalist" and dataset.root is not None:
        folders.add(dataset.root)
    else:
        for case in dataset.cases:
            for path in (*case.images, case.label):
                if path is not None:
                    folders.add(Path(path).parent)
    return sorted({_resolved(f) for f in folders})


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(
    path: str | os.PathLike,
    *,
    folder: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    protected: Iterable[str | os.PathLike] = (),
    what: str = "output",
) -> Path:
    """Refuse an output ``path`` that would destroy or mix with input data, or cannot be written.

    Args:
        path: the file (or, with ``folder=True``, the folder) the command will write.
        inputs: files the command reads; the output must not be one of them.
        protected: input dataset folders; the output must not be one of them or lie inside one
            (symbolic links are followed). Neither may it lie in a folder that holds a dataset
            (``dataset.json`` or ``imagesTr``), named as input or not.
        what: how the error names the output (e.g. ``"-o"``).

    Returns:
        ``path`` as given. Raises :class:`SamdskError` naming the path and the problem.
    """
    path = Path(path)
    real = _resolved(path)
    for item in inputs:
        if _resolved(item) == real:
            raise SamdskError(f"{path}: the {what} would replace the input file {item}; choose another output")
    for item in protected:
        if _inside(real, _resolved(item)):
            raise SamdskError(
                f"{path}: the {what} lies inside the input dataset folder {item}; input data is "
                "never written, choose an output outside it"
            )
    dataset_root = _dataset_around(real if folder else real.parent)
    if dataset_root is not None:
        raise SamdskError(
            f"{path}: the {what} lies inside the dataset folder {dataset_root} (it holds "
            f"{' or '.join(DATASET_MARKERS)}); input data is never written, choose an output outside it"
        )
    if folder:
        if path.exists() and not path.is_dir():
            raise SamdskError(f"{path}: the {what} folder is a file")
    elif path.is_dir():
        raise SamdskError(f"{path}: the {what} is an existing folder; give a file name")
    _check_writable(path if folder else path.parent, path, what)
    return path


def _dataset_around(folder: Path) -> Path | None:
    """``folder`` or its nearest ancestor that holds a dataset (``dataset.json``, ``imagesTr``), if any."""
    for candidate in (folder, *folder.parents):
        if (candidate / "dataset.json").is_file() or (candidate / "imagesTr").is_dir():
            return candidate
    return None


def _check_writable(target: Path, path: Path, what: str) -> None:
    """The nearest existing ancestor of ``target`` must be a writable folder."""
    probe = _resolved(target)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SamdskError(f"{path}: cannot create the {what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SamdskError(f"{path}: cannot write the {what}: the folder {probe} is not writable")


def describe_os_error(exc: OSError) -> str:
    """``"no space left on device"``-style text of an OS error, naming its file when it has one."""
    reason = "no space left on device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc)).lower()
    return f"{exc.filename}: {reason}" if exc.filename else reason
