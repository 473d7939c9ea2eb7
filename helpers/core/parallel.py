"""Map a function over items in worker processes, with a progress bar."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from helpers.core.progress import tqdm

PRELOAD = ["numpy", "cv2", "PIL.Image", "pandas", "sklearn.model_selection"]
T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one image per process: no nested thread pools


def parallel_map(
    func: Callable[[T], R],
    items: Sequence[T] | Iterable[T],
    *,
    workers: int | None = None,
    desc: str = "",
    chunksize: int | None = None,
) -> list[R]:
    """``[func(x) for x in items]`` over ``workers`` processes (all cores by default), in order.

    ``workers=1`` runs in this process. ``func`` must be importable (a module-level function).
    """
    items = list(items)
    workers = default_workers() if workers is None else max(1, int(workers))
    workers = min(workers, max(1, len(items)))
    bar = tqdm(total=len(items), desc=desc, disable=not desc or not items, mininterval=1.0)
    try:
        if workers == 1:
            results = []
            for item in items:
                results.append(func(item))
                bar.update()
            return results
        chunksize = chunksize or max(1, min(32, len(items) // (workers * 8) or 1))
        # Not fork: OpenCV's thread pool does not survive fork() (opencv/opencv#5150), so a worker forked after
        # the parent used cv2 can hang for ever. Workers come from a clean fork server instead, which has the
        # heavy libraries preloaded (effective when the server starts: once per process) so start-up stays cheap.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([*PRELOAD, func.__module__])
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            results = []
            for result in pool.map(func, items, chunksize=chunksize):
                results.append(result)
                bar.update()
            return results
    finally:
        bar.close()
