"""Emergency admission risk in the next 12 months: training, evaluation, scoring, tiers, factors.

Design (temporal hold-out, no patient-time leakage):

* **training**: features as of ``extract_date - 730`` days (:func:`segmentation.features.
  build_features`), outcome = at least one emergency admission (``admission_method`` 21-28)
  with ``admission_date`` in the 365 days *after* that index date (index + 1 .. index + 365);
* **validation**: features as of ``extract_date - 365``, outcome in the 365 days ending on the
  extract date (index + 1 .. extract date);
* **scoring**: features as of the extract date, through the same function.

Two candidates, each calibrated with ``CalibratedClassifierCV`` (5-fold, stratified, seeded)
on the training period only: a regularised (L2) logistic regression on standardised features
(counts log-transformed, age as a cubic spline) and a ``HistGradientBoostingClassifier``. The
deployed model is the candidate with the lower **Brier score on the validation period**
(a proper score that rewards both discrimination and calibration); the choice and both scores
are recorded in the report. An age-only logistic model is fitted as a floor, and, given the
generator's truth, the true probabilities on the validation cohort as the ceiling.

Everything is deterministic for a given ``random_state``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import joblib
import numpy as np
import polars as pl
import sklearn
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, SplineTransformer, StandardScaler

from phm.contract import EMERGENCY_ADMISSION_METHODS
from phm.measures import load_efi_definition, load_ltc_conditions
from phm.measures._sql import date_literal
from segmentation.features import (
    build_features,
    condition_label,
    feature_catalogue,
    feature_coverage,
    feature_names,
    feature_set_hash,
)

OUTCOME = "emergency_admission_12m"
HORIZON_DAYS = 365
TRAINING_OFFSET_DAYS = 730
VALIDATION_OFFSET_DAYS = 365
SELECTION_CRITERION = "brier"
MODEL_FILE_FORMAT = "phm-emergency-risk-model"
MODEL_FILE_VERSION = 1

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

#: a factor is reported only if switching it to its reference lowers the risk by at least this
FACTOR_MIN_DELTA = 0.001
NO_FACTOR_TEXT = "no single factor stands out"

CANDIDATES = ("logistic", "gradient_boosting")


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
    """``person_id`` of everyone with >= 1 emergency admission in (index, index + horizon]."""
    methods = ", ".join(f"'{m}'" for m in EMERGENCY_ADMISSION_METHODS)
    lo = date_literal(index_date)
    hi = date_literal(index_date + dt.timedelta(days=horizon_days))
    return con.execute(
        f"""
        SELECT DISTINCT i.person_id
        FROM staging.sus_apc a JOIN marts.person_identity i USING (nhs_number)
        WHERE a.admission_method IN ({methods})
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


def to_matrix(df: pl.DataFrame, names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise FeatureSetMismatch(f"feature frame lacks column(s): {', '.join(missing)}")
    return df.select(pl.col(n).cast(pl.Float64) for n in names).to_numpy().astype(np.float64)


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUROC, average precision, Brier score, log loss and sizes of one set of predictions."""
    y = np.asarray(y, dtype=np.int8)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return {
        "n": len(y),
        "events": int(y.sum()),
        "observed_rate": float(y.mean()),
        "mean_predicted": float(p.mean()),
        "auroc": float(roc_auc_score(y, p)),
        "average_precision": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def calibration_by_decile(y: np.ndarray, p: np.ndarray) -> pl.DataFrame:
    """Predicted vs observed by decile of predicted risk (1 = lowest; ties by input order)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    decile = np.empty(len(p), dtype=np.int32)
    decile[order] = np.arange(len(p)) * 10 // max(len(p), 1) + 1
    return (
        pl.DataFrame({"decile": decile, "y": y, "p": p})
        .group_by("decile")
        .agg(
            pl.len().alias("n"),
            pl.col("y").sum().cast(pl.Int64).alias("events"),
            pl.col("p").mean().alias("mean_predicted"),
            pl.col("y").mean().alias("observed_rate"),
        )
        .sort("decile")
    )


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
        }


