"""Contributing factors computed block by block: the same scores, contributions and words
as one prediction over every patient, on a real calibrated model fitted to a seeded
synthetic feature matrix (no delivery needed)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from segmentation.features import feature_catalogue, feature_names, feature_set_hash
from segmentation.risk import factors
from segmentation.risk.factors import _factor_groups, _switch, contributions, risk_factor_text
from segmentation.risk.model import (
    FeatureSetMismatch,
    RiskModel,
    factor_reference_values,
    fit_candidate,
    to_matrix,
)


def _features(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    for f in feature_catalogue():
        if f.name == "age":
            cols[f.name] = rng.integers(0, 100, n).astype(float)
        elif f.name == "imd_decile":
            cols[f.name] = rng.integers(1, 11, n).astype(float)
        elif f.name == "gp_days_since_attendance":
            cols[f.name] = np.minimum(rng.integers(0, 500, n), 366).astype(float)
        elif f.name == "hfrs_score":
            cols[f.name] = np.round(rng.gamma(1.0, 3.0, n) * (rng.random(n) < 0.2), 1)
        elif f.kind == "binary":
            cols[f.name] = rng.random(n) < 0.15
        else:
            cols[f.name] = rng.poisson(0.6, n).astype(float)
    ltc = [f.name for f in feature_catalogue() if f.group.startswith("ltc_")]
    cols["ltc_count"] = np.sum([cols[c] for c in ltc], axis=0).astype(float)
    return pl.DataFrame(cols)


@pytest.fixture(scope="module")
def model() -> RiskModel:
    names = feature_names()
    train = _features(3000, seed=1)
    X = to_matrix(train, names)
    logit = -3 + 0.03 * X[:, names.index("age")] + 0.8 * X[:, names.index("ltc_count")]
    y = (np.random.default_rng(2).random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    estimator = fit_candidate("logistic", names, X, y, "sigmoid", 0)
    day = dt.date(2026, 11, 1)
    return RiskModel(
        name="logistic",
        estimator=estimator,
        feature_names=names,
        feature_set_hash=feature_set_hash(),
        candidate_features=names,
        excluded_features={},
        model_version="test",
        sklearn_version="",
        training_data_hash="",
        extract_date=day,
        training_index_date=day,
        validation_index_date=day,
        random_state=0,
        calibration_method="sigmoid",
        reference_values=factor_reference_values(train, names),
    )


def test_blocks_give_the_scores_contributions_and_words_of_one_prediction(model, monkeypatch):
    X = to_matrix(_features(500, seed=3), model.feature_names)
    groups, delta, p = contributions(model, X)  # 500 rows: one block
    monkeypatch.setattr(factors, "PREDICT_BLOCK", 7)
    b_groups, b_delta, b_p = contributions(model, X)
    assert b_groups == groups
    np.testing.assert_array_equal(b_p, p)  # the risk itself is one prediction over everyone
    # the model scores each row on its own; the summation order of a block can differ by ulps
    np.testing.assert_allclose(b_delta, delta, rtol=0, atol=1e-12)
    assert (delta > factors.FACTOR_MIN_DELTA).any(axis=0).sum() > 5
    assert risk_factor_text(model, X, b_groups, b_delta) == risk_factor_text(
        model, X, groups, delta
    )


def test_each_contribution_is_the_drop_when_that_patients_group_is_switched(model, monkeypatch):
    monkeypatch.setattr(factors, "PREDICT_BLOCK", 5)
    X = to_matrix(_features(60, seed=4), model.feature_names)
    groups, delta, p = contributions(model, X)
    members = _factor_groups(model)
    for j, g in enumerate(groups):
        rows, switch = _switch(model, g, members[g], X)
        assert np.all(delta[np.setdiff1d(np.arange(len(X)), rows), j] == 0)
        for r in rows[:3]:  # patient by patient, one row at a time
            one = X[[r]].copy()
            switch(one)
            assert delta[r, j] == pytest.approx(p[r] - model.predict(one)[0], abs=1e-12)


def test_lean_prediction_is_bit_for_bit_predict_proba(model):
    from segmentation.risk.lean import lean_predictor

    predict = lean_predictor(model)
    assert predict is not None  # the calibrated logistic ensemble is recognised
    X = to_matrix(_features(700, seed=5), model.feature_names)
    for rows in (X, np.asfortranarray(X), X[::3], X[[4]]):
        np.testing.assert_array_equal(predict(rows), model.predict(rows))
    with pytest.raises(FeatureSetMismatch):
        predict(X[:, :-1])


def test_lean_prediction_declines_other_estimators(model):
    from dataclasses import replace

    from segmentation.risk.lean import lean_predictor

    # a bare fold pipeline is not the calibrated ensemble
    bare = model.estimator.calibrated_classifiers_[0].estimator
    assert lean_predictor(replace(model, estimator=bare)) is None
    names = model.feature_names
    train = _features(400, seed=6)
    X = to_matrix(train, names)
    y = (X[:, names.index("ltc_count")] + np.random.default_rng(7).random(len(X)) > 1.5).astype(int)
    gb = fit_candidate("gradient_boosting", names, X, y, "sigmoid", 0)
    assert lean_predictor(replace(model, estimator=gb, name="gradient_boosting")) is None


def test_worker_processes_give_the_contributions_of_one_process(model, monkeypatch):
    monkeypatch.setattr(factors, "PREDICT_BLOCK", 97)  # several blocks per group
    X = to_matrix(_features(800, seed=8), model.feature_names)
    groups, delta, p = contributions(model, X, workers=1)
    w_groups, w_delta, w_p = contributions(model, X, workers=2)
    assert w_groups == groups
    np.testing.assert_array_equal(w_p, p)
    np.testing.assert_array_equal(w_delta, delta)
    assert (delta > factors.FACTOR_MIN_DELTA).any(axis=0).sum() > 5


def test_score_workers_setting(monkeypatch):
    monkeypatch.delenv("PHM_WORKERS", raising=False)
    assert factors.score_workers(factors.POOL_MIN_ROWS - 1) == 1
    assert factors.score_workers(10**7) == 1  # off unless asked for
    monkeypatch.setenv("PHM_WORKERS", "1")
    assert factors.score_workers(10**7) == 1
    monkeypatch.setenv("PHM_WORKERS", "3")
    assert factors.score_workers(10**7) == 3
    assert factors.score_workers(factors.POOL_MIN_ROWS - 1) == 1  # too few to be worth it
    for bad in ("0", "two"):
        monkeypatch.setenv("PHM_WORKERS", bad)
        with pytest.raises(ValueError, match="PHM_WORKERS"):
            factors.score_workers(10**7)
