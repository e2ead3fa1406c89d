"""Impact stage: paired statistics vs scipy, caseload counts on a hand-made caseload,
matching balance and DiD on a constructed panel with a known effect, the report's safety."""

import datetime as dt
import hashlib
import json

import duckdb
import numpy as np
import polars as pl
import pytest
from scipy import stats

from phm.contract import EMERGENCY_ADMISSION_METHODS
from phm.definitions import DefinitionError, load_events, table_columns_of
from phm.definitions.interventions import load_intervention, load_interventions
from phm.definitions.interventions import treated_sql as compile_treated_sql
from phm.disclosure import DisclosurePolicy
from phm.exports import add_to_manifest
from phm.hospital import emergency_method_sql as emergency_admission_sql
from phm.impact.caseload import caseload_monthly, outreach_funnel
from phm.impact.estimates import PAIRS_TABLE, bootstrap_mean_ci, estimate_impact
from phm.impact.interventions import (
    build_interventions,
    build_monthly_use,
    build_people,
    treated_sql,
)
from phm.impact.matching import match_intervention, nearest
from phm.impact.outcomes import load_outcome_measures, outcome_scores, paired_stats
from phm.impact.report import render_report, write_pcn_reports

ED = dt.date(2026, 11, 1)


# ---------------------------------------------------------------------------------------
# paired statistics


def test_paired_stats_match_scipy_and_hand_counts():
    base = np.array([18, 20, 15, 22, 19, 17, 25, 16, 21, 14], dtype=float)
    follow = np.array([22, 21, 19, 22, 18, 21, 26, 20, 25, 13], dtype=float)
    d = follow - base  # 4, 1, 4, 0, -1, 4, 1, 4, 4, -1
    got = paired_stats(base, follow, higher_is_better=True, mid=3)
    assert got["n_paired"] == 10
    assert got["mean_change"] == pytest.approx(2.0)
    lo, hi = stats.t.interval(0.95, 9, loc=d.mean(), scale=stats.sem(d))
    assert got["ci_lower"] == pytest.approx(lo)
    assert got["ci_upper"] == pytest.approx(hi)
    assert got["t_test_p"] == pytest.approx(stats.ttest_rel(follow, base).pvalue)
    assert got["wilcoxon_p"] == pytest.approx(stats.wilcoxon(follow, base).pvalue)
    assert got["cohens_dz"] == pytest.approx(2.0 / np.std(d, ddof=1))
    assert got["n_improved_mid"] == 5  # the five changes of +4
    assert got["share_improved_mid"] == pytest.approx(0.5)


def test_paired_stats_lower_is_better_and_missing_followups():
    base = np.array([8, 7, 9, 6, 8], dtype=float)
    follow = np.array([5, np.nan, 8, 6, np.nan])  # two lost to follow-up
    got = paired_stats(base, follow, higher_is_better=False, mid=2)
    assert got["n_paired"] == 3
    assert got["mean_change"] == pytest.approx((-3 - 1 + 0) / 3)
    assert got["n_improved_mid"] == 1  # only the fall of 3 is at least the MID
    assert got["t_test_p"] == pytest.approx(stats.ttest_rel([5, 8, 6], [8, 9, 6]).pvalue)
    # no MID published: no share, not zero
    assert paired_stats(base, follow, mid=None)["share_improved_mid"] is None


