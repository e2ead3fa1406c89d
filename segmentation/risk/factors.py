"""Contributing factors: per patient, the factor groups that raise the predicted risk the most
(each switched to its reference value), in the plain words of the feature catalogue."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
from threadpoolctl import threadpool_info, threadpool_limits

from phm.measures import load_ltc_conditions
from phm.workers import worker_context
from segmentation.features import (
    factor_text,
    feature_catalogue,
)
from segmentation.risk.lean import lean_predictor
from segmentation.risk.model import RiskModel

#: a factor is reported only if switching it to its reference lowers the risk by at least this
FACTOR_MIN_DELTA = 0.001
NO_FACTOR_TEXT = "no single factor stands out"
#: patients per prediction call in :func:`contributions` (memory of the estimator's copies)
PREDICT_BLOCK = 65_536
#: from this many patients, :func:`contributions` predicts in worker processes by default
POOL_MIN_ROWS = 200_000


@lru_cache(maxsize=1)
def _condition_types() -> dict[str, str]:
    return {c.id: c.type for c in load_ltc_conditions()}


def _factor_groups(model: RiskModel) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for f in feature_catalogue():
        if f.name in model.feature_names:
            groups.setdefault(f.group, []).append(f.name)
    return groups


def _switch(
    model: RiskModel, group: str, members: list[str], X: np.ndarray
) -> tuple[np.ndarray, Callable[[np.ndarray], None]]:
    """(rows where the group differs from its reference, a function switching a copy of
    those rows to the reference in place)."""
    idx = {n: i for i, n in enumerate(model.feature_names)}
    ref = model.reference_values
    if group.startswith("ltc_"):
        col = idx[group]
        mental = _condition_types().get(group.removeprefix("ltc_")) == "mental"
        ctype = "ltc_mental_count" if mental else "ltc_physical_count"
        counts = [idx[c] for c in ("ltc_count", ctype) if c in idx]

        def drop_condition(Xm: np.ndarray) -> None:
            Xm[:, col] = 0
            for c in counts:
                Xm[:, c] = np.maximum(Xm[:, c] - 1, 0)

        return np.flatnonzero(X[:, col] > 0), drop_condition
    if group == "multimorbidity":
        cols = [idx[n] for n in model.feature_names if n.startswith("ltc_")]
        rows = (
            np.flatnonzero(X[:, idx["ltc_count"]] >= 2) if "ltc_count" in idx else np.array([], int)
        )

        def no_conditions(Xm: np.ndarray) -> None:
            Xm[:, cols] = 0

        return rows, no_conditions
    if group == "age":
        col = idx["age"]

        def reference_age(Xm: np.ndarray) -> None:
            Xm[:, col] = ref["age"]

        return np.flatnonzero(X[:, col] > ref["age"]), reference_age
    cols = [idx[m] for m in members]
    refs = np.array([ref[m] for m in members])
    if group == "imd" and "imd_decile" in idx:
        # only deprivation worse than the middle (or an unknown area) is offered as a factor
        worse = X[:, idx["imd_decile"]] < ref["imd_decile"]
        if "imd_unknown" in idx:
            worse |= X[:, idx["imd_unknown"]] > 0
        rows = np.flatnonzero(worse)
    else:
        rows = np.flatnonzero((X[:, cols] != refs).any(axis=1))

    def to_reference(Xm: np.ndarray) -> None:
        Xm[:, cols] = refs

    return rows, to_reference


def score_workers(n_rows: int) -> int:
    """Worker processes for :func:`contributions`: 1 (predict in this process) unless
    ``PHM_WORKERS`` is set (:func:`phm.workers.n_workers`) and there are at least
    :data:`POOL_MIN_ROWS` patients. Off by default: at 1,000,000 patients on two idle cores
    two workers took 78.6 s against 74.8 s in one process (2026-12-02), the prediction
    already using both cores through the maths library's threads."""
    from phm.workers import ENV, n_workers

    if n_rows < POOL_MIN_ROWS or not os.environ.get(ENV, "").strip():
        return 1
    return n_workers(None, n_rows)


def _blocks(model: RiskModel, groups: dict[str, list[str]], X: np.ndarray) -> Iterator[tuple]:
    """(group index, group, its switch, patients of one block): per group, the patients whose
    group differs from its reference, in blocks of :data:`PREDICT_BLOCK`."""
    for j, g in enumerate(groups):
        rows, switch = _switch(model, g, groups[g], X)
        for i in range(0, len(rows), PREDICT_BLOCK):
            yield j, g, switch, rows[i : i + PREDICT_BLOCK]


def _predict_switched(
    predict: Callable[[np.ndarray], np.ndarray],
    switch: Callable[[np.ndarray], None],
    X: np.ndarray,
    block: np.ndarray,
) -> np.ndarray:
    Xm = X[block]
    switch(Xm)
    return predict(Xm)


