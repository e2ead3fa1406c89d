"""The risk model: cohorts and outcomes, the candidate estimators and :class:`RiskModel`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

from phm.hospital import spells_relation
from phm.measures._sql import date_literal
from segmentation.features import (
    build_features,
    feature_catalogue,
)

OUTCOME = "emergency_admission_12m"
HORIZON_DAYS = 365
TRAINING_OFFSET_DAYS = 730
VALIDATION_OFFSET_DAYS = 365
SELECTION_CRITERION = "brier"

CANDIDATES = ("logistic", "gradient_boosting")

#: default size of the stratified training sample (rows); see :func:`training_sample_size`
DEFAULT_TRAINING_SAMPLE = 200_000
#: the strata of the training sample: outcome x ten-year age band (90+ together) x sex
AGE_BAND_YEARS = 10


class FeatureSetMismatch(ValueError):
    """The model was trained on a different feature set than the current definitions give."""


class FeatureNotCovered(ValueError):
    """The delivery's history does not cover a feature the model needs at the scoring date."""


# --------------------------------------------------------------------------------------
# Cohorts and outcomes
# --------------------------------------------------------------------------------------


def outcomes(
    con: duckdb.DuckDBPyConnection, index_date: dt.date, horizon_days: int = HORIZON_DAYS
) -> pl.DataFrame:
    """``person_id`` of everyone with >= 1 emergency admission in (index, index + horizon].

    An emergency admission is the project's one definition (:mod:`phm.hospital`: admission
    method 21-25, 2A-2D or 28; a ``2B`` transfer that continues a stay is not a new one)."""
    lo = date_literal(index_date)
    hi = date_literal(index_date + dt.timedelta(days=horizon_days))
    return con.execute(
        f"""
        SELECT DISTINCT i.person_id
        FROM {spells_relation(con)} a JOIN marts.person_identity i USING (nhs_number)
        WHERE a.emergency_admission
          AND a.admission_date > {lo} AND a.admission_date <= {hi}
        ORDER BY 1
        """
    ).pl()


def labelled_cohort(con: duckdb.DuckDBPyConnection, index_date: dt.date) -> pl.DataFrame:
    """Features as of ``index_date`` plus the outcome column (Boolean) in the next 365 days."""
    feats = build_features(con, index_date)
    events = outcomes(con, index_date).with_columns(pl.lit(True).alias(OUTCOME))
    return feats.join(events, on="person_id", how="left").with_columns(
        pl.col(OUTCOME).fill_null(False)
    )


def training_sample_size() -> int | None:
    """``PHM_RISK_TRAINING_SAMPLE``: the number of training-cohort rows the candidates are fitted
    on (a whole number >= 1000; default :data:`DEFAULT_TRAINING_SAMPLE`), or ``all`` for the
    whole cohort (returns None). A cohort no larger than the setting is used whole."""
    raw = os.environ.get("PHM_RISK_TRAINING_SAMPLE", "").strip().replace("_", "")
    if not raw:
        return DEFAULT_TRAINING_SAMPLE
    if raw.lower() == "all":
        return None
    if not raw.isdigit() or int(raw) < 1000:
        raise ValueError(
            "PHM_RISK_TRAINING_SAMPLE must be a whole number of rows >= 1000 (or 'all' for the "
            f"whole training cohort), not {raw!r}"
        )
    return int(raw)


def _largest_remainder(quota: str, parent: str) -> pl.Expr:
    """Hamilton (largest remainder) apportionment of ``quota`` (a column: the rows to take from
    each ``parent`` group) over that group's rows in proportion to their ``n``: the floor of each
    exact share, plus one for the rows with the largest remainders (ties by ``_stratum``).
    Integer arithmetic throughout, so it is exact and deterministic."""
    share = pl.col(quota) * pl.col("n")
    total = pl.col("n").sum().over(parent)
    floor = share // total
    leftover = pl.col(quota).first().over(parent) - floor.sum().over(parent)
    order = pl.struct((-(share % total)).alias("r"), pl.col("_stratum"))
    return floor + (order.rank("ordinal").over(parent) <= leftover).cast(pl.Int64)