def test_outcome_scores_state_completion_and_mid_sources():
    measures = {m.id: m for m in load_outcome_measures()}
    assert measures["wemwbs_short"].mid == 3 and "10.1186/s12955-018-1060-2" in (
        measures["wemwbs_short"].mid_source
    )
    assert measures["ucla3_loneliness"].mid is None
    assert not measures["ons4_anxiety"].higher_is_better
    scores = pl.DataFrame(
        {
            "referral_id": [f"R{i}" for i in range(6)],
            "measure": ["wemwbs_short"] * 6,
            "person_id": [f"p{i}" for i in range(6)],
            "pcn_code": ["U1", "U1", "U1", "U2", "U2", None],
            "baseline": [15.0, 20.0, 18.0, 22.0, None, 17.0],
            "followup": [19.0, None, 19.0, 26.0, 25.0, None],
        }
    )
    out = outcome_scores(scores, [measures["wemwbs_short"]])
    row = out.filter(pl.col("pcn_code") == "ALL").row(0, named=True)
    assert (row["n_baseline"], row["n_paired"]) == (5, 3)
    assert row["completion_rate"] == pytest.approx(3 / 5)
    assert row["mean_change"] == pytest.approx((4 + 1 + 4) / 3)
    u1 = out.filter(pl.col("pcn_code") == "U1").row(0, named=True)
    assert (u1["n_baseline"], u1["n_paired"]) == (3, 2)

    # follow-up not yet due: recent baselines do not count against completion
    dated = scores.with_columns(
        pl.Series(
            "baseline_date",
            [
                dt.date(2026, 1, 1),
                dt.date(2026, 9, 1),
                dt.date(2026, 1, 1),
                dt.date(2026, 4, 5),
                None,
                dt.date(2026, 4, 4),
            ],
        )
    )
    due = outcome_scores(dated, [measures["wemwbs_short"]], extract_date=ED)
    row = due.filter(pl.col("pcn_code") == "ALL").row(0, named=True)
    # due = baseline on or before 2026-04-05 (210 days before the extract date): R3 on the
    # day is due; R1 (2026-09-01) is not; R4 has no baseline at all
    assert row["n_not_yet_due"] == 1
    assert (row["n_baseline"], row["n_paired"]) == (4, 3)


# ---------------------------------------------------------------------------------------
# a tiny warehouse


def _table(con, name, df: pl.DataFrame):
    con.register("_t", df)
    con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _t")
    con.unregister("_t")


def _caseload_warehouse():
    con = duckdb.connect()
    for s in ("staging", "marts"):
        con.execute(f"CREATE SCHEMA {s}")
    people = ["a", "b", "c", "d", "e"]
    pcn = {"a": "C1", "b": "C1", "c": "C1", "d": "C2", "e": "C2"}
    _table(
        con,
        "staging.practices",
        pl.DataFrame({"practice_code": ["C1", "C2"], "pcn_code": ["U00001", "U00002"]}),
    )
    _table(
        con,
        "staging.gp_patients",
        pl.DataFrame(
            {
                "nhs_number": [f"n{p}" for p in people],
                "sex": ["F", "M", "F", "M", "F"],
                "date_of_birth": [dt.date(1960, 1, 1)] * 5,
                "practice_code": [pcn[p] for p in people],
                "registration_start": [dt.date(2000, 1, 1)] * 5,
                "registration_end": [None] * 5,
                "date_of_death": [None] * 5,
            },
            schema_overrides={"registration_end": pl.Date, "date_of_death": pl.Date},
        ),
    )
    _table(
        con,
        "marts.person_identity",
        pl.DataFrame({"person_id": people, "nhs_number": [f"n{p}" for p in people]}),
    )
    _table(
        con,
        "marts.patient_measures",
        pl.DataFrame(
            {
                "person_id": people,
                "pcn_code": [{"C1": "U00001", "C2": "U00002"}[pcn[p]] for p in people],
                "imd2019_quintile": [1] * 5,
                "ltc_count": [0] * 5,
                "efi_category": ["fit"] * 5,
            }
        ),
    )
    d = dt.date
    refs = [
        # referral_id, person, date, source, reasons, attempts, first contact, status
        ("R1", "a", d(2026, 9, 3), "gp", "isolation;housing", 2, d(2026, 9, 10), "discharged"),
        ("R2", "b", d(2026, 9, 20), "self", "isolation", 6, None, "unable_to_contact"),
        ("R3", "c", d(2026, 9, 25), "gp", "finance_debt", 1, d(2026, 9, 26), "active"),
        ("R4", "d", d(2026, 10, 2), "police", "mental_health", 0, None, "waiting"),
        ("R5", "e", d(2026, 10, 5), "gp", "mental_health;other", 3, d(2026, 10, 15), "declined"),
        ("R6", "a", d(2026, 10, 20), "gp", "housing", 0, None, "waiting"),
        ("R7", "d", d(2025, 6, 1), "gp", "isolation", 1, d(2025, 6, 2), "discharged"),
    ]
    _table(
        con,
        "staging.sp_referrals",
        pl.DataFrame(
            refs,
            schema=[
                "referral_id",
                "nhs_number",
                "referral_date",
                "source",
                "reasons",
                "contact_attempts",
                "first_contact_date",
                "status",
            ],
            orient="row",
        ).with_columns((pl.lit("n") + pl.col("nhs_number")).alias("nhs_number")),
    )
    # R4's person has a booked social prescriber session; R6's person only a booked GP one
    _table(
        con,
        "staging.gp_appointments",
        pl.DataFrame(
            {
                "nhs_number": ["nd", "na", "na"],
                "appointment_date": [d(2026, 11, 8), d(2026, 11, 9), d(2026, 9, 10)],
                "status": ["booked", "booked", "attended"],
                "staff_role": ["social_prescriber", "gp", "social_prescriber"],
            }
        ),
    )
    _table(
        con,
        "marts.cohort_members",
        pl.DataFrame(
            {
                "cohort_id": ["ppn_non_engagers"] * 4 + ["frailty"],
                "person_id": ["a", "b", "c", "x", "d"],
                "rank": [1, 2, 3, 4, 1],
                "reasons": [""] * 5,
            }
        ),
    )
    build_people(con, ED)
    return con


