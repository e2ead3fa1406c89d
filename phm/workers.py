"""Worker processes for the single-threaded Python sections of a step (impact matching's
index months, the PCN trend charts), as :mod:`geo.maps` does for the maps.

Workers come from a ``forkserver`` context (else ``spawn``), never a fork of the calling
process, which holds live DuckDB connections; they get their inputs as arrays, frames or
files, and the caller gathers their results in a fixed order, so that the outputs are the
same, to the bit, as in one process.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing import forkserver

ENV = "PHM_WORKERS"


def worker_count() -> int:
    """Worker processes: ``PHM_WORKERS`` if set (1 = everything in the calling process), else
    ``min(cpu_count, 2)``."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"{ENV} must be a whole number, not {raw!r}") from None
        if n < 1:
            raise ValueError(f"{ENV} must be at least 1, not {n}")
        return n
    return max(1, min(os.cpu_count() or 1, 2))


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


def worker_context(preload: list[str]):
    """A 'forkserver' context where there is one (its server imports ``preload`` once, if
    this call starts it: the server is shared by every pool of this process), else 'spawn'
    (a fresh interpreter per worker)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(preload)
        forkserver.ensure_running()
        return ctx
    return multiprocessing.get_context("spawn")
