"""Checks a long command runs before it starts: the dataset's layout is sound, every file it will
read reads, the device exists. Each failure is a :class:`SamdskError` listing every problem."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from tqdm import tqdm

from samdsk_plan.errors import SamdskError
from samdsk_plan.io.cases import Dataset, Problem
from samdsk_plan.io.images import file_problem, read_image
from samdsk_plan.io.verify import dataset_problems


def _fail(head: str, problems: Sequence[Problem | str]) -> None:
    if problems:
        shown = [str(p) for p in problems[:20]]
        more = [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        raise SamdskError("\n".join([head, *shown, *more]))


def require_sound_layout(dataset: Dataset) -> None:
    """Refuse ``dataset`` if ``verify`` would fail it on its layout alone: duplicate cases, an
    empty dataset, structural problems of ``dataset.json``, or files that do not exist."""
    problems = [p for p in dataset_problems(dataset) if p.severity == "error"]
    for case in dataset.cases:
        for path in (*case.images, case.label):
            if path is not None and (problem := file_problem(path)) is not None:
                problems.append(Problem(str(path), problem))
    _fail(
        f"{dataset.source}: the dataset fails verification ({len(problems)} problem(s)); "
        "'samdsk-plan verify' lists them all:",
        problems,
    )


def require_disjoint(parts: dict[str, list[dict]], source: object) -> None:
    """Refuse data-list parts that share an image (a case trained on and tested on, say)."""
    where: dict[str, list[str]] = defaultdict(list)
    for name, entries in parts.items():
        for entry in entries:
            images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
            for image in images:
                where[str(image)].append(name)
    clashes = [
        f"error: {image}: listed {len(names)} times ({', '.join(names)})"
        for image, names in sorted(where.items())
        if len(names) > 1
    ]
    _fail(f"{source}: {len(clashes)} image(s) appear in more than one entry", clashes)


def require_readable(paths: Iterable[str], progress: bool = True) -> None:
    """Read every file of ``paths`` (images and labels) once; list every one that fails."""
    paths = sorted(set(paths))
    problems = []
    for path in tqdm(paths, desc="check inputs", unit="file", disable=not progress or None, leave=False):
        try:
            read_image(path)
        except Exception as exc:
            problems.append(f"error: {path}: cannot be read ({exc})")
    _fail(f"{len(problems)} input file(s) cannot be read:", problems)


def require_device(device: str, nproc: int = 1) -> None:
    """Refuse a torch device string this machine does not have (``cuda`` without a GPU, say), and
    ``nproc`` training processes on CUDA with fewer GPUs."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SamdskError(f"--device {device!r}: not a torch device (use cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return
    if dev.type != "cuda":
        raise SamdskError(f"--device {device!r}: only cpu and cuda devices are supported")
    if not torch.cuda.is_available():
        raise SamdskError(f"--device {device!r}: this machine has no usable CUDA GPU")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SamdskError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    if nproc > torch.cuda.device_count():
        raise SamdskError(f"--nproc {nproc}: one process per GPU, and only {torch.cuda.device_count()} here")