def _predictor(model: RiskModel) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`segmentation.risk.lean.lean_predictor` where it applies, else ``model.predict``
    (the same numbers either way)."""
    return lean_predictor(model) or model.predict


def contributions(
    model: RiskModel, X: np.ndarray, *, workers: int | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per patient and factor group, the drop in predicted risk when the group is switched to
    its reference value (0 where it already is). Returns (groups, deltas n x G, risk).

    The risk is one prediction over every patient; then one prediction per group over the
    patients whose group differs from its reference, in blocks of :data:`PREDICT_BLOCK`
    patients (only one block's switched copy is held). Predictions of the calibrated logistic
    model go through :func:`segmentation.risk.lean.lean_predictor` (bit-for-bit
    ``model.predict``, with less copying).

    ``workers`` > 1 (default :func:`score_workers`) makes the same prediction calls, on the
    same matrices, in that many worker processes (:func:`phm.workers.worker_context`: never
    a fork of this process, which holds DuckDB connections), each with this process's BLAS
    thread count; they read
    ``X`` from a memory-mapped copy and return each call's risks, which are gathered here in
    a fixed order, so the result is bit-for-bit that of ``workers=1``."""
    groups = _factor_groups(model)
    names = list(groups)
    delta = np.zeros((X.shape[0], len(names)), dtype=np.float64)
    n = score_workers(X.shape[0]) if workers is None else workers
    if n < 1:
        raise ValueError(f"workers must be at least 1, not {n}")
    if n == 1:
        predict = _predictor(model)
        p = predict(X)
        for j, _, switch, block in _blocks(model, groups, X):
            delta[block, j] = p[block] - _predict_switched(predict, switch, X, block)
        return names, delta, p
    with tempfile.TemporaryDirectory(prefix="phm-score-") as tmp:
        path = Path(tmp) / "X.npy"
        np.save(path, X)  # keeps X's memory layout (the estimator sees the same matrix)
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        with ProcessPoolExecutor(
            max_workers=n,
            mp_context=worker_context(),
            initializer=_init_worker,
            initargs=(model, str(path), max(blas) if blas else None),
        ) as pool:
            # the one prediction over everyone first: the longest call
            whole = pool.submit(_worker_predict, None, None)
            tasks = [
                (j, block, pool.submit(_worker_predict, g, block))
                for j, g, _, block in _blocks(model, groups, X)
            ]
            p = whole.result()
            for j, block, future in tasks:  # in group and block order, as in one process
                delta[block, j] = p[block] - future.result()
    return names, delta, p


#: in a worker process: the model, the memory-mapped feature matrix and switches by group
_WORKER: dict = {}


def _init_worker(model: RiskModel, x_path: str, blas_threads: int | None) -> None:
    if blas_threads is not None:  # the parent's BLAS threads: the same arithmetic per call
        threadpool_limits(limits=blas_threads, user_api="blas")
    _WORKER.clear()
    _WORKER.update(
        model=model,
        predict=_predictor(model),
        X=np.load(x_path, mmap_mode="r"),
        groups=_factor_groups(model),
        switches={},
    )


def _worker_predict(group: str | None, block: np.ndarray | None) -> np.ndarray:
    """The risk of every patient (``group`` None), or of ``block``'s patients with ``group``
    switched to its reference."""
    model, predict, X = _WORKER["model"], _WORKER["predict"], _WORKER["X"]
    if group is None:
        return predict(X)
    switches = _WORKER["switches"]
    if group not in switches:
        switches[group] = _switch(model, group, _WORKER["groups"][group], X[:0])[1]
    return _predict_switched(predict, switches[group], X, block)


class _ReadKeys(dict):
    """A row that remembers which features :func:`factor_text` read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def _text_columns(group: str, members: list[str], names: list[str], probe: np.ndarray) -> list[int]:
    """Columns the words of ``group`` depend on: its members and whatever :func:`factor_text`
    reads for a probe row."""
    row = _ReadKeys(zip(names, probe.tolist(), strict=True))
    factor_text(group, row)
    wanted = set(members) | row.read
    return [i for i, n in enumerate(names) if n in wanted]


def risk_factor_text(
    model: RiskModel, X: np.ndarray, groups: list[str], delta: np.ndarray, top: int = 3
) -> list[str]:
    """Plain words for the ``top`` groups that raise each patient's risk the most (those that
    lower it by at least :data:`FACTOR_MIN_DELTA` when switched to their reference).

    Vectorised: per group, :func:`segmentation.features.factor_text` is called once per
    distinct value of the columns its words depend on, not once per patient."""
    names = model.feature_names
    members = _factor_groups(model)
    n = X.shape[0]
    order = np.argsort(-delta, axis=1, kind="stable")[:, :top]
    # sorted descending, so the groups at or above the threshold are a prefix of each row
    picked = np.take_along_axis(delta, order, axis=1) >= FACTOR_MIN_DELTA
    slots = order.shape[1]
    texts = np.full((n, slots), None, dtype=object)
    for j, g in enumerate(groups):
        rows, where = np.nonzero((order == j) & picked)
        if not len(rows):
            continue
        cols = _text_columns(g, members.get(g, []), names, X[rows[0]])
        col_names = [names[c] for c in cols]
        values, inverse = np.unique(X[np.ix_(rows, cols)], axis=0, return_inverse=True)
        words = np.array(
            [factor_text(g, dict(zip(col_names, v.tolist(), strict=True))) for v in values],
            dtype=object,
        )
        texts[rows, where] = words[np.asarray(inverse).reshape(-1)]
    frame = pl.DataFrame(
        {f"t{k}": pl.Series(texts[:, k].tolist(), dtype=pl.String) for k in range(slots)}
    )
    joined = frame.select(
        pl.when(pl.any_horizontal(pl.all().is_not_null()))
        .then(pl.concat_str(pl.all(), separator="; ", ignore_nulls=True))
        .otherwise(pl.lit(NO_FACTOR_TEXT))
        .alias("text")
    )
    return joined["text"].to_list()
