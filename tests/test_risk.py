"""Emergency admission risk model: features without leakage, determinism, tiers, metrics,
model persistence and the model card, on a generated delivery (shared with
tests/test_segmentation.py)."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import math
import re

import duckdb
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from test_segmentation import ED, shared_warehouse, working_copy

from phm.measures import load_ltc_conditions
from phm.paths import sidecar_dir
from segmentation.features import build_features, factor_text, feature_coverage, feature_names
from segmentation.report import model_card
from segmentation.risk import (
    NO_FACTOR_TEXT,
    OUTCOME,
    TIERS,
    FeatureNotCovered,
    FeatureSetMismatch,
    assign_tiers,
    labelled_cohort,
    load_model,
    outcomes,
    save_model,
    score,
    train_and_evaluate,
    write_scores,
)

SEED = 3


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    c = duckdb.connect(str(working_copy(tmp_path_factory, "risk")), read_only=True)
    c.execute("SET enable_progress_bar = false")
    yield c
    c.close()


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    extracts, _ = shared_warehouse(tmp_path_factory)
    return pl.read_parquet(sidecar_dir(extracts, ED.isoformat()) / "truth.parquet")


@pytest.fixture(scope="module")
def trained(con, truth):
    return train_and_evaluate(con, ED, truth, random_state=SEED)


@pytest.fixture(scope="module")
def scores(con, trained):
    model, _ = trained
    return score(con, model, ED)


# --------------------------------------------------------------------------------------
# Features: same code as the measures, no leakage
# --------------------------------------------------------------------------------------


def test_features_at_the_extract_date_are_the_current_measures(con):
    f = build_features(con, ED)
    pm = con.execute("SELECT * FROM marts.patient_measures ORDER BY person_id").pl()
    assert f["person_id"].to_list() == pm["person_id"].to_list()
    for col in (
        "age",
        "emergency_admissions_12m",
        "ae_attendances_12m",
        "bed_days_12m",
        "op_attendances_12m",
        "gp_appointments_attended_12m",
    ):
        assert (f[col] == pm[col].cast(pl.Float64)).all(), col
    assert (f["hfrs_score"] == pm["hfrs_score"].cast(pl.Float64).fill_null(0.0)).all()
    assert (f["is_male"] == (pm["sex"] == "M")).all()
    # a condition without a treatment rule: the code-rule flag is the register
    assert (f["ltc_copd"] == pm["has_copd"]).all()
    assert (f["ltc_dementia"] == pm["has_dementia"]).all()


@pytest.fixture(scope="module")
def leakage(tmp_path_factory):
    """Features at an index date before and after adding records dated on / after it."""
    path = working_copy(tmp_path_factory, "leakage")
    c = duckdb.connect(str(path))
    c.execute("SET enable_progress_bar = false")
    index = ED - dt.timedelta(days=365)
    before = build_features(c, index)
    base_outcome = set(outcomes(c, index)["person_id"])
    ident = dict(c.execute("SELECT person_id, nhs_number FROM marts.person_identity").fetchall())
    pool = before.filter(~pl.col("ltc_copd") & ~pl.col("person_id").is_in(list(base_outcome)))
    p_after, q_on, r_code_after, s_code_on, t_dies = pool["person_id"].head(5).to_list()
    copd_list = next(c_.diagnosis[0] for c_ in load_ltc_conditions() if c_.id == "copd")
    code = c.execute(
        "SELECT min(code) FROM reference.codelists WHERE codelist_id = ?", [copd_list]
    ).fetchone()[0]

    def spell(pid: str, day: dt.date, spell_id: str) -> None:
        c.execute(
            """INSERT INTO staging.sus_apc BY NAME
               SELECT ? AS nhs_number, ? AS spell_id, 'RWE' AS provider_code,
                      ?::DATE AS admission_date, ?::DATE AS discharge_date,
                      '21' AS admission_method, 'J189' AS primary_diagnosis""",
            [ident[pid], spell_id, day, day + dt.timedelta(days=2)],
        )

    def event(pid: str, day: dt.date) -> None:
        c.execute(
            """INSERT INTO staging.gp_events BY NAME
               SELECT ? AS nhs_number, ?::DATE AS event_date, ? AS snomed_code,
                      (SELECT min(practice_code) FROM staging.practices) AS practice_code""",
            [ident[pid], day, code],
        )

    spell(p_after, index + dt.timedelta(days=1), "LEAK-1")
    spell(q_on, index, "LEAK-2")
    event(r_code_after, index + dt.timedelta(days=1))
    event(s_code_on, index)
    c.execute(
        "UPDATE staging.gp_patients SET date_of_death = ?, registration_end = ? "
        "WHERE nhs_number = ?",
        [index + dt.timedelta(days=10), index + dt.timedelta(days=10), ident[t_dies]],
    )
    after = build_features(c, index)
    after_outcome = set(outcomes(c, index)["person_id"])
    c.close()
    return {
        "before": before,
        "after": after,
        "base_outcome": base_outcome,
        "after_outcome": after_outcome,
        "ids": (p_after, q_on, r_code_after, s_code_on, t_dies),
    }


def test_records_after_the_index_date_do_not_change_features(leakage):
    before, after = leakage["before"], leakage["after"]
    p_after, q_on, r_code_after, s_code_on, t_dies = leakage["ids"]
    changed = {q_on, s_code_on}
    keep = ~pl.col("person_id").is_in(list(changed))
    # everyone else, including the patients with an admission / a code the day after the index
    # date and the one who died 10 days after it, is exactly as before
    assert before.filter(keep).equals(after.filter(keep))
    assert {p_after, r_code_after, t_dies} <= set(after["person_id"])


def test_records_on_the_index_date_are_features(leakage):
    before, after = leakage["before"], leakage["after"]
    _, q_on, _, s_code_on, _ = leakage["ids"]

    def row(df, pid):
        return df.filter(pl.col("person_id") == pid).row(0, named=True)

    assert (
        row(after, q_on)["emergency_admissions_12m"]
        == row(before, q_on)["emergency_admissions_12m"] + 1
    )
    assert not row(before, s_code_on)["ltc_copd"]
    assert row(after, s_code_on)["ltc_copd"]
    assert row(after, s_code_on)["ltc_count"] == row(before, s_code_on)["ltc_count"] + 1


def test_outcome_counts_only_admissions_strictly_after_the_index_date(leakage):
    p_after, q_on, *_ = leakage["ids"]
    assert p_after not in leakage["base_outcome"]
    assert leakage["after_outcome"] == leakage["base_outcome"] | {p_after}
    assert q_on not in leakage["after_outcome"]


def test_uncovered_look_backs_are_left_out_of_the_model(con, trained):
    model, report = trained
    t_index = ED - dt.timedelta(days=730)
    covered, excluded = feature_coverage(con, [t_index])
    # the generator delivers 12 months of prescriptions and 3 years of hospital activity,
    # appointments, PPNs and social prescribing: at extract - 730 a 12-month look-back is
    # covered, a 2-year one is not
    assert {"efi_polypharmacy", "hfrs_score"} <= set(excluded)
    assert {
        "emergency_admissions_12m",
        "gp_appointments_attended_12m",
        "ppn_12m",
        "sp_contact_12m",
    } <= set(covered)
    assert {"ppn_12m", "sp_contact_12m"} <= set(model.feature_names)
    assert not set(model.feature_names) & set(excluded)
    assert report.excluded_features.keys() >= excluded.keys()


# --------------------------------------------------------------------------------------
# Model quality and honest metrics
# --------------------------------------------------------------------------------------


def test_a_small_delivery_trains_on_its_whole_cohort(con, trained):
    # 5,000 patients: far below PHM_RISK_TRAINING_SAMPLE's default, so no sampling
    model, report = trained
    cohort = labelled_cohort(con, report.training_index_date)
    assert model.training_rows == model.training_cohort_rows == cohort.height
    assert report.training["sample_patients"] == report.training["patients"] == cohort.height
    assert report.training["sample_events"] == report.training["events"] == cohort[OUTCOME].sum()


def test_model_beats_an_age_only_baseline(trained):
    _, report = trained
    chosen = report.candidates[report.chosen]
    assert chosen["auroc"] > report.age_only["auroc"]
    assert chosen["brier"] < report.age_only["brier"]
    assert chosen["average_precision"] > report.age_only["average_precision"]


def test_choice_follows_the_stated_criterion(trained):
    model, report = trained
    assert report.selection_criterion == "brier"
    assert report.chosen == min(report.candidates, key=lambda n: report.candidates[n]["brier"])
    assert model.name == report.chosen


def test_reported_metrics_match_a_recomputation(con, truth, trained):
    model, report = trained
    valid = labelled_cohort(con, report.validation_index_date)
    y = valid[OUTCOME].to_numpy().astype(int)
    p = model.predict_frame(valid)
    m = report.candidates[report.chosen]
    assert m["n"] == len(y) and m["events"] == int(y.sum())
    assert m["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert m["log_loss"] == pytest.approx(
        -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), abs=1e-9
    )
    # calibration by decile of predicted risk
    cal = report.calibration[report.chosen]
    order = np.argsort(p, kind="stable")
    for d, chunk in enumerate(np.array_split(order, 10), start=1):
        r = cal.filter(pl.col("decile") == d).row(0, named=True)
        assert r["n"] == pytest.approx(len(chunk), abs=1)
    assert cal["events"].sum() == y.sum()
    assert cal["n"].sum() == len(y)
    top = cal.filter(pl.col("decile") == 10).row(0, named=True)
    assert top["observed_rate"] == pytest.approx(y[order[-top["n"] :]].mean(), abs=1e-12)
    # the ceiling: the generator's truth on the same patients
    ident = con.execute("SELECT nhs_number, person_id FROM marts.person_identity").pl()
    t = truth.join(ident, on="nhs_number").select("person_id", "p_emergency_12m_before")
    joined = valid.select("person_id", OUTCOME).join(t, on="person_id")
    yt = joined[OUTCOME].to_numpy().astype(int)
    assert report.ceiling["n"] == joined.height
    assert report.ceiling["auroc"] == pytest.approx(
        roc_auc_score(yt, joined["p_emergency_12m_before"].to_numpy()), abs=1e-12
    )
    assert report.auroc_gap_to_ceiling == pytest.approx(
        report.ceiling["auroc"] - report.chosen_on_ceiling_cohort["auroc"]
    )


def test_a_fixed_seed_gives_identical_scores(con, truth, trained, scores):
    model, report = trained
    model2, report2 = train_and_evaluate(con, ED, truth, random_state=SEED)
    assert model2.training_data_hash == model.training_data_hash
    assert model2.model_version == model.model_version
    assert report2.to_dict() == report.to_dict()
    assert score(con, model2, ED).equals(scores)


# --------------------------------------------------------------------------------------
# Scores, tiers, factors
# --------------------------------------------------------------------------------------


def test_tiers_partition_the_population_in_the_stated_proportions(con, scores):
    n = con.execute("SELECT count(*) FROM marts.patient_measures").fetchone()[0]
    assert scores.height == scores["person_id"].n_unique() == n
    counts = dict(scores.group_by("risk_tier").len().iter_rows())
    lo = 0
    for tier, share in TIERS:
        hi = n if share >= 1 else math.floor(n * share + 0.5)
        assert counts.get(tier, 0) == hi - lo, tier
        lo = hi
    # tiers follow the ranking: every score in a tier >= every score in the next
    names = [t for t, _ in TIERS]
    by = {t: scores.filter(pl.col("risk_tier") == t)["risk_score"] for t in names}
    for a, b in itertools.pairwise(names):
        assert by[a].min() >= by[b].max()
    assert scores["risk_score"].is_between(0, 1).all()


def test_assign_tiers_breaks_ties_by_person_id():
    ids = [f"p{i:04d}" for i in range(1000)]
    tiers = assign_tiers(np.full(1000, 0.1), ids)
    assert list(tiers[:5]) == ["very high"] * 5
    assert tiers[5] == "high" and tiers[49] == "high" and tiers[50] == "rising"
    assert tiers[199] == "rising" and tiers[200] == "low"


def test_risk_factors_are_plain_words_matching_the_record(con, scores):
    assert scores["risk_factors"].null_count() == 0
    parts = scores["risk_factors"].str.split("; ")
    assert parts.list.len().max() <= 3
    top = scores.filter(pl.col("risk_tier") == "very high")
    assert (top["risk_factors"] != NO_FACTOR_TEXT).all()
    feats = build_features(con, ED).select("person_id", "emergency_admissions_12m", "age")
    joined = scores.join(feats, on="person_id")
    pattern = re.compile(r"(\d+) emergency admissions? in the last 12 months")
    checked = 0
    for r in joined.iter_rows(named=True):
        m = pattern.search(r["risk_factors"])
        if m:
            assert int(m.group(1)) == r["emergency_admissions_12m"]
            checked += 1
        a = re.search(r"\bage (\d+)", r["risk_factors"])
        if a:
            assert int(a.group(1)) == r["age"]
    assert checked > 0


def test_ltc_factor_text_agrees_with_the_register_row(con, scores):
    """The factor counts diagnosis-coded conditions (the model's ltc_count); the register's
    ltc_count also counts registers met by treatment alone. The text says which count it is,
    and its number is the model's count."""
    # a patient whose counts differ: 4 coded as diagnoses, 5 on the register
    text = factor_text("multimorbidity", {"ltc_count": 4.0})
    assert text == "4 long-term conditions coded as diagnoses"
    assert factor_text("multimorbidity", {"ltc_count": 1.0}) == (
        "1 long-term condition coded as a diagnosis"
    )
    feats = build_features(con, ED).select("person_id", pl.col("ltc_count").alias("model_ltc"))
    register = con.execute(
        "SELECT person_id, ltc_count AS register_ltc FROM marts.patient_measures"
    ).pl()
    joined = scores.join(feats, on="person_id").join(register, on="person_id")
    said = joined.with_columns(
        pl.col("risk_factors")
        .str.extract(r"(\d+) long-term conditions? ", 1)
        .cast(pl.Int64)
        .alias("said")
    ).filter(pl.col("said").is_not_null())
    assert said.height > 0
    # every mention is labelled, and its number is the model's count
    assert (
        said["risk_factors"].str.contains(r"\d+ long-term conditions? coded as a? ?diagnos").all()
    )
    assert (said["said"] == said["model_ltc"]).all()
    # the two counts do differ for some patients, so the label matters
    assert (said["said"] != said["register_ltc"]).any()


def test_write_scores_creates_the_mart(tmp_path_factory, scores):
    c = duckdb.connect(str(working_copy(tmp_path_factory, "risk_write")))
    try:
        assert write_scores(c, scores) == scores.height
        cols = [r[0] for r in c.execute("DESCRIBE marts.risk_scores").fetchall()]
        back = c.execute("SELECT * FROM marts.risk_scores ORDER BY person_id").pl()
    finally:
        c.close()
    assert cols == ["person_id", "risk_score", "risk_tier", "risk_factors"]
    assert back.equals(scores.sort("person_id"))


# --------------------------------------------------------------------------------------
# Persistence and refusal of a different feature set
# --------------------------------------------------------------------------------------


def test_saved_model_round_trips_with_its_metadata(con, trained, tmp_path):
    model, _ = trained
    path = save_model(model, tmp_path / "model.joblib")
    back = load_model(path)
    assert back.model_version == model.model_version
    assert back.feature_names == model.feature_names
    assert back.training_data_hash == model.training_data_hash
    X = np.zeros((3, len(model.feature_names)))
    assert np.array_equal(back.predict(X), model.predict(X))
    old = copy.copy(model)
    old.sklearn_version = "0.1.0"
    save_model(old, tmp_path / "old.joblib")
    with pytest.raises(ValueError, match="scikit-learn"):
        load_model(tmp_path / "old.joblib")


def test_scoring_refuses_a_model_trained_on_another_feature_set(con, trained):
    model, _ = trained
    other = copy.copy(model)
    other.feature_set_hash = "0" * 64
    other.candidate_features = [n for n in feature_names() if n != "ltc_copd"]
    with pytest.raises(FeatureSetMismatch, match=r"added: ltc_copd.*retrain"):
        score(con, other, ED)
    renamed = copy.copy(model)
    renamed.feature_names = [*model.feature_names[:-1], "shoe_size"]
    with pytest.raises(FeatureSetMismatch, match="shoe_size"):
        score(con, renamed, ED)


def test_scoring_refuses_a_delivery_that_cannot_supply_a_feature(con, trained):
    model, _ = trained
    wider = copy.copy(model)
    wider.feature_names = [*model.feature_names, "hfrs_score"]
    with pytest.raises(FeatureNotCovered, match="hfrs_score"):
        score(con, wider, ED - dt.timedelta(days=730))


def test_model_card_reports_metrics_and_writes_the_plot(trained, tmp_path):
    model, report = trained
    text = model_card(model, report, tmp_path)
    assert (tmp_path / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "model_card.md").read_text() == text
    for heading in ("Intended use", "Data", "Features", "Metrics", "Calibration", "Limitations"):
        assert f"## {heading}" in text
    assert f"{report.candidates[report.chosen]['auroc']:.3f}" in text
    assert model.model_version in text
    # counts in the card are disclosure-controlled
    counts = re.findall(r"(\S+) patients, (\S+) with the outcome", text)
    assert len(counts) == 2
    for value in (v for pair in counts for v in pair):
        assert value == "*" or int(value) % 5 == 0


def test_shared_warehouse_is_not_modified(tmp_path_factory):
    _, warehouse = shared_warehouse(tmp_path_factory)
    c = duckdb.connect(str(warehouse), read_only=True)
    try:
        leaked = c.execute(
            "SELECT count(*) FROM staging.sus_apc WHERE spell_id LIKE 'LEAK-%'"
        ).fetchone()[0]
    finally:
        c.close()
    assert leaked == 0


# --------------------------------------------------------------------------------------
# Vectorised factor text and the retraining policy
# --------------------------------------------------------------------------------------


def _factor_text_row_by_row(model, X, groups, delta, top=3):
    """The per-patient reference: factor_text on every patient's whole row."""
    from segmentation.features import factor_text
    from segmentation.risk import FACTOR_MIN_DELTA

    order = np.argsort(-delta, axis=1, kind="stable")[:, :top]
    out = []
    for i in range(X.shape[0]):
        row = dict(zip(model.feature_names, X[i].tolist(), strict=True))
        parts = [factor_text(groups[j], row) for j in order[i] if delta[i, j] >= FACTOR_MIN_DELTA]
        out.append("; ".join(parts) if parts else NO_FACTOR_TEXT)
    return out


def test_vectorised_factor_text_equals_the_row_by_row_words(con, trained):
    from segmentation.risk import contributions, risk_factor_text, to_matrix

    model, _ = trained
    X = to_matrix(build_features(con, ED), model.feature_names)
    groups, delta, _ = contributions(model, X)
    fast = risk_factor_text(model, X, groups, delta)
    assert fast == _factor_text_row_by_row(model, X, groups, delta)
    # the comparison covers patients with one, two, three and no factors
    counts = {t.count("; ") + 1 if t != NO_FACTOR_TEXT else 0 for t in fast}
    assert {0, 1, 3} <= counts


def _last(tmp_path, **kw):
    from segmentation.risk.retrain import LastModel

    f = tmp_path / "m.joblib"
    f.write_bytes(b"x")
    base = dict(
        model_file=str(f),
        sha256="0" * 64,
        model_version="v",
        trained_on=dt.date(2026, 10, 1),
        feature_set_hash="h",
        feature_names=("age", "is_male"),
    )
    base.update(kw)
    return LastModel(**base)


def _decide(last, extract_date=dt.date(2026, 10, 15), covered=("age", "is_male"), age=28):
    from segmentation.risk.retrain import should_retrain

    return should_retrain(
        last,
        extract_date=extract_date,
        feature_set_hash="h",
        covered_features=list(covered),
        max_age_days=age,
    )


def test_should_retrain_reuses_a_recent_model_with_the_same_features(tmp_path):
    d = _decide(_last(tmp_path))
    assert not d.retrain and "14 days" in d.reason
    # the age limit is inclusive, and counted in deliveries' extract dates
    assert not _decide(_last(tmp_path), extract_date=dt.date(2026, 10, 29)).retrain
    assert _decide(_last(tmp_path), extract_date=dt.date(2026, 10, 30)).retrain


def test_should_retrain_when_the_model_cannot_or_should_not_be_reused(tmp_path):
    assert _decide(None).reason == "no earlier model recorded"
    gone = _last(tmp_path, model_file=str(tmp_path / "absent.joblib"))
    assert "missing" in _decide(gone).reason
    assert "feature definitions" in _decide(_last(tmp_path, feature_set_hash="other")).reason
    shorter = _decide(_last(tmp_path), covered=("age",))
    assert shorter.retrain and "no longer covered: is_male" in shorter.reason
    longer = _decide(_last(tmp_path), covered=("age", "is_male", "imd_decile"))
    assert longer.retrain and "now covered: imd_decile" in longer.reason
    older = _decide(_last(tmp_path), extract_date=dt.date(2026, 9, 1))
    assert older.retrain and "older" in older.reason
    assert _decide(_last(tmp_path), age=0).retrain


def test_model_max_age_days_reads_the_environment(monkeypatch):
    from segmentation.risk.retrain import DEFAULT_MAX_AGE_DAYS, model_max_age_days

    monkeypatch.delenv("PHM_MODEL_MAX_AGE_DAYS", raising=False)
    assert model_max_age_days() == DEFAULT_MAX_AGE_DAYS
    monkeypatch.setenv("PHM_MODEL_MAX_AGE_DAYS", "7")
    assert model_max_age_days() == 7
    monkeypatch.setenv("PHM_MODEL_MAX_AGE_DAYS", "a week")
    with pytest.raises(ValueError, match="PHM_MODEL_MAX_AGE_DAYS"):
        model_max_age_days()


def test_scoring_log_records_which_model_scored_which_delivery(con, trained, tmp_path):
    from segmentation.risk.persistence import file_sha256
    from segmentation.risk.retrain import (
        last_model,
        model_for_delivery,
        record_model_choice,
        record_scoring,
        should_retrain,
    )

    model, _ = trained
    log = duckdb.connect()
    assert last_model(log, ED) is None
    path = save_model(model, tmp_path / "m.joblib", con=log)
    first = should_retrain(
        None, extract_date=ED, feature_set_hash="h", covered_features=[], max_age_days=28
    )
    record_model_choice(log, ED, model, path, file_sha256(path), first)
    record_scoring(log, ED, 123)
    later = ED + dt.timedelta(days=7)
    last = last_model(log, later)
    assert last.trained_on == model.extract_date and last.sha256 == file_sha256(path)
    assert list(last.feature_names) == model.feature_names
    reuse = should_retrain(
        last,
        extract_date=later,
        feature_set_hash=model.feature_set_hash,
        covered_features=model.feature_names,
        max_age_days=28,
    )
    assert not reuse.retrain
    record_model_choice(log, later, model, last.model_file, last.sha256, reuse)
    assert model_for_delivery(log, later) == (path.resolve(), file_sha256(path))
    assert model_for_delivery(log, later + dt.timedelta(days=1)) is None
    rows = log.execute(
        "SELECT extract_date, trained_on, retrained, scored_rows "
        "FROM marts.model_scoring_log ORDER BY 1"
    ).fetchall()
    assert rows == [(ED, model.extract_date, True, 123), (later, model.extract_date, False, None)]
    # the reused model loads only if its hash still matches the registry
    assert load_model(last.model_file, con=log, expected_sha256=last.sha256).model_version == (
        model.model_version
    )