def stratified_sample(df: pl.DataFrame, size: int | None, random_state: int) -> pl.DataFrame:
    """A seeded sample of ``size`` rows of the labelled cohort ``df``, stratified by outcome,
    ten-year age band and sex, in ``df``'s row order.

    The outcome's events are apportioned first (largest remainder), so the sample's event count
    is ``size * events / rows`` rounded: the prevalence is kept to the row and the candidates'
    calibration is unaffected. Within each outcome, the rows are apportioned over age band x sex
    the same way, and each stratum takes its rows with the smallest seeded uniform keys
    (assigned in ``person_id`` order, so the sample depends on the patients and the seed, not on
    the frame's row order). A cohort of no more than ``size`` rows (or ``size`` None) is
    returned whole, unchanged.
    """
    if size is None or df.height <= size:
        return df
    age = pl.col("age").fill_null(-1) if "age" in df.columns else pl.lit(-1)
    male = pl.col("is_male").cast(pl.Int8).fill_null(-1) if "is_male" in df.columns else pl.lit(-1)
    keyed = df.select(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("_row"),
        "person_id",
        pl.col(OUTCOME).cast(pl.Int8).alias("_y"),
        (age // AGE_BAND_YEARS).clip(-1, 90 // AGE_BAND_YEARS).cast(pl.Int32).alias("_band"),
        male.cast(pl.Int32).alias("_male"),
    ).sort("person_id")
    rng = np.random.default_rng(random_state)
    keyed = keyed.with_columns(pl.Series("_key", rng.random(keyed.height)))
    strata = (
        keyed.group_by("_y", "_band", "_male")
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .sort("_y", "_band", "_male")
        .with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("_stratum"))
    )
    by_outcome = (
        strata.group_by("_y")
        .agg(pl.col("n").sum(), pl.col("_stratum").min())
        .sort("_y")
        .with_columns(pl.lit(0).alias("_all"), pl.lit(size, dtype=pl.Int64).alias("_size"))
        .with_columns(_largest_remainder("_size", "_all").alias("_y_quota"))
    )
    strata = strata.join(by_outcome.select("_y", "_y_quota"), on="_y").with_columns(
        _largest_remainder("_y_quota", "_y").alias("_quota")
    )
    chosen = (
        keyed.join(strata.select("_y", "_band", "_male", "_quota"), on=["_y", "_band", "_male"])
        .filter(pl.col("_key").rank("ordinal").over("_y", "_band", "_male") <= pl.col("_quota"))
        .get_column("_row")
        .sort()
    )
    return df[chosen]