def _get(cm: pl.DataFrame, pcn, month, dim, cat):
    r = cm.filter(
        (pl.col("pcn_code") == pcn)
        & (pl.col("month") == month)
        & (pl.col("dimension") == dim)
        & (pl.col("category") == cat)
    )
    return r.row(0, named=True) if r.height else None


def test_caseload_counts_on_a_hand_made_caseload():
    con = _caseload_warehouse()
    cm = caseload_monthly(con)
    sep, oct_ = dt.date(2026, 9, 1), dt.date(2026, 10, 1)
    u1 = "U00001"
    assert _get(cm, u1, sep, "referrals", "all")["n"] == 3
    assert _get(cm, u1, sep, "source", "gp")["n"] == 2
    assert _get(cm, u1, sep, "source", "self")["n"] == 1
    assert _get(cm, u1, sep, "source", "gp")["denominator"] == 3
    assert _get(cm, u1, sep, "reason", "isolation")["n"] == 2
    assert _get(cm, u1, sep, "reason", "housing")["n"] == 1
    assert _get(cm, u1, sep, "status", "seen_and_discharged")["n"] == 1
    assert _get(cm, u1, sep, "status", "unable_to_contact")["n"] == 1
    assert _get(cm, u1, sep, "contact_attempts", "6+")["n"] == 1
    assert _get(cm, u1, sep, "contact_attempts", "mean")["value"] == pytest.approx(3.0)
    # contacted: R1 after 7 days, R3 after 1 day
    assert _get(cm, u1, sep, "days_to_first_contact", "mean")["value"] == pytest.approx(4.0)
    assert _get(cm, u1, sep, "days_to_first_contact", "mean")["n"] == 2
    # October in U00001: R6 waiting, only a GP appointment booked -> still waiting
    assert _get(cm, u1, oct_, "status", "waiting")["n"] == 1
    assert _get(cm, u1, oct_, "status", "booked") is None
    # October in U00002: R4 waiting with a booked social prescriber session -> booked
    assert _get(cm, "U00002", oct_, "status", "booked")["n"] == 1
    assert _get(cm, "U00002", oct_, "status", "declined")["n"] == 1
    assert _get(cm, "U00002", oct_, "reason", "mental_health")["n"] == 2
    assert _get(cm, "U00002", dt.date(2025, 6, 1), "referrals", "all")["n"] == 1
    assert cm.filter(pl.col("dimension") == "referrals")["n"].sum() == 7

    f = outreach_funnel(con, ED)
    row = f.filter((pl.col("cohort_id") == "ppn_non_engagers") & (pl.col("pcn_code") == "ALL"))
    # a, b, c referred in the last year; a and c contacted; a (discharged R1), c (active) engaged
    assert row.select("identified", "referred", "contacted", "engaged").row(0) == (4, 3, 2, 2)
    fr = f.filter((pl.col("cohort_id") == "frailty") & (pl.col("pcn_code") == "U00002"))
    # d's only recent referral (R4) is waiting: referred, not contacted; R7 is too old
    assert fr.select("identified", "referred", "contacted", "engaged").row(0) == (1, 1, 0, 0)


