"""Scoring the current population: risk, Kaiser-style tiers and contributing factors."""

from __future__ import annotations

import datetime as dt
import math

import duckdb
import numpy as np
import polars as pl

from phm.warehouse import write_table
from segmentation.features import (
    build_features,
    feature_coverage,
)
from segmentation.risk.factors import contributions, risk_factor_text
from segmentation.risk.model import FeatureNotCovered, RiskModel, to_matrix
from segmentation.risk.persistence import check_model_features

#: Kaiser-style pyramid by rank: (tier, cumulative share of the population from the top)
TIERS: tuple[tuple[str, float], ...] = (
    ("very high", 0.005),
    ("high", 0.05),
    ("rising", 0.20),
    ("low", 1.0),
)
TIER_DESCRIPTIONS = {
    "very high": "top 0.5% of predicted risk: case management (Kaiser level 3)",
    "high": "next 4.5% (0.5-5%): proactive multidisciplinary care / disease management "
    "(Kaiser level 2)",
    "rising": "next 15% (5-20%): rising risk, anticipatory and preventive care",
    "low": "remaining 80%: supported self-care and prevention (Kaiser level 1)",
}


def assign_tiers(scores: np.ndarray, person_ids: list[str] | np.ndarray) -> np.ndarray:
    """Tier names by rank of ``scores`` (highest first; ties broken by ``person_id``).

    With n patients, the first ``round(n * 0.005)`` are "very high", up to ``round(n * 0.05)``
    "high", up to ``round(n * 0.20)`` "rising", the rest "low" (round half up).
    """
    scores = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(person_ids, dtype=object)
    n = len(scores)
    order = np.lexsort((ids.astype(str), -scores))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    out = np.empty(n, dtype=object)
    lo = 0
    for name, share in TIERS:
        hi = n if share >= 1 else math.floor(n * share + 0.5)
        out[(rank >= lo) & (rank < hi)] = name
        lo = hi
    return out


def score(con: duckdb.DuckDBPyConnection, model: RiskModel, extract_date: dt.date) -> pl.DataFrame:
    """Score every currently registered patient.

    Returns ``person_id, risk_score, risk_tier, risk_factors`` (sorted by ``person_id``);
    :func:`write_scores` stores it as ``marts.risk_scores``. Refuses a model trained on a
    different feature set, and a delivery whose history does not cover the model's features.
    """
    if not isinstance(model, RiskModel):
        raise TypeError(f"expected a RiskModel, got {type(model).__name__}")
    check_model_features(model)
    covered, excluded = feature_coverage(con, [extract_date])
    lacking = [n for n in model.feature_names if n not in covered]
    if lacking:
        raise FeatureNotCovered(
            "the delivery cannot supply feature(s) the model uses at "
            f"{extract_date}: " + "; ".join(f"{n}: {excluded[n]}" for n in lacking)
        )
    feats = build_features(con, extract_date)
    X = to_matrix(feats, model.feature_names)
    groups, delta, p = contributions(model, X)
    ids = feats["person_id"].to_list()
    return pl.DataFrame(
        {
            "person_id": ids,
            "risk_score": p,
            "risk_tier": assign_tiers(p, ids).tolist(),
            "risk_factors": risk_factor_text(model, X, groups, delta),
        },
        schema={
            "person_id": pl.String,
            "risk_score": pl.Float64,
            "risk_tier": pl.String,
            "risk_factors": pl.String,
        },
    )


def write_scores(con: duckdb.DuckDBPyConnection, scores: pl.DataFrame) -> int:
    """Store :func:`score`'s frame as ``marts.risk_scores``; returns its row count."""
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    return write_table(
        con,
        "marts.risk_scores",
        scores.select("person_id", "risk_score", "risk_tier", "risk_factors").sort("person_id"),
    )