def to_matrix(df: pl.DataFrame, names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise FeatureSetMismatch(f"feature frame lacks column(s): {', '.join(missing)}")
    return df.select(pl.col(n).cast(pl.Float64) for n in names).to_numpy().astype(np.float64)


# --------------------------------------------------------------------------------------
# The model object
# --------------------------------------------------------------------------------------


@dataclass
class RiskModel:
    """A fitted, calibrated model and everything needed to check and explain its scores."""

    name: str  # "logistic" | "gradient_boosting"
    estimator: Any
    feature_names: list[str]
    #: hash and names of the candidate feature definitions at training time
    feature_set_hash: str
    candidate_features: list[str]
    excluded_features: dict[str, str]
    model_version: str
    sklearn_version: str
    training_data_hash: str
    extract_date: dt.date
    training_index_date: dt.date
    validation_index_date: dt.date
    random_state: int
    calibration_method: str
    #: per feature, the value a factor is switched to when measuring its contribution
    reference_values: dict[str, float]
    validation_metrics: dict[str, float] = field(default_factory=dict)
    #: rows the model was fitted on (the stratified training sample) and the whole training
    #: cohort's rows (equal when the cohort is no larger than ``PHM_RISK_TRAINING_SAMPLE``);
    #: None in models saved before the sample existed
    training_rows: int | None = None
    training_cohort_rows: int | None = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Probability of >= 1 emergency admission in 12 months (columns = feature_names)."""
        if X.shape[1] != len(self.feature_names):
            raise FeatureSetMismatch(
                f"model {self.model_version} expects {len(self.feature_names)} features, "
                f"got {X.shape[1]}"
            )
        return self.estimator.predict_proba(X)[:, 1]

    def predict_frame(self, features: pl.DataFrame) -> np.ndarray:
        return self.predict(to_matrix(features, self.feature_names))

    def summary(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "model": self.name,
            "features": len(self.feature_names),
            "feature_set_hash": self.feature_set_hash,
            "training_data_hash": self.training_data_hash,
            "sklearn_version": self.sklearn_version,
            "extract_date": self.extract_date.isoformat(),
            "training_index_date": self.training_index_date.isoformat(),
            "validation_index_date": self.validation_index_date.isoformat(),
            "calibration": self.calibration_method,
            "random_state": self.random_state,
            "training_rows": self.training_rows,
            "training_cohort_rows": self.training_cohort_rows,
        }


# --------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------


def _logistic(names: list[str], random_state: int) -> Pipeline:
    kinds = {f.name: f.kind for f in feature_catalogue()}
    idx = {n: i for i, n in enumerate(names)}
    age = [idx["age"]] if "age" in idx else []
    logged = [idx[n] for n in names if kinds[n] == "count" or n == "hfrs_score"]
    other = [i for n, i in idx.items() if i not in age and i not in logged]
    transformers = []
    if age:
        transformers.append(
            (
                "age_spline",
                make_pipeline(
                    SplineTransformer(n_knots=6, degree=3, knots="quantile"), StandardScaler()
                ),
                age,
            )
        )
    if logged:
        transformers.append(
            (
                "log_counts",
                make_pipeline(FunctionTransformer(np.log1p), StandardScaler()),
                logged,
            )
        )
    if other:
        transformers.append(("scaled", StandardScaler(), other))
    return Pipeline(
        [
            ("features", ColumnTransformer(transformers)),
            ("lr", LogisticRegression(C=1.0, max_iter=5000, random_state=random_state)),
        ]
    )


def _gradient_boosting(random_state: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=500,
        max_leaf_nodes=15,
        min_samples_leaf=50,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.15,
        n_iter_no_change=30,
        scoring="loss",
        random_state=random_state,
    )


def _calibrated(estimator, method: str, random_state: int) -> CalibratedClassifierCV:
    return CalibratedClassifierCV(
        estimator,
        method=method,
        cv=StratifiedKFold(n_splits=5, shuffle=True, random_state=random_state),
        ensemble=True,
    )


def fit_candidate(name: str, names: list[str], X, y, method: str, random_state: int):
    base = (
        _logistic(names, random_state) if name == "logistic" else _gradient_boosting(random_state)
    )
    model = _calibrated(base, method, random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        model.fit(X, y)
    return model


def training_data_hash(X: np.ndarray, y: np.ndarray, names: list[str], ids: list[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(names).encode())
    h.update("\n".join(ids).encode())
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int8).tobytes())
    return h.hexdigest()


def factor_reference_values(train: pl.DataFrame, names: list[str]) -> dict[str, float]:
    ref = {}
    for f in feature_catalogue():
        if f.name not in names:
            continue
        if f.name == "age":
            ref[f.name] = float(train["age"].median())
        elif f.name == "imd_decile":
            ref[f.name] = 5.5  # the middle of England's deciles
        elif f.name == "gp_days_since_attendance":
            ref[f.name] = 366.0  # no attended appointment in 12 months
        else:
            ref[f.name] = 0.0
    return ref
