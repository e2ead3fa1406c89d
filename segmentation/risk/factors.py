"""Contributing factors: per patient, the factor groups that raise the predicted risk the most
(each switched to its reference value), in the plain words of the feature catalogue."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from phm.measures import load_ltc_conditions
from segmentation.features import (
    factor_text,
    feature_catalogue,
)
from segmentation.risk.model import RiskModel

#: a factor is reported only if switching it to its reference lowers the risk by at least this
FACTOR_MIN_DELTA = 0.001
NO_FACTOR_TEXT = "no single factor stands out"


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
) -> tuple[np.ndarray, np.ndarray]:
    """(rows where the group differs from its reference, those rows switched to reference)."""
    idx = {n: i for i, n in enumerate(model.feature_names)}
    ref = model.reference_values
    if group.startswith("ltc_"):
        col = idx[group]
        rows = np.flatnonzero(X[:, col] > 0)
        Xm = X[rows].copy()
        Xm[:, col] = 0
        mental = _condition_types().get(group.removeprefix("ltc_")) == "mental"
        ctype = "ltc_mental_count" if mental else "ltc_physical_count"
        for c in ("ltc_count", ctype):
            if c in idx:
                Xm[:, idx[c]] = np.maximum(Xm[:, idx[c]] - 1, 0)
        return rows, Xm
    if group == "multimorbidity":
        cols = [idx[n] for n in model.feature_names if n.startswith("ltc_")]
        rows = (
            np.flatnonzero(X[:, idx["ltc_count"]] >= 2) if "ltc_count" in idx else np.array([], int)
        )
        Xm = X[rows].copy()
        Xm[:, cols] = 0
        return rows, Xm
    if group == "age":
        col = idx["age"]
        rows = np.flatnonzero(X[:, col] > ref["age"])
        Xm = X[rows].copy()
        Xm[:, col] = ref["age"]
        return rows, Xm
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
    Xm = X[rows].copy()
    Xm[:, cols] = refs
    return rows, Xm


def contributions(model: RiskModel, X: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per patient and factor group, the drop in predicted risk when the group is switched to
    its reference value (0 where it already is). Returns (groups, deltas n x G, risk)."""
    p = model.predict(X)
    groups = _factor_groups(model)
    names = list(groups)
    delta = np.zeros((X.shape[0], len(names)), dtype=np.float64)
    for j, g in enumerate(names):
        rows, Xm = _switch(model, g, groups[g], X)
        if len(rows):
            delta[rows, j] = p[rows] - model.predict(Xm)
    return names, delta, p


def risk_factor_text(
    model: RiskModel, X: np.ndarray, groups: list[str], delta: np.ndarray, top: int = 3
) -> list[str]:
    """Plain words for the ``top`` groups that raise each patient's risk the most."""
    names = model.feature_names
    order = np.argsort(-delta, axis=1, kind="stable")[:, :top]
    out = []
    for i in range(X.shape[0]):
        parts = []
        row = None
        for j in order[i]:
            if delta[i, j] < FACTOR_MIN_DELTA:
                break
            if row is None:
                row = dict(zip(names, X[i].tolist(), strict=True))
            parts.append(factor_text(groups[j], row))
        out.append("; ".join(parts) if parts else NO_FACTOR_TEXT)
    return out
