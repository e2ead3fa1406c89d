"""Worker processes for the single-threaded Python sections of a step: per-PCN file
rendering (maps, workbooks, pyramids, impact reports, trend charts) and impact matching's
index months. How many: :func:`worker_count` (``PHM_WORKERS``).

The per-PCN outputs (map PNGs and HTML, population pyramids, cohort workbooks) are made by
single-threaded Python (matplotlib, folium, xlsxwriter): a pool of worker processes keeps
both cores busy. The pattern (first used by the maps, :mod:`geo.maps`):

* the workers are never a fork of the calling process, whose DuckDB threads are live:
  ``forkserver`` where there is one (a fresh server process that imports the rendering
  modules once, :data:`PRELOAD`, and forks each worker from itself), else ``spawn``;
* the workers get plain data (polars frames, which pickle as Arrow, and Python values),
  never the warehouse;
* the largest jobs are started first so the workers finish together, and the results are
  handed back in the callers' order, so everything written from them is the same as one
  process would write (:func:`ordered_map` with ``workers=1`` is that one process).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import forkserver
from typing import Any

#: imported once by the fork server, whichever step starts it first (the server lives as long
#: as the process that started it: one Dagster run, in-process executor), so no worker of any
#: step imports the rendering code again
PRELOAD = [
    "geo.maps",
    "segmentation.report",
    "phm.exports",
    "phm.impact.report",
    "phm.impact.matching",
    "phm.history",
]

#: worker processes of every pool: 1 = everything in the calling process
ENV = "PHM_WORKERS"


def workers_setting(name: str) -> int | None:
    """The worker count in the environment variable ``name``, or None when it is unset; a
    value that is not a whole number of at least 1 is an error naming the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if n < 1:
        raise ValueError(f"{name} must be at least 1, not {n}")
    return n


def worker_count() -> int:
    """Worker processes: ``PHM_WORKERS`` if set (1 = everything in the calling process), else
    ``min(cpu_count, 4)``."""
    n = workers_setting(ENV)
    return n if n is not None else max(1, min(os.cpu_count() or 1, 4))


def n_workers(workers: int | None, tasks: int, worth_it: bool = True) -> int:
    """Worker processes for ``tasks`` tasks (1 = in the calling process): ``workers`` if
    given, else :func:`worker_count`, never more than the tasks; when neither ``workers``
    nor ``PHM_WORKERS`` is set, 1 unless ``worth_it`` (the work outweighs starting the
    workers)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if workers is None and not os.environ.get(ENV, "").strip() and not worth_it:
        return 1
    return max(1, min(worker_count() if workers is None else workers, tasks))


def worker_context():
    """The multiprocessing context of the pools: ``forkserver`` (preloading :data:`PRELOAD`)
    where there is one, else ``spawn``; never ``fork``."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()
        return ctx
    return multiprocessing.get_context("spawn")


def export_workers(n_jobs: int, workers: int | None = None) -> int:
    """Worker processes for ``n_jobs`` per-PCN jobs (1 = in this process): ``workers`` if
    given, else ``PHM_WORKERS`` if set, else :func:`worker_count` but at most one worker per
    two jobs (a worker costs about one job to start); never more than the jobs."""
    if workers is None and not os.environ.get(ENV, "").strip():
        return max(1, min(worker_count(), n_jobs // 2))
    return n_workers(workers, n_jobs)


def start_workers(n_jobs: int, workers: int | None = None) -> int:
    """:func:`export_workers` for ``n_jobs``; when that is more than one, start the fork
    server now (:func:`worker_context`), so that it imports the rendering code while the
    caller reads its data. Returns the number of workers."""
    n = export_workers(n_jobs, workers)
    if n > 1:
        worker_context()
    return n


def largest_first(sizes: Sequence[float]) -> list[int]:
    """The job indices by size, largest first (ties in job order): the order to start them
    in so that two workers finish close together."""
    return sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))


@contextmanager
def ordered_results(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    *,
    workers: int = 1,
    sizes: Sequence[float] | None = None,
) -> Iterator[Iterator[Any]]:
    """Start ``fn(*job)`` for every job now; the context gives their results in the order of
    ``jobs``, so the caller can do its own share of the work while the workers run.

    ``workers`` > 1: the jobs run in that many worker processes (:func:`worker_context`),
    started largest first by ``sizes`` (default: in order); ``fn`` must be a module-level
    function and the jobs picklable. ``workers`` = 1: each job runs in this process when its
    result is taken. A failed job raises when its result is taken; leaving the context
    cancels the jobs not yet started and waits for the workers."""
    if workers <= 1 or len(jobs) <= 1:
        yield (fn(*job) for job in jobs)
        return
    order = largest_first(sizes) if sizes is not None else list(range(len(jobs)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context()) as pool:
        futures = {i: pool.submit(fn, *jobs[i]) for i in order}
        try:
            yield (futures[i].result() for i in range(len(jobs)))
        finally:
            for f in futures.values():
                f.cancel()


def ordered_map(
    fn: Callable[..., Any],
    jobs: Sequence[tuple],
    *,
    workers: int = 1,
    sizes: Sequence[float] | None = None,
) -> list[Any]:
    """``[fn(*job) for job in jobs]``, in ``workers`` processes (:func:`ordered_results`)."""
    with ordered_results(fn, jobs, workers=workers, sizes=sizes) as results:
        return list(results)