def save_model(model: RiskModel, path: Path | str) -> Path:
    """Write the model (joblib) with its version, hashes, scikit-learn version and features."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    joblib.dump(
        {
            "format": MODEL_FILE_FORMAT,
            "format_version": MODEL_FILE_VERSION,
            "summary": model.summary(),
            "feature_names": model.feature_names,
            "model": model,
        },
        tmp,
    )
    tmp.replace(path)
    return path


def load_model(path: Path | str, *, allow_sklearn_mismatch: bool = False) -> RiskModel:
    """Read a model written by :func:`save_model`.

    Refuses a file of another format, and (unless ``allow_sklearn_mismatch``) a model pickled
    under a different scikit-learn version, which scikit-learn does not support.
    """
    blob = joblib.load(Path(path))
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FILE_FORMAT:
        raise ValueError(f"{path}: not a {MODEL_FILE_FORMAT} file")
    model = blob["model"]
    if model.sklearn_version != sklearn.__version__ and not allow_sklearn_mismatch:
        raise ValueError(
            f"{path}: model {model.model_version} was saved with scikit-learn "
            f"{model.sklearn_version}, this is {sklearn.__version__}; retrain it"
        )
    return model


def check_model_features(model: RiskModel) -> None:
    """Raise :class:`FeatureSetMismatch` unless the model's features are today's features."""
    current = feature_set_hash()
    names = feature_names()
    if model.feature_set_hash != current:
        added = sorted(set(names) - set(model.candidate_features))
        removed = sorted(set(model.candidate_features) - set(names))
        detail = []
        if added:
            detail.append("added: " + ", ".join(added))
        if removed:
            detail.append("removed: " + ", ".join(removed))
        if not detail:
            detail.append("same names, changed definitions (source, look-back or meaning)")
        raise FeatureSetMismatch(
            f"model {model.model_version} was trained on feature set {model.feature_set_hash[:12]}"
            f" but the current feature definitions are {current[:12]} ({'; '.join(detail)}); "
            "retrain the model before scoring"
        )
    unknown = [n for n in model.feature_names if n not in names]
    if unknown:
        raise FeatureSetMismatch(
            f"model {model.model_version} uses unknown feature(s): {', '.join(unknown)}"
        )


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


def _fit(name: str, names: list[str], X, y, method: str, random_state: int):
    base = (
        _logistic(names, random_state) if name == "logistic" else _gradient_boosting(random_state)
    )
    model = _calibrated(base, method, random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        model.fit(X, y)
    return model


def _data_hash(X: np.ndarray, y: np.ndarray, names: list[str], ids: list[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(names).encode())
    h.update("\n".join(ids).encode())
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int8).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------


@dataclass
class RiskReport:
    """What :func:`train_and_evaluate` measured (all metrics on the held-out validation period)."""

    extract_date: dt.date
    training_index_date: dt.date
    validation_index_date: dt.date
    training: dict[str, int]
    validation: dict[str, int]
    feature_names: list[str]
    excluded_features: dict[str, str]
    selection_criterion: str
    chosen: str
    calibration_method: str
    #: candidate -> metrics on the whole validation cohort
    candidates: dict[str, dict[str, float]]
    age_only: dict[str, float]
    #: the generator's true probabilities on the validation cohort members it covers
    ceiling: dict[str, float] | None
    #: the chosen model on exactly the ceiling's patients
    chosen_on_ceiling_cohort: dict[str, float] | None
    #: diagnostic: the truth projected onto the features (see :func:`observable_ceiling`)
    observable_ceiling: dict[str, float] | None
    calibration: dict[str, pl.DataFrame]
    #: feature means at the training and validation index dates (drift check)
    feature_means: pl.DataFrame
    model_version: str
    #: per validation patient: outcome and every candidate's prediction (and truth if given)
    predictions: pl.DataFrame

    @property
    def chosen_metrics(self) -> dict[str, float]:
        return self.candidates[self.chosen]

    @property
    def auroc_gap_to_ceiling(self) -> float | None:
        if self.ceiling is None or self.chosen_on_ceiling_cohort is None:
            return None
        return self.ceiling["auroc"] - self.chosen_on_ceiling_cohort["auroc"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no per-patient data)."""
        return {
            "extract_date": self.extract_date.isoformat(),
            "training_index_date": self.training_index_date.isoformat(),
            "validation_index_date": self.validation_index_date.isoformat(),
            "training": self.training,
            "validation": self.validation,
            "features": self.feature_names,
            "excluded_features": self.excluded_features,
            "selection_criterion": self.selection_criterion,
            "chosen": self.chosen,
            "calibration_method": self.calibration_method,
            "candidates": self.candidates,
            "age_only": self.age_only,
            "ceiling": self.ceiling,
            "chosen_on_ceiling_cohort": self.chosen_on_ceiling_cohort,
            "observable_ceiling": self.observable_ceiling,
            "auroc_gap_to_ceiling": self.auroc_gap_to_ceiling,
            "calibration": {k: v.to_dicts() for k, v in self.calibration.items()},
            "model_version": self.model_version,
        }