def test_social_prescribing_treated_set_and_monthly_use():
    con = _caseload_warehouse()
    # compiled from data/interventions/social_prescribing.yaml (event sp_first_contact)
    assert build_interventions(con, treated_sql(con, ED), ED) == 4
    got = dict(
        con.execute("SELECT person_id, index_date FROM marts.impact_interventions").fetchall()
    )
    # earliest first contact per person; people never contacted are not treated
    assert got == {
        "a": dt.date(2026, 9, 10),
        "c": dt.date(2026, 9, 26),
        "d": dt.date(2025, 6, 2),
        "e": dt.date(2026, 10, 15),
    }
    con.execute(
        "CREATE TABLE staging.sus_ecds AS SELECT 'na' AS nhs_number, "
        "TIMESTAMP '2026-08-03 10:00:00' AS arrival_datetime"
    )
    con.execute(
        "CREATE TABLE staging.sus_apc AS SELECT * FROM (VALUES "
        "('na', DATE '2026-08-04', DATE '2026-08-09', '21'), "
        "('na', DATE '2026-08-20', DATE '2026-08-22', '11'), "
        "('na', DATE '2026-08-25', NULL, '2A'), "
        "('na', DATE '2026-08-02', DATE '2026-08-04', '2B')) t(nhs_number, admission_date, "
        "discharge_date, "
        "admission_method)"
    )
    con.execute(
        "INSERT INTO staging.gp_appointments VALUES ('na', DATE '2026-08-01', 'attended', 'gp'), "
        "('na', DATE '2026-08-05', 'attended', 'care_coordinator')"
    )
    build_monthly_use(con, ED)
    rows = con.execute(
        "SELECT month, gp_attended, ae_attendances, emergency_admissions, bed_days "
        "FROM marts.impact_monthly_use WHERE person_id = 'a' ORDER BY month"
    ).fetchall()
    # the social prescriber session of 2026-09-10 is the intervention, not practice use (a
    # care coordinator's is); the elective spell is not counted; the 2B transfer in has no
    # sending spell in the extract, so as far as the data shows it began the episode and is
    # an emergency admission (phm.hospital: a 2B continuing a stay would not be); the open
    # spell runs to the extract date (68 days)
    assert rows == [(dt.date(2026, 8, 1), 2, 1, 3, 5 + 2 + 68)]


def test_emergency_admission_methods():
    con = duckdb.connect()
    for code, emergency in [
        ("21", True),
        ("2a", True),
        ("28", True),
        ("2B", True),
        ("11", False),
        ("99", False),
    ]:
        assert con.execute(f"SELECT {emergency_admission_sql(repr(code))}").fetchone()[0] is (
            emergency
        )
    # a 2B transfer is an emergency spell (its bed days count); whether it starts a new
    # admission is phm.hospital's spells view (emergency_admission), tested in the cohort rules
    assert "26" not in EMERGENCY_ADMISSION_METHODS


# ---------------------------------------------------------------------------------------
# matching and DiD on a constructed panel with a known effect


