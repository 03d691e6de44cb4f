"""Map a function over cases in worker processes, in order, with a progress bar."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux ``prctl``; a no-op
    elsewhere), so that workers and bundle runs never outlive a killed command. Meant as a
    process-pool initializer or a ``subprocess`` ``preexec_fn``."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int = 1, desc: str = "", progress: bool = True
) -> list[R]:
    """``[fn(x) for x in items]`` computed by ``workers`` processes; results keep the input order.

    ``workers <= 1`` runs in this process (no pickling, easiest to debug). ``fn`` must be a
    module-level function (or a ``functools.partial`` of one) so it can be sent to workers.
    Workers end with this process, even when it is killed (:func:`die_with_parent`).
    """
    bar = dict(total=len(items), desc=desc, unit="case", disable=not progress or None, leave=False)
    if workers <= 1 or len(items) <= 1:
        return list(tqdm((fn(x) for x in items), **bar))
    chunksize = max(1, len(items) // (workers * 8))
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=die_with_parent) as pool:
        results: Iterable[R] = pool.map(fn, items, chunksize=chunksize)
        return list(tqdm(results, **bar))
