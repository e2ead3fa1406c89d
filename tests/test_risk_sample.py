"""The risk model's stratified training sample: prevalence kept to the row,
deterministic for a seed, small cohorts used whole, the setting validated, and training on a
sample while evaluating on the whole validation cohort."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_risk import SEED, con, truth  # noqa: F401  (module fixtures)
from test_segmentation import ED

from segmentation.risk import OUTCOME, labelled_cohort, train_and_evaluate
from segmentation.risk.model import (
    DEFAULT_TRAINING_SAMPLE,
    TRAINING_OFFSET_DAYS,
    stratified_sample,
    training_sample_size,
)


def _frame(groups: list[tuple[bool, float, bool, int]]) -> pl.DataFrame:
    """Rows of (outcome, age, is_male) repeated n times, person_ids in shuffled order."""
    y, age, male = [], [], []
    for outcome, a, m, n in groups:
        y += [outcome] * n
        age += [a] * n
        male += [m] * n
    ids = [f"p{i:06d}" for i in np.random.default_rng(7).permutation(len(y))]
    return pl.DataFrame({"person_id": ids, "age": age, "is_male": male, OUTCOME: y})


def _random_frame(n: int, prevalence: float, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "person_id": [f"p{i:06d}" for i in range(n)],
            "age": rng.integers(0, 100, n).astype(np.float64),
            "is_male": rng.random(n) < 0.5,
            "ltc_count": rng.poisson(1.0, n).astype(np.float64),
            OUTCOME: rng.random(n) < prevalence,
        }
    )


def _strata(df: pl.DataFrame) -> dict[tuple, int]:
    rows = df.group_by(OUTCOME, (pl.col("age") // 10).alias("band"), "is_male").len().iter_rows()
    return {(y, band, male): n for y, band, male, n in rows}


def test_known_answer_allocation_by_outcome_then_age_band_and_sex():
    # 10 events (6 men in their 70s, 4 women in their 20s) and 30 non-events (18 men in their
    # 30s, 12 women in their 50s); half the cohort: 5 events (3 + 2), 15 non-events (9 + 6)
    df = _frame(
        [(True, 75, True, 6), (True, 22, False, 4), (False, 33, True, 18), (False, 51, False, 12)]
    )
    s = stratified_sample(df, 20, SEED)
    assert s.height == 20
    assert _strata(s) == {
        (True, 7, True): 3,
        (True, 2, False): 2,
        (False, 3, True): 9,
        (False, 5, False): 6,
    }


def test_largest_remainders_get_the_leftover_rows():
    # 7 events in strata of 4 and 3, 7 non-events in strata of 5 and 2; take 7 of 14: each
    # outcome's exact share is 3.5, the remainders tie and the first outcome in key order
    # (False) gets the leftover row: 4 non-events, 3 events
    df = _frame(
        [(True, 45, True, 4), (True, 45, False, 3), (False, 65, True, 5), (False, 65, False, 2)]
    )
    s = stratified_sample(df, 7, SEED)
    assert s[OUTCOME].sum() == 3
    # non-events: 4 * 5/7 = 2.86 -> 2 + 1 (remainder .86), 4 * 2/7 = 1.14 -> 1
    # events: 3 * 4/7 = 1.71 -> 1 + 1 (remainder .71), 3 * 3/7 = 1.29 -> 1
    assert _strata(s) == {
        (False, 6, True): 3,
        (False, 6, False): 1,
        (True, 4, True): 2,
        (True, 4, False): 1,
    }


@pytest.mark.parametrize("size", [1000, 3333, 12345, 29999])
def test_sample_keeps_the_prevalence_to_the_row(size):
    df = _random_frame(30_000, 0.137)
    events = int(df[OUTCOME].sum())
    s = stratified_sample(df, size, SEED)
    assert s.height == size
    # the event count is size * events / rows rounded (to the nearest row)
    assert s[OUTCOME].sum() == int(np.floor(size * events / df.height + 0.5))
    assert abs(s[OUTCOME].mean() - df[OUTCOME].mean()) <= 0.5 / size + 1e-12
    # the sample is a subset of the cohort's rows, unchanged and in the cohort's order
    assert s["person_id"].is_unique().all()
    assert s["person_id"].is_sorted()
    assert s.join(df, on=s.columns, how="anti").height == 0
    # every age band x sex stratum keeps its share to within a row
    full, part = _strata(df), _strata(s)
    for key, n in full.items():
        y_total = df.filter(pl.col(OUTCOME) == key[0]).height
        y_take = s.filter(pl.col(OUTCOME) == key[0]).height
        assert abs(part.get(key, 0) - n * y_take / y_total) < 1


def test_sample_is_deterministic_for_a_seed_and_independent_of_row_order():
    df = _random_frame(20_000, 0.2)
    a = stratified_sample(df, 5000, SEED)
    assert a.equals(stratified_sample(df, 5000, SEED))
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=11)
    b = stratified_sample(shuffled, 5000, SEED)
    assert b.sort("person_id").equals(a.sort("person_id"))
    c = stratified_sample(df, 5000, SEED + 1)
    assert c[OUTCOME].sum() == a[OUTCOME].sum()
    assert not c["person_id"].equals(a["person_id"])


def test_a_cohort_no_larger_than_the_setting_is_used_whole():
    df = _random_frame(4000, 0.1)
    assert stratified_sample(df, 4000, SEED) is df
    assert stratified_sample(df, 10_000, SEED) is df
    assert stratified_sample(df, None, SEED) is df
    assert stratified_sample(df, 3999, SEED).height == 3999


def test_training_sample_setting(monkeypatch):
    monkeypatch.delenv("PHM_RISK_TRAINING_SAMPLE", raising=False)
    assert training_sample_size() == DEFAULT_TRAINING_SAMPLE
    for raw, want in (("50000", 50_000), (" 250_000 ", 250_000), ("all", None), ("ALL", None)):
        monkeypatch.setenv("PHM_RISK_TRAINING_SAMPLE", raw)
        assert training_sample_size() == want
    for bad in ("abc", "-5", "10.5", "999", "0", "2e5"):
        monkeypatch.setenv("PHM_RISK_TRAINING_SAMPLE", bad)
        with pytest.raises(ValueError, match=r"PHM_RISK_TRAINING_SAMPLE must be a whole number"):
            training_sample_size()


def test_bad_setting_stops_training_with_the_message(monkeypatch, con):  # noqa: F811
    monkeypatch.setenv("PHM_RISK_TRAINING_SAMPLE", "lots")
    with pytest.raises(ValueError, match="PHM_RISK_TRAINING_SAMPLE"):
        train_and_evaluate(con, ED, None, random_state=SEED)


def test_training_on_a_sample_evaluates_on_the_whole_validation_cohort(con, truth):  # noqa: F811
    import datetime as dt

    cohort = labelled_cohort(con, ED - dt.timedelta(days=TRAINING_OFFSET_DAYS))
    size = cohort.height * 3 // 5
    model, report = train_and_evaluate(con, ED, truth, random_state=SEED, training_sample=size)
    whole, whole_report = train_and_evaluate(
        con, ED, truth, random_state=SEED, training_sample=None
    )
    events = int(cohort[OUTCOME].sum())
    assert report.training == {
        "patients": cohort.height,
        "events": events,
        "sample_patients": size,
        "sample_events": int(np.floor(size * events / cohort.height + 0.5)),
    }
    assert (model.training_rows, model.training_cohort_rows) == (size, cohort.height)
    assert model.summary()["training_rows"] == size
    assert whole.training_rows == whole.training_cohort_rows == cohort.height
    # evaluation is on the same, whole validation cohort either way
    assert report.validation == whole_report.validation
    assert report.predictions["person_id"].equals(whole_report.predictions["person_id"])
    assert report.ceiling == whole_report.ceiling
    # the fitted data differ, and the model version says so
    assert model.training_data_hash != whole.training_data_hash
    for name in report.candidates:
        assert report.candidates[name]["n"] == whole_report.candidates[name]["n"]


def test_observable_ceiling_fits_a_seeded_sample_of_a_larger_cohort():
    from segmentation.risk.evaluation import observable_ceiling

    rng = np.random.default_rng(3)
    X = rng.normal(size=(4000, 3))
    p = 1 / (1 + np.exp(-(-3 + X[:, 0] - 0.5 * X[:, 1])))
    y = (rng.random(4000) < p).astype(np.int8)
    whole = observable_ceiling(X, y, p, 0)
    # a setting no smaller than the cohort fits on every row: the same figures
    assert observable_ceiling(X, y, p, 0, fit_rows=4000) == whole
    sampled = observable_ceiling(X, y, p, 0, fit_rows=1000)
    assert sampled == observable_ceiling(X, y, p, 0, fit_rows=1000)  # seeded
    assert sampled != whole  # fitted on other rows
    # still evaluated on every row, and the projection still recovers the truth
    assert sampled["r2_log_truth"] > 0.9
    assert abs(sampled["auroc"] - whole["auroc"]) < 0.02
