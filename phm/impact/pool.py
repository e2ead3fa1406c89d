"""Matching's index months in worker processes.

Each index month is matched on its own (:func:`phm.impact.matching.match_month`: pure numpy
over the :class:`~phm.impact.matching.Panel`), so on a machine with more than one core the
months can be shared among worker processes. The panel's arrays are written once to
``.npy`` files in a temporary folder and each worker maps them read-only (the pages are
shared, not copied); workers come from :func:`phm.workers.worker_context`, never a fork of
this process, which holds live DuckDB connections. The months' results are gathered in
month order, so that the sums built from them are added in the same order as in one
process and the tables are the same to the bit.
"""

from __future__ import annotations

import dataclasses
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

from phm.impact.matching import MonthMatch, Panel, match_month
from phm.workers import n_workers, worker_context

#: below this many person-months (people in the panel x index months) the months are
#: matched in this process by default: starting workers would cost more than it saves
MIN_POOL_PERSON_MONTHS = 10_000_000


#: the panel's numpy arrays (every field but ``people``)
_ARRAYS = [f.name for f in dataclasses.fields(Panel) if f.name != "people"]


def match_months(
    panel: Panel, months: list, k: int = 1, workers: int | None = None
) -> list[MonthMatch | None]:
    """:func:`match_month` of each of ``months``, in that order; ``workers`` > 1: in that many
    worker processes (default: :func:`phm.workers.worker_count`, ``PHM_WORKERS``, for a panel
    of at least :data:`MIN_POOL_PERSON_MONTHS`, else 1)."""
    worth_it = panel.people.height * len(months) >= MIN_POOL_PERSON_MONTHS
    n = n_workers(workers, len(months), worth_it)
    if n <= 1:
        return [match_month(panel, m0, k) for m0 in months]
    ctx = worker_context()
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


#: the panel in a worker process (mapped by :func:`_init_worker`)
_WORKER_PANEL: list[Panel] = []


def _init_worker(folder: str) -> None:
    arrays = {
        name: np.asarray(np.load(Path(folder) / f"{name}.npy", mmap_mode="r")) for name in _ARRAYS
    }
    _WORKER_PANEL[:] = [Panel(people=pl.DataFrame(), **arrays)]


def _worker_match(index_month, k: int) -> MonthMatch | None:
    return match_month(_WORKER_PANEL[0], index_month, k)
