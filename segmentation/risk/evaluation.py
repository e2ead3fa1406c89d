"""Evaluation: metrics, calibration, the ceilings, and :func:`train_and_evaluate` (fit both
candidates on the training period, evaluate on the validation period, pick one)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import polars as pl
import sklearn
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from segmentation.errors import InsufficientData
from segmentation.features import (
    feature_coverage,
    feature_names,
    feature_set_hash,
)
from segmentation.risk.model import (
    CANDIDATES,
    OUTCOME,
    SELECTION_CRITERION,
    TRAINING_OFFSET_DAYS,
    VALIDATION_OFFSET_DAYS,
    RiskModel,
    factor_reference_values,
    fit_candidate,
    labelled_cohort,
    stratified_sample,
    to_matrix,
    training_data_hash,
    training_sample_size,
)

#: ``train_and_evaluate(training_sample=FROM_SETTING)``: read ``PHM_RISK_TRAINING_SAMPLE``
FROM_SETTING = "setting"

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
# Training and evaluation
# --------------------------------------------------------------------------------------


@dataclass
class RiskReport:
    """What :func:`train_and_evaluate` measured (all metrics on the held-out validation period)."""

    extract_date: dt.date
    training_index_date: dt.date
    validation_index_date: dt.date
    #: the whole training cohort (``patients``, ``events``) and the stratified sample the
    #: candidates were fitted on (``sample_patients``, ``sample_events``; the whole cohort when
    #: it is no larger than the sample setting)
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
    X: np.ndarray,
    y: np.ndarray,
    p_truth: np.ndarray,
    random_state: int = 0,
    fit_rows: int | None = None,
) -> dict[str, float]:
    """Metrics of the truth *projected onto the features*: a gradient-boosted regression of
    log(true probability) on the validation features, evaluated on every validation patient.

    An optimistic bound for any model that sees only these features: the part of the true
    risk that the record cannot show (in the generator, an unobserved gamma frailty and the
    difference between latent and coded conditions) is what it cannot recover. Diagnostic only.

    ``fit_rows``: when the cohort is larger, the regression is fitted on that many rows drawn
    at random (seeded by ``random_state``; the same rows for the same cohort) instead of all of
    them, as the candidates are (the training sample setting); otherwise fitted in-sample on
    every row.
    """
    reg = HistGradientBoostingRegressor(max_iter=300, random_state=random_state)
    target = np.log(np.clip(p_truth, 1e-9, 1.0))
    if fit_rows is not None and len(target) > fit_rows:
        rows = np.sort(np.random.default_rng(random_state).choice(len(target), fit_rows, False))
        reg.fit(X[rows], target[rows])
    else:
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
    training_sample: int | str | None = FROM_SETTING,
) -> tuple[RiskModel, RiskReport]:
    """Fit both candidates on the training period, evaluate on the validation period, pick one.

    ``con``: the warehouse (read only). ``truth``: the generator's ``truth.parquet``
    (``nhs_number, p_emergency_12m_before``) for the ceiling, or None.
    ``training_sample``: the rows of the training cohort the candidates and the age-only floor
    are fitted on, a stratified seeded sample (:func:`~segmentation.risk.model.
    stratified_sample`); None = the whole cohort; by default ``PHM_RISK_TRAINING_SAMPLE``
    (:func:`~segmentation.risk.model.training_sample_size`). Validation metrics, calibration
    and the ceilings are always on the whole validation cohort.
    Returns the chosen calibrated model and the report.
    """
    if training_sample == FROM_SETTING:
        training_sample = training_sample_size()
    t_index = extract_date - dt.timedelta(days=TRAINING_OFFSET_DAYS)
    v_index = extract_date - dt.timedelta(days=VALIDATION_OFFSET_DAYS)
    names, excluded = feature_coverage(con, [t_index, v_index])

    train = labelled_cohort(con, t_index)
    valid = labelled_cohort(con, v_index)
    X_tr, y_tr = to_matrix(train, names), train[OUTCOME].to_numpy().astype(np.int8)
    X_va, y_va = to_matrix(valid, names), valid[OUTCOME].to_numpy().astype(np.int8)
    if y_tr.sum() < 20 or y_va.sum() < 20:
        raise InsufficientData(
            f"too few outcomes to train and validate (training {int(y_tr.sum())}, "
            f"validation {int(y_va.sum())}); a larger population is needed"
        )

    # the fits use the sample; the drift means and factor reference values the whole cohort
    fit = stratified_sample(train, training_sample, random_state)
    X_fit, y_fit = (
        (X_tr, y_tr)
        if fit is train
        else (to_matrix(fit, names), fit[OUTCOME].to_numpy().astype(np.int8))
    )

    fitted, preds, cand_metrics = {}, {}, {}
    for name in CANDIDATES:
        fitted[name] = fit_candidate(name, names, X_fit, y_fit, calibration_method, random_state)
        preds[name] = fitted[name].predict_proba(X_va)[:, 1]
        cand_metrics[name] = metrics(y_va, preds[name])
    chosen = min(CANDIDATES, key=lambda n: (cand_metrics[n][SELECTION_CRITERION], n))

    age_model = fit_candidate(
        "logistic", ["age"], X_fit[:, [names.index("age")]], y_fit, calibration_method, random_state
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
                X_va[has_truth], ys, sub["p_truth"].to_numpy(), random_state, training_sample
            )

    ids = fit["person_id"].to_list()
    data_hash = training_data_hash(X_fit, y_fit, names, ids)
    version = f"emergency-admission-12m/{extract_date.isoformat()}/{chosen}/{data_hash[:12]}"
    reference = factor_reference_values(train, names)
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
        training_rows=len(y_fit),
        training_cohort_rows=len(y_tr),
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
        training={
            "patients": len(y_tr),
            "events": int(y_tr.sum()),
            "sample_patients": len(y_fit),
            "sample_events": int(y_fit.sum()),
        },
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
