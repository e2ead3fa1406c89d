"""Contributing factors: per patient, the factor groups that raise the predicted risk the most
(each switched to its reference value), in the plain words of the feature catalogue."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import polars as pl

from phm.measures import load_ltc_conditions
from segmentation.features import (
    factor_text,
    feature_catalogue,
)
from segmentation.risk.model import RiskModel

#: a factor is reported only if switching it to its reference lowers the risk by at least this
FACTOR_MIN_DELTA = 0.001
NO_FACTOR_TEXT = "no single factor stands out"
#: patients per prediction call in :func:`contributions` (memory of the estimator's copies)
PREDICT_BLOCK = 65_536


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


def contributions(model: RiskModel, X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per patient and factor group, the drop in predicted risk when the group is switched to
    its reference value (0 where it already is). Returns (groups, deltas n x G, risk).

    The risk is one prediction over every patient; then one prediction per group over the
    patients whose group differs from its reference, in blocks of :data:`PREDICT_BLOCK`
    patients (only one block's switched copy is held)."""
    p = model.predict(X)
    groups = _factor_groups(model)
    names = list(groups)
    delta = np.zeros((X.shape[0], len(names)), dtype=np.float64)
    for j, g in enumerate(names):
        rows, switch = _switch(model, g, groups[g], X)
        for i in range(0, len(rows), PREDICT_BLOCK):
            block = rows[i : i + PREDICT_BLOCK]
            Xm = X[block]
            switch(Xm)
            delta[block, j] = p[block] - model.predict(Xm)
    return names, delta, p


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