def observable_ceiling(
    X: np.ndarray, y: np.ndarray, p_truth: np.ndarray, random_state: int = 0
) -> dict[str, float]:
    """Metrics of the truth *projected onto the features*: a gradient-boosted regression of
    log(true probability) on the validation features, fitted and evaluated in-sample.

    An optimistic bound for any model that sees only these features: the part of the true
    risk that the record cannot show (in the generator, an unobserved gamma frailty and the
    difference between latent and coded conditions) is what it cannot recover. Diagnostic only.
    """
    reg = HistGradientBoostingRegressor(max_iter=300, random_state=random_state)
    target = np.log(np.clip(p_truth, 1e-9, 1.0))
    reg.fit(X, target)
    fitted = reg.predict(X)
    # back from the log scale with a smearing factor so that the mean matches the truth's
    p_hat = np.exp(fitted)
    p_hat = np.clip(p_hat * p_truth.mean() / p_hat.mean(), 0.0, 1.0)
    out = metrics(y, p_hat)
    out["r2_log_truth"] = float(1 - np.var(target - fitted) / np.var(target))
    return out


def _truth_by_person(con: duckdb.DuckDBPyConnection, truth: pl.DataFrame) -> pl.DataFrame:
    need = {"nhs_number", "p_emergency_12m_before"}
    if not need <= set(truth.columns):
        raise ValueError(f"truth needs columns {sorted(need)}, has {truth.columns}")
    ident = con.execute("SELECT nhs_number, person_id FROM marts.person_identity").pl()
    return (
        truth.select(pl.col("nhs_number").cast(pl.String), "p_emergency_12m_before")
        .join(ident, on="nhs_number", how="inner")
        .select("person_id", pl.col("p_emergency_12m_before").alias("p_truth"))
    )


def train_and_evaluate(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    truth: pl.DataFrame | None = None,
    *,
    random_state: int = 0,
    calibration_method: str = "sigmoid",
) -> tuple[RiskModel, RiskReport]:
    """Fit both candidates on the training period, evaluate on the validation period, pick one.

    ``con``: the warehouse (read only). ``truth``: the generator's ``truth.parquet``
    (``nhs_number, p_emergency_12m_before``) for the ceiling, or None.
    Returns the chosen calibrated model and the report.
    """
    t_index = extract_date - dt.timedelta(days=TRAINING_OFFSET_DAYS)
    v_index = extract_date - dt.timedelta(days=VALIDATION_OFFSET_DAYS)
    names, excluded = feature_coverage(con, [t_index, v_index])

    train = labelled_cohort(con, t_index)
    valid = labelled_cohort(con, v_index)
    X_tr, y_tr = to_matrix(train, names), train[OUTCOME].to_numpy().astype(np.int8)
    X_va, y_va = to_matrix(valid, names), valid[OUTCOME].to_numpy().astype(np.int8)
    if y_tr.sum() < 20 or y_va.sum() < 20:
        raise ValueError(
            f"too few outcomes to train and validate (training {int(y_tr.sum())}, "
            f"validation {int(y_va.sum())}); a larger population is needed"
        )

    fitted, preds, cand_metrics = {}, {}, {}
    for name in CANDIDATES:
        fitted[name] = _fit(name, names, X_tr, y_tr, calibration_method, random_state)
        preds[name] = fitted[name].predict_proba(X_va)[:, 1]
        cand_metrics[name] = metrics(y_va, preds[name])
    chosen = min(CANDIDATES, key=lambda n: (cand_metrics[n][SELECTION_CRITERION], n))

    age_model = _fit(
        "logistic", ["age"], X_tr[:, [names.index("age")]], y_tr, calibration_method, random_state
    )
    preds["age_only"] = age_model.predict_proba(X_va[:, [names.index("age")]])[:, 1]
    age_metrics = metrics(y_va, preds["age_only"])

    pred_frame = valid.select("person_id", OUTCOME).with_columns(
        *(pl.Series(f"p_{k}", v) for k, v in preds.items())
    )
    ceiling = chosen_on_ceiling = observable = None
    calib = {k: calibration_by_decile(y_va, v) for k, v in preds.items()}
    if truth is not None:
        pred_frame = pred_frame.join(_truth_by_person(con, truth), on="person_id", how="left")
        has_truth = pred_frame["p_truth"].is_not_null().to_numpy()
        sub = pred_frame.filter(pl.col("p_truth").is_not_null())
        if sub.height and sub[OUTCOME].sum() > 0:
            ys = sub[OUTCOME].to_numpy().astype(np.int8)
            ceiling = metrics(ys, sub["p_truth"].to_numpy())
            chosen_on_ceiling = metrics(ys, sub[f"p_{chosen}"].to_numpy())
            calib["truth"] = calibration_by_decile(ys, sub["p_truth"].to_numpy())
            observable = observable_ceiling(
                X_va[has_truth], ys, sub["p_truth"].to_numpy(), random_state
            )

    ids = train["person_id"].to_list()
    data_hash = _data_hash(X_tr, y_tr, names, ids)
    version = f"emergency-admission-12m/{extract_date.isoformat()}/{chosen}/{data_hash[:12]}"
    reference = _reference_values(train, names)
    model = RiskModel(
        name=chosen,
        estimator=fitted[chosen],
        feature_names=names,
        feature_set_hash=feature_set_hash(),
        candidate_features=feature_names(),
        excluded_features=excluded,
        model_version=version,
        sklearn_version=sklearn.__version__,
        training_data_hash=data_hash,
        extract_date=extract_date,
        training_index_date=t_index,
        validation_index_date=v_index,
        random_state=random_state,
        calibration_method=calibration_method,
        reference_values=reference,
        validation_metrics=cand_metrics[chosen],
    )
    means = pl.DataFrame(
        {
            "feature": names,
            "training_mean": X_tr.mean(axis=0),
            "validation_mean": X_va.mean(axis=0),
        }
    )
    report = RiskReport(
        extract_date=extract_date,
        training_index_date=t_index,
        validation_index_date=v_index,
        training={"patients": len(y_tr), "events": int(y_tr.sum())},
        validation={"patients": len(y_va), "events": int(y_va.sum())},
        feature_names=names,
        excluded_features=excluded,
        selection_criterion=SELECTION_CRITERION,
        chosen=chosen,
        calibration_method=calibration_method,
        candidates=cand_metrics,
        age_only=age_metrics,
        ceiling=ceiling,
        chosen_on_ceiling_cohort=chosen_on_ceiling,
        observable_ceiling=observable,
        calibration=calib,
        feature_means=means,
        model_version=version,
        predictions=pred_frame,
    )
    return model, report


