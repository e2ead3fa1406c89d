"""The impact stage against the generator's truth (phm/synth/impact.py, impact_truth.json).

One generated delivery (50,000 patients, seed 5: about a thousand people with a first contact
and 6-month windows) goes through ingest, validation, the patient measures and the impact
stage (domain functions, no Dagster). The generator refers people at a temporary peak of
need and knows the true effect of social prescribing, so:

- the matched difference-in-differences 95% interval covers the true effect for GP
  appointments and emergency admissions, at 6 and 12 months;
- the naive before/after estimate of GP appointments is further from the truth than the
  matched one (regression to the mean);
- the paired outcome-score change recovers the true mean change (see
  :func:`expected_total_change`).
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import polars as pl
import pytest

from phm.contract import TABLE_NAMES
from phm.delivery import open_delivery
from phm.ingest import load_raw
from phm.measures import build_patient_measures
from phm.paths import sidecar_dir
from phm.synth import generate
from phm.validate import validate_table, warehouse_reference_keys
from phm.warehouse import write_table

ED = dt.date(2026, 11, 1)
KEY = b"0123456789abcdef0123456789abcdef0123"
#: impact_truth.json key -> marts.impact_estimates outcome
OUTCOMES = {"gp_appointments": "gp_attended", "emergency_admissions": "emergency_admissions"}


@pytest.fixture(scope="module")
def delivery(tmp_path_factory):
    from phm.impact.pipeline import (
        build_estimates,
        build_matches,
        build_outcome_scores,
        build_panels,
    )

    root = tmp_path_factory.mktemp("impact_truth")
    generate(root, patients=50_000, seed=5, extract_date=ED)
    truth = json.loads((sidecar_dir(root, ED.isoformat()) / "impact_truth.json").read_text())
    con = duckdb.connect()
    load_raw(con, open_delivery(root))
    for table in TABLE_NAMES:
        raw = con.execute(f"SELECT * FROM raw.{table}").pl()
        result = validate_table(table, raw, ED, warehouse_reference_keys(con, table))
        write_table(con, f"staging.{table}", result.staging)
    build_patient_measures(con, ED, key=KEY)
    build_panels(con, ED)
    summary = build_matches(con)
    build_estimates(con)
    build_outcome_scores(con, ED)
    estimates = con.execute("SELECT * FROM marts.impact_estimates").pl()
    scores = con.execute("SELECT * FROM marts.impact_outcome_scores WHERE pcn_code = 'ALL'").pl()
    return truth, summary, estimates, scores


def _row(estimates: pl.DataFrame, outcome: str, window: int, method: str) -> dict:
    rows = estimates.filter(
        (pl.col("intervention") == "social_prescribing")
        & (pl.col("outcome") == outcome)
        & (pl.col("window_months") == window)
        & (pl.col("method") == method)
    ).to_dicts()
    assert len(rows) == 1
    return rows[0]


def test_enough_people_were_treated_and_matched(delivery):
    truth, summary, _, _ = delivery
    sp = summary["social_prescribing"]
    assert sp["matched"] >= 500
    assert sp["treated"] == sp["eligible"] + sp["not_eligible"]
    assert sp["eligible"] == sp["matched"] + sp["unmatched"]
    # the truth's 6-month population is of the same size as the treated (people whose
    # window ended by the extract date; ours also counts windows still running)
    assert truth["n"]["gp_appointments_6m"] <= sp["treated"]


@pytest.mark.parametrize("window", [6, 12])
@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_matched_interval_covers_the_true_effect(delivery, outcome, window):
    truth, _, estimates, _ = delivery
    true = truth["social_prescribing"][f"{outcome}_{window}m"]
    m = _row(estimates, OUTCOMES[outcome], window, "matched_did")
    assert m["n_treated"] >= 100
    assert m["ci_lower"] <= true <= m["ci_upper"], (outcome, window, true, m)


@pytest.mark.parametrize("window", [6, 12])
def test_naive_before_after_is_further_from_the_truth(delivery, window):
    truth, _, estimates, _ = delivery
    true = truth["social_prescribing"][f"gp_appointments_{window}m"]
    naive = _row(estimates, "gp_attended", window, "before_after")["estimate"]
    matched = _row(estimates, "gp_attended", window, "matched_did")["estimate"]
    assert abs(naive - true) > abs(matched - true), (naive, matched, true)


def expected_total_change(truth: dict, measure: str) -> float:
    """The expected paired change (follow-up minus baseline) of the referred people.

    impact_truth.json gives only the part *caused* by social prescribing (expected score with
    minus without it, rounding and clipping included). The paired change of the referred
    people also holds the recovery of the referral-time dip: the baseline is ``dip`` worse than
    the person's usual level and ``need_dip_remaining_6m`` of it is left at follow-up
    (docs/synthetic-data.md), so it adds ``dip * (1 - remaining)`` in the better direction.
    Rounding and clipping to the scale make this an approximation (the dip part ignores
    them), checked against the interval below."""
    params = truth["parameters"]
    dip = params["measures"][measure]["dip"]
    better = -1.0 if measure in ("ons4_anxiety", "ucla3_loneliness") else 1.0
    return truth["social_prescribing"][measure] + better * dip * (
        1.0 - params["need_dip_remaining_6m"]
    )


MEASURES = [
    "ons4_life_satisfaction",
    "ons4_happiness",
    "ons4_anxiety",
    "ucla3_loneliness",
    "wemwbs_short",
]


@pytest.mark.parametrize("measure", MEASURES)
def test_outcome_score_change_recovers_the_true_mean_change(delivery, measure):
    truth, _, _, scores = delivery
    row = scores.filter(pl.col("measure") == measure).to_dicts()
    assert len(row) == 1
    r = row[0]
    expected = expected_total_change(truth, measure)
    assert r["ci_lower"] <= expected <= r["ci_upper"], (measure, expected, r)
    # the paired change is not the effect of social prescribing: it overstates it
    caused = truth["social_prescribing"][measure]
    assert abs(r["mean_change"]) > abs(caused)