MONTHS = [dt.date(2023 + (m // 12), m % 12 + 1, 1) for m in range(46)]  # 2023-01 .. 2026-10


def _constructed(seed=7, n=12000, effect=0.3):
    """Everyone has a stable GP rate; in any month, independently, a bad spell may triple it
    (so a high month is mostly noise and use falls back afterwards: regression to the
    mean). People are referred in the month after a month with 4 or more visits (at their
    peak); referral removes ``effect`` of their visits for 12 months. Returns the warehouse
    and the true effect per window, computed from the counterfactual counts."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(2.0, 0.5, n)
    shock = np.where(rng.random((n, len(MONTHS))) < 0.1, 3.0, 1.0)
    y0 = rng.poisson(lam[:, None] * shock)
    # referral: the first month in 2024-03..2025-10 after a month with >= 4 visits (prob 0.02)
    window = np.arange(MONTHS.index(dt.date(2024, 3, 1)), MONTHS.index(dt.date(2025, 10, 1)) + 1)
    cand = (y0[:, window - 1] >= 4) & (rng.random((n, len(window))) < 0.02)
    treated = cand.any(axis=1)
    idx = np.where(treated, window[np.argmax(cand, axis=1)], -1)
    keep = np.ones_like(y0, dtype=float)
    m = np.arange(len(MONTHS))[None, :]
    post = treated[:, None] & (m >= idx[:, None]) & (m < idx[:, None] + 12)
    keep[post] = 1 - effect
    y1 = rng.binomial(y0, keep)
    # 5% leave the practice part-way
    censor = np.full(n, ED, dtype=object)
    for i in np.where(rng.random(n) < 0.05)[0]:
        censor[i] = MONTHS[rng.integers(30, 46)] + dt.timedelta(days=14)
    ids = np.array([f"p{i:05d}" for i in range(n)])
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    _table(
        con,
        "marts.impact_people",
        pl.DataFrame(
            {
                "person_id": ids,
                "sex": np.where(rng.random(n) < 0.5, "F", "M"),
                "birth_month": [dt.date(1970, 1, 1)] * n,
                "registration_start": [dt.date(2010, 1, 1)] * n,
                "censor_date": list(censor),
                "pcn_code": ["U1"] * n,
                "imd_quintile": [2] * n,
                "ltc_count": [1] * n,
                "efi_category": ["fit"] * n,
            }
        ),
    )
    r, c = np.nonzero(y1)
    _table(
        con,
        "marts.impact_monthly_use",
        pl.DataFrame(
            {
                "person_id": ids[r],
                "month": [MONTHS[j] for j in c],
                "gp_attended": y1[r, c].astype(np.int32),
                "ae_attendances": np.zeros(len(r), np.int32),
                "emergency_admissions": np.zeros(len(r), np.int32),
                "bed_days": np.zeros(len(r), np.int32),
            }
        ),
    )
    t = np.where(treated)[0]
    _table(
        con,
        "_treated",
        pl.DataFrame(
            {
                "person_id": ids[t],
                "intervention": ["sp"] * len(t),
                "index_date": [MONTHS[idx[i]] + dt.timedelta(days=14) for i in t],
            }
        ),
    )
    build_interventions(con, "SELECT * FROM _treated", ED)
    # true effect per treated person and window over their observed follow-up
    truth = {}
    for w in (6, 12):
        vals = []
        for i in t:
            obs = sum(
                1
                for j in range(idx[i], min(idx[i] + w, len(MONTHS)))
                if MONTHS[j].replace(day=28) < censor[i]
            )
            if obs == 0:
                continue
            sl = slice(idx[i], idx[i] + obs)
            vals.append((y1[i, sl].sum() - y0[i, sl].sum()) * w / obs)
        truth[w] = float(np.mean(vals))
    return con, truth


@pytest.fixture(scope="module")
def constructed():
    con, truth = _constructed()
    res = match_intervention(con, "sp", k=1)
    _table(con, PAIRS_TABLE, res.pairs)
    est = estimate_impact(con, "sp", n_boot=400, seed=1)
    return con, truth, res, est


def test_matching_balances_the_peak(constructed):
    _, _, res, _ = constructed
    s = res.summary["sp"]
    assert s["treated"] > 100 and s["matched"] == s["eligible"] and s["unmatched"] == 0
    b = {r["covariate"]: r for r in res.balance.to_dicts()}
    # treated people are selected at a peak: badly unbalanced before matching
    assert b["gp_attended_m1"]["smd_before"] > 0.5
    assert b["gp_attended_pre12"]["smd_before"] > 0.1
    for cov in ("gp_attended_m1", "gp_attended_m2", "gp_attended_pre12", "female"):
        assert abs(b[cov]["smd_after"]) < 0.1, cov
    # risk-set sampling: no comparator is treated at or before the treated person's index
    con = constructed[0]
    bad = con.execute(
        f"SELECT count(*) FROM {PAIRS_TABLE} p JOIN marts.impact_interventions t "
        "ON t.person_id = p.comparator_person_id AND t.index_month <= p.index_month"
    ).fetchone()[0]
    assert bad == 0


def test_did_recovers_the_effect_and_naive_does_not(constructed):
    _, truth, _, est = constructed
    for w in (6, 12):
        rows = {
            r["method"]: r
            for r in est.filter(
                (pl.col("outcome") == "gp_attended") & (pl.col("window_months") == w)
            ).to_dicts()
        }
        did, naive = rows["matched_did"], rows["before_after"]
        assert truth[w] < 0
        assert did["ci_lower"] <= truth[w] <= did["ci_upper"], (w, truth[w], did)
        # the naive estimate includes regression to the mean: far more negative than the truth
        assert naive["ci_upper"] < truth[w]
        assert abs(did["estimate"] - truth[w]) < 0.3 * abs(naive["estimate"] - truth[w])
        assert did["n_comparison"] > 0 and naive["n_comparison"] == 0


def test_estimates_are_deterministic(constructed):
    con, _, _, est = constructed
    again = estimate_impact(con, "sp", n_boot=400, seed=1)
    assert again.equals(est)
    m = match_intervention(con, "sp", k=1)
    assert m.pairs.equals(constructed[2].pairs)


def test_nearest_matches_sklearn():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(3)
    xc, xt = rng.normal(size=(300, 5)), rng.normal(size=(40, 5))
    for k in (1, 3):
        d, i = nearest(xt, xc, k)
        d2, i2 = NearestNeighbors(n_neighbors=k).fit(xc).kneighbors(xt)
        assert np.array_equal(i, i2)
        assert np.allclose(d, d2)
    # ties go to the lower index
    xc_tied = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert nearest(np.zeros((1, 2)), xc_tied, 1)[1].tolist() == [[0]]
    assert nearest(np.zeros((1, 2)), xc_tied, 2)[1].tolist() == [[0, 1]]


def test_bootstrap_is_seeded():
    x = np.arange(50, dtype=float)
    assert bootstrap_mean_ci(x, 200, seed=5) == bootstrap_mean_ci(x, 200, seed=5)
    est, lo, hi = bootstrap_mean_ci(x, 2000, seed=5)
    assert est == pytest.approx(24.5) and lo < est < hi


# ---------------------------------------------------------------------------------------
# the report

HOSTILE = "<img src=x onerror=alert(1)>"


def _report_inputs():
    month = dt.date(2026, 10, 1)
    caseload = pl.DataFrame(
        {
            "pcn_code": ["U1"] * 3,
            "month": [month] * 3,
            "dimension": ["referrals", "source", "source"],
            "category": ["all", "gp", HOSTILE],
            "n": [40, 37, 3],
            "denominator": [40, 40, 40],
            "value": [None, None, None],
        },
        schema_overrides={"value": pl.Float64},
    )
    funnel = pl.DataFrame(
        {
            "cohort_id": [HOSTILE],
            "pcn_code": ["U1"],
            "identified": [120],
            "referred": [30],
            "contacted": [5],
            "engaged": [0],
        }
    )
    est = pl.DataFrame(
        {
            "intervention": ["sp$x^2$", "sp$x^2$", "tiny"],
            "outcome": ["gp_attended"] * 3,
            "window_months": [12, 12, 12],
            "method": ["before_after", "matched_did", "matched_did"],
            "estimate": [-2.0, -0.4, -9.99],
            "ci_lower": [-2.5, -0.9, -12.0],
            "ci_upper": [-1.5, 0.1, -8.0],
            "n_treated": [200, 190, 6],
            "n_comparison": [0, 180, 6],
            "unit": ["appointments per person per 12 months"] * 3,
            "mean_before_treated": [6.0, 6.0, 1.0],
            "mean_after_treated": [4.0, 4.0, 1.0],
            "mean_before_comparison": [None, 5.9, 1.0],
            "mean_after_comparison": [None, 4.3, 1.0],
        }
    )
    scores = outcome_scores(
        pl.DataFrame(
            {
                "referral_id": [f"R{i}" for i in range(14)],
                "measure": ["wemwbs_short"] * 14,
                "person_id": [f"p{i}" for i in range(14)],
                "pcn_code": ["U1"] * 14,
                "baseline": [15.0 + i % 5 for i in range(14)],
                "followup": [18.0 + i % 4 for i in range(12)] + [None, None],
            }
        ),
        [m for m in load_outcome_measures() if m.id == "wemwbs_short"],
    )
    return caseload, funnel, est, scores


def test_report_is_self_contained_escaped_and_disclosure_controlled(tmp_path):
    caseload, funnel, est, scores = _report_inputs()
    policy = DisclosurePolicy()
    kw = dict(
        pcns={"U1": HOSTILE},
        caseload=caseload,
        funnel=funnel,
        estimates=est,
        outcome_scores=scores,
        match_summary={"sp": {"treated": 200, "eligible": 195, "matched": 190, "unmatched": 5}},
        policy=policy,
    )
    # a direct-care export already in the folder, listed in its manifest
    (tmp_path / "a" / "U1").mkdir(parents=True)
    (tmp_path / "a" / "U1" / "risk_register.csv").write_bytes(b"x\n1\n")
    add_to_manifest(tmp_path / "a" / "U1", ED, "U1", {"risk_register.csv": (1, b"x\n1\n")})
    write_pcn_reports(tmp_path / "a", ED, **kw)
    write_pcn_reports(tmp_path / "b", ED, **kw)
    manifest = json.loads((tmp_path / "a" / "U1" / "manifest.json").read_text())
    assert manifest["pcn_code"] == "U1" and manifest["extract_date"] == ED.isoformat()
    assert set(manifest["files"]) == {
        "risk_register.csv",
        "impact_report.html",
        "impact_caseload.csv",
        "impact_outreach_funnel.csv",
        "impact_estimates.csv",
        "impact_outcome_scores.csv",
    }
    for name, entry in manifest["files"].items():
        data = (tmp_path / "a" / "U1" / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["files"]["impact_estimates.csv"]["rows"] == len(
        pl.read_csv(tmp_path / "a" / "U1" / "impact_estimates.csv")
    )
    page = (tmp_path / "a" / "U1" / "impact_report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert HOSTILE not in page and "onerror=alert(1)&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "regression to the mean" in page
    assert page.count('src="data:image/png;base64,') >= 2
    assert "http://" not in page and "https://" not in page
    # byte-identical on a second run
    for name in ("impact_report.html", "impact_estimates.csv", "impact_caseload.csv"):
        assert (tmp_path / "a" / "U1" / name).read_bytes() == (
            tmp_path / "b" / "U1" / name
        ).read_bytes()
    # disclosure: 3 and 5 are suppressed, 37 rounded, the 6-person estimate hidden
    fun = pl.read_csv(tmp_path / "a" / "U1" / "impact_outreach_funnel.csv", infer_schema=False)
    assert fun.row(0, named=True)["contacted"] == "*"
    assert fun.row(0, named=True)["engaged"] == "0"
    cl = pl.read_csv(tmp_path / "a" / "U1" / "impact_caseload.csv", infer_schema=False)
    gp = cl.filter(pl.col("category") == "gp").row(0, named=True)
    # the sources add up to the 40 referrals: the suppressed 3 takes gp (37) with it
    assert gp["n"] == "*" and gp["share"] is None
    hostile = cl.filter(pl.col("category") == HOSTILE).row(0, named=True)
    assert hostile["n"] == "*" and hostile["share"] is None
    e = pl.read_csv(tmp_path / "a" / "U1" / "impact_estimates.csv", infer_schema=False)
    tiny = e.filter(pl.col("intervention") == "tiny").row(0, named=True)
    assert tiny["estimate"] is None and tiny["n_treated"] == "*"
    assert "-9.99" not in page and "9.99" not in page
    o = pl.read_csv(tmp_path / "a" / "U1" / "impact_outcome_scores.csv", infer_schema=False)
    row = o.filter(pl.col("pcn_code") == "U1").row(0, named=True)
    assert row["n_baseline"] == "15" and row["n_paired"] == "10"  # 14 -> 15, 12 -> 10
    assert float(row["completion_rate"]) == pytest.approx(12 / 14, abs=1e-4)


def test_report_hides_outcome_figures_under_ten_people():
    caseload, funnel, est, _ = _report_inputs()
    scores = outcome_scores(
        pl.DataFrame(
            {
                "referral_id": ["R1", "R2", "R3"],
                "measure": ["wemwbs_short"] * 3,
                "person_id": ["a", "b", "c"],
                "pcn_code": ["U1"] * 3,
                "baseline": [10.0, 11.0, 12.0],
                "followup": [17.0, 17.5, 19.25],
            }
        ),
        [m for m in load_outcome_measures() if m.id == "wemwbs_short"],
    )
    from phm.impact.report import caseload_table, estimates_table, funnel_table, outcome_table

    page = render_report(
        pcn_code="U1",
        pcn_name="North",
        extract_date=ED,
        caseload=caseload_table(caseload, "U1"),
        caseload_raw=caseload,
        funnel=funnel_table(funnel, "U1"),
        estimates=estimates_table(est),
        outcomes_pcn=outcome_table(scores, "U1"),
        outcomes_all=outcome_table(scores, "ALL"),
    )
    assert "17.58" not in page and "6.92" not in page  # mean follow-up and mean change of 3


# ---------------------------------------------------------------------------------------
# interventions as data (data/interventions/, phm.definitions.interventions)


def test_intervention_definitions_load_and_disabled_ones_say_why():
    defs = {d.id: d for d in load_interventions()}
    assert set(defs) >= {"social_prescribing", "structured_medication_review", "mdt_review"}
    sp = defs["social_prescribing"]
    assert sp.enabled and sp.who.kind == "event" and sp.who.event == "sp_first_contact"
    assert sp.index_date == "earliest"
    for iid in ("structured_medication_review", "mdt_review"):
        assert not defs[iid].enabled and "code list" in defs[iid].note


def _write(tmp_path, name, body):
    path = tmp_path / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_intervention_definition_errors_name_the_field(tmp_path):
    events = load_events()
    head = "title: t\ndescription: d\nsource: s\n"
    cases = {
        "a": (f"id: a\n{head}enabled: true\n", "who"),
        "b": (f"id: b\n{head}enabled: false\n", "note"),
        "c": (f"id: c\n{head}enabled: true\nwho:\n  measure: age\n  op: '>'\n  value: 1\n", "who"),
        "d": (f"id: d\n{head}enabled: true\nwho:\n  event: no_such_event\n", "who"),
        "e": (
            f"id: e\n{head}enabled: true\nwho: {{event: sp_first_contact}}\nindex_date: x\n",
            "index_date",
        ),
        "f": (f"id: other\n{head}enabled: true\nwho: {{event: sp_first_contact}}\n", "id"),
        "g": (f"id: g\n{head}enabled: true\nwho: \"status = 'x'\"\n", "who"),
    }
    for name, (body, field) in cases.items():
        with pytest.raises(DefinitionError) as e:
            load_intervention(_write(tmp_path, name, body), events)
        assert e.value.field_path.startswith(field), (name, e.value)


def test_intervention_latest_date_window_and_event_filter(tmp_path):
    """index_date latest, within_days and an event's `where` rule, compiled to SQL."""
    con = _caseload_warehouse()
    events = dict(load_events())
    events_file = tmp_path / "events.yaml"
    events_file.write_text(
        "events:\n  sp_discharged_contact:\n    description: contact on a discharged referral\n"
        "    table: staging.sp_referrals\n    date: first_contact_date\n"
        "    where:\n      column: status\n      op: '='\n      value: discharged\n",
        encoding="utf-8",
    )
    events.update(load_events(events_file))
    body = (
        "id: x\ntitle: t\ndescription: d\nsource: s\nenabled: true\n"
        "who:\n  event: {event}\n  within_days: {days}\nindex_date: {which}\n"
    )
    rows = {}
    for ev, days, which in [
        ("sp_first_contact", 3650, "latest"),
        ("sp_first_contact", 60, "earliest"),
        ("sp_discharged_contact", 3650, "earliest"),
    ]:
        d = load_intervention(
            _write(tmp_path, "x", body.format(event=ev, days=days, which=which)), events
        )
        sql = compile_treated_sql([d], ED, table_columns_of(con), events)
        rows[(ev, days, which)] = dict(
            con.execute(f"SELECT person_id, index_date FROM ({sql}) ORDER BY 1").fetchall()
        )
    referrals = con.execute(
        "SELECT i.person_id, r.first_contact_date, r.status FROM staging.sp_referrals r "
        "JOIN marts.person_identity i USING (nhs_number) WHERE r.first_contact_date IS NOT NULL"
    ).fetchall()
    latest, earliest_60, discharged = {}, {}, {}
    for pid, d, status in referrals:
        latest[pid] = max(latest.get(pid, d), d)
        if d >= ED - dt.timedelta(days=59):
            earliest_60[pid] = min(earliest_60.get(pid, d), d)
        if status == "discharged":
            discharged[pid] = min(discharged.get(pid, d), d)
    assert rows[("sp_first_contact", 3650, "latest")] == latest
    assert rows[("sp_first_contact", 60, "earliest")] == earliest_60
    assert rows[("sp_discharged_contact", 3650, "earliest")] == discharged
    assert discharged and earliest_60 != latest  # the cases differ on this caseload


def test_no_enabled_intervention_gives_an_empty_treated_set():
    con = _caseload_warehouse()
    defs = [d for d in load_interventions() if not d.enabled]
    sql = compile_treated_sql(defs, ED, table_columns_of(con))
    assert build_interventions(con, sql, ED) == 0