# --------------------------------------------------------------------------------------
# Scoring, tiers and contributing factors
# --------------------------------------------------------------------------------------


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


def _reference_values(train: pl.DataFrame, names: list[str]) -> dict[str, float]:
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


def _plural(n: float, one: str, many: str | None = None) -> str:
    k = math.floor(float(n) + 0.5)
    return f"{k} {one if k == 1 else (many or one + 's')}"


@lru_cache(maxsize=1)
def _efi_categories() -> tuple[tuple[str, int, int], ...]:
    return load_efi_definition().categories


@lru_cache(maxsize=1)
def _condition_words() -> dict[str, str]:
    return {c.id: condition_label(c.id, c.name) for c in load_ltc_conditions()}


@lru_cache(maxsize=1)
def _condition_types() -> dict[str, str]:
    return {c.id: c.type for c in load_ltc_conditions()}


def _efi_band(deficits: float) -> str:
    k = math.floor(float(deficits) + 0.5)
    for name, lo, hi in _efi_categories():
        if lo <= k <= hi:
            return name
    return "severe"


def _factor_text(group: str, row: dict[str, float]) -> str:
    g = group
    if g == "age":
        return f"age {int(row['age'])}"
    if g == "sex":
        return "male"
    if g == "imd":
        if row.get("imd_unknown"):
            return "home area unknown"
        return f"lives in an IMD decile {int(row['imd_decile'])} area (1 = most deprived)"
    if g.startswith("ltc_"):
        return _condition_words().get(g.removeprefix("ltc_"), g)
    if g == "multimorbidity":
        return _plural(row["ltc_count"], "long-term condition")
    if g == "frailty":
        n = row["efi_coded_deficits"]
        band = _efi_band(n)
        if band == "fit":
            return _plural(n, "frailty deficit") + " (eFI)"
        return f"{band} frailty (eFI, {_plural(n, 'deficit')})"
    if g == "medicines":
        return _plural(row.get("distinct_medicines_12m", 0), "different medicine") + " in 12 months"
    if g == "hfrs":
        return f"Hospital Frailty Risk Score {row['hfrs_score']:.1f}"
    texts = {
        "em": ("emergency_admissions_12m", "emergency admission"),
        "bed_days": ("bed_days_12m", "day in hospital", "days in hospital"),
        "elective": ("elective_admissions_12m", "planned admission"),
        "ae": ("ae_attendances_12m", "A&E attendance"),
        "op": ("op_attendances_12m", "outpatient attendance"),
        "op_dna": ("op_dna_12m", "missed outpatient appointment"),
        "gp": ("gp_appointments_attended_12m", "GP practice appointment"),
        "gp_dna": ("gp_appointments_dna_12m", "missed GP practice appointment"),
        "ppn": ("ppn_12m", "police safeguarding notification"),
    }
    if g in texts:
        col, *words = texts[g]
        return _plural(row.get(col, 0), *words) + " in the last 12 months"
    if g == "sp":
        return "referred to social prescribing in the last 12 months"
    return g


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
            parts.append(_factor_text(groups[j], row))
        out.append("; ".join(parts) if parts else NO_FACTOR_TEXT)
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
    view = "__seg_risk_scores"
    con.register(view, scores.select("person_id", "risk_score", "risk_tier", "risk_factors"))
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE marts.risk_scores AS SELECT * FROM {view} ORDER BY person_id"
        )
    finally:
        con.unregister(view)
    return scores.height
