"""Matching's index months in worker processes.

Each index month is matched on its own (:func:`phm.impact.matching.match_month`: pure numpy
over the :class:`~phm.impact.matching.Panel`), so on a machine with more than one core the
months can be shared among worker processes. The panel's arrays are written once to
``.npy`` files in a temporary folder and each worker maps them read-only (the pages are
shared, not copied); workers come from a ``forkserver`` (else ``spawn``) context, never a
fork of this process, which holds live DuckDB connections (as in :mod:`geo.maps`). The
months' results are gathered in month order, so that the sums built from them are added in
the same order as in one process and the tables are the same to the bit.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import forkserver
from pathlib import Path

import numpy as np
import polars as pl

from phm.impact.matching import MonthMatch, Panel, match_month

#: below this many person-months (people in the panel x index months) the months are
#: matched in this process by default: starting workers would cost more than it saves
MIN_POOL_PERSON_MONTHS = 10_000_000


def impact_workers() -> int:
    """Worker processes for matching: ``PHM_IMPACT_WORKERS`` if set (1 = in this process),
    else ``min(cpu_count, 2)``."""
    raw = os.environ.get("PHM_IMPACT_WORKERS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"PHM_IMPACT_WORKERS must be a whole number, not {raw!r}") from None
        if n < 1:
            raise ValueError(f"PHM_IMPACT_WORKERS must be at least 1, not {n}")
        return n
    return max(1, min(os.cpu_count() or 1, 2))


def _n_workers(workers: int | None, panel: Panel, n_months: int) -> int:
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    default = workers is None and not os.environ.get("PHM_IMPACT_WORKERS", "").strip()
    if default and panel.people.height * n_months < MIN_POOL_PERSON_MONTHS:
        return 1
    return max(1, min(impact_workers() if workers is None else workers, n_months))


#: the panel's numpy arrays (every field but ``people``)
_ARRAYS = [f.name for f in dataclasses.fields(Panel) if f.name != "people"]


def match_months(
    panel: Panel, months: list, k: int = 1, workers: int | None = None
) -> list[MonthMatch | None]:
    """:func:`match_month` of each of ``months``, in that order; ``workers`` > 1: in that many
    worker processes (default: :func:`impact_workers` for a large panel, else 1)."""
    n = _n_workers(workers, panel, len(months))
    if n <= 1:
        return [match_month(panel, m0, k) for m0 in months]
    ctx = _worker_context()
    with tempfile.TemporaryDirectory(prefix="phm-impact-") as tmp:
        for name in _ARRAYS:
            np.save(Path(tmp) / f"{name}.npy", getattr(panel, name))
        with ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=_init_worker, initargs=(tmp,)
        ) as pool:
            # the later months have the larger pools: started first, so that the workers
            # finish together
            futures = {m0: pool.submit(_worker_match, m0, k) for m0 in reversed(months)}
            try:
                return [futures[m0].result() for m0 in months]
            except BaseException:
                for f in futures.values():
                    f.cancel()
                raise


def _worker_context():
    """Never a fork of this process (its DuckDB threads are live): 'forkserver' where there is
    one, else 'spawn'."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        # the server is this process's one (geo.maps uses it too): whichever starts it
        # chooses what it imports first; the workers import the rest themselves
        ctx.set_forkserver_preload(["phm.impact.matching"])
        forkserver.ensure_running()
        return ctx
    return multiprocessing.get_context("spawn")


#: the panel in a worker process (mapped by :func:`_init_worker`)
_WORKER_PANEL: list[Panel] = []


def _init_worker(folder: str) -> None:
    arrays = {
        name: np.asarray(np.load(Path(folder) / f"{name}.npy", mmap_mode="r")) for name in _ARRAYS
    }
    _WORKER_PANEL[:] = [Panel(people=pl.DataFrame(), **arrays)]


def _worker_match(index_month, k: int) -> MonthMatch | None:
    return match_month(_WORKER_PANEL[0], index_month, k)
