"""Warehouse checks beyond row validation (phm/quality.py, pipelines/checks.py): marts keys
unique, cohort sizes plausible against the previous delivery, freshness of the last run."""

from datetime import date

import dagster as dg
import duckdb
import pytest

from phm.quality import (
    COHORT_SIZE_HISTORY,
    MARTS_KEYS,
    cohort_sizes_plausible,
    key_report,
    marts_keys_unique,
    record_cohort_sizes,
    undeclared_marts_tables,
)
from pipelines.checks import FINAL_ASSETS, FRESHNESS_CHECKS

D1, D2, D3 = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)


@pytest.fixture
def con():
    con = duckdb.connect()
    for s in ("marts", "reports"):
        con.execute(f"CREATE SCHEMA {s}")
    return con


def test_unique_keys_pass_and_repeated_or_null_keys_are_counted(con):
    con.execute(
        "CREATE TABLE marts.ltc_registers AS SELECT * FROM (VALUES "
        "('a', 'AF'), ('a', 'CHD'), ('b', 'AF')) t(person_id, condition_id)"
    )
    key = MARTS_KEYS["marts.ltc_registers"]
    assert key == ("person_id", "condition_id")
    ok = key_report(con, "marts.ltc_registers", key)
    assert ok.passed and ok.rows == 3 and ok.duplicate_rows == 0

    con.execute("INSERT INTO marts.ltc_registers VALUES ('a', 'AF'), ('a', 'AF'), (NULL, 'AF')")
    bad = key_report(con, "marts.ltc_registers", key)
    assert not bad.passed
    assert bad.rows == 6 and bad.duplicate_rows == 3  # two repeats of (a, AF) and one null


def test_marts_keys_unique_checks_existing_tables_and_names_undeclared_ones(con):
    con.execute("CREATE TABLE marts.efi AS SELECT 'p' || range AS person_id FROM range(5)")
    con.execute("CREATE TABLE marts.something_new (x INT)")
    reports = marts_keys_unique(con)
    assert [(r.table, r.passed) for r in reports] == [("marts.efi", True)]
    assert undeclared_marts_tables(con) == ["marts.something_new"]
    con.execute("INSERT INTO marts.efi VALUES ('p1')")
    assert [r.duplicate_rows for r in marts_keys_unique(con)] == [1]


def _members(con, sizes: dict[tuple[str, str], int]):
    """marts.cohort_members and marts.patient_measures with ``sizes[(cohort, pcn)]`` members."""
    con.execute(
        "CREATE OR REPLACE TABLE marts.patient_measures (person_id VARCHAR, pcn_code VARCHAR)"
    )
    con.execute(
        "CREATE OR REPLACE TABLE marts.cohort_members (cohort_id VARCHAR, person_id VARCHAR)"
    )
    for (cohort, pcn), n in sizes.items():
        con.execute(
            "INSERT INTO marts.patient_measures SELECT ? || '-' || ? || '-' || range, ? "
            "FROM range(?)",
            [cohort, pcn, pcn, n],
        )
        con.execute(
            "INSERT INTO marts.cohort_members SELECT ?, ? || '-' || ? || '-' || range FROM range(?)",
            [cohort, cohort, pcn, n],
        )


def test_cohort_sizes_are_recorded_per_delivery_and_a_rerun_replaces_its_own(con):
    _members(con, {("frailty", "U1"): 30, ("frailty", "U2"): 40, ("carers", "U1"): 5})
    assert record_cohort_sizes(con, D1) == 3
    _members(con, {("frailty", "U1"): 31})
    record_cohort_sizes(con, D2)
    record_cohort_sizes(con, D2)  # a rerun of the same delivery
    rows = con.execute(
        f"SELECT extract_date, cohort_id, pcn_code, members FROM {COHORT_SIZE_HISTORY} ORDER BY ALL"
    ).fetchall()
    assert rows == [
        (D1, "carers", "U1", 5),
        (D1, "frailty", "U1", 30),
        (D1, "frailty", "U2", 40),
        (D2, "frailty", "U1", 31),
    ]


def test_first_delivery_and_steady_sizes_pass(con):
    _members(con, {("frailty", "U1"): 100, ("frailty", "U2"): 40})
    record_cohort_sizes(con, D1)
    first = cohort_sizes_plausible(con, D1)
    assert first.passed and first.previous_date is None and first.compared == 0
    _members(con, {("frailty", "U1"): 150, ("frailty", "U2"): 25})  # 1.5x and 0.625x
    record_cohort_sizes(con, D2)
    second = cohort_sizes_plausible(con, D2)
    assert second.passed and second.previous_date == D1 and second.compared == 2


def test_a_cohort_that_doubles_halves_or_empties_is_out_of_bounds(con):
    _members(
        con,
        {
            ("frailty", "U1"): 100,
            ("frailty", "U2"): 40,
            ("dementia", "U1"): 30,
            ("carers", "U1"): 8,
        },
    )
    record_cohort_sizes(con, D1)
    # frailty U1 more than doubles, U2 falls below half, dementia empties, carers (small) moves
    # from 8 to 3 but neither size reaches the minimum; a new cohort is not judged
    _members(
        con, {("frailty", "U1"): 201, ("frailty", "U2"): 19, ("carers", "U1"): 3, ("new", "U1"): 90}
    )
    record_cohort_sizes(con, D2)
    report = cohort_sizes_plausible(con, D2)
    assert not report.passed
    moved = {(c.cohort_id, c.pcn_code): (c.previous, c.current) for c in report.out_of_bounds}
    assert moved == {
        ("frailty", "U1"): (100, 201),
        ("frailty", "U2"): (40, 19),
        ("dementia", "U1"): (30, 0),
    }
    # compared against the latest earlier delivery, not the first
    _members(con, {("frailty", "U1"): 210, ("frailty", "U2"): 20, ("new", "U1"): 95})
    record_cohort_sizes(con, D3)
    third = cohort_sizes_plausible(con, D3)
    assert third.previous_date == D2 and third.passed
    # wider bounds accept the D2 move except the emptied cohort
    wide = cohort_sizes_plausible(con, D2, low=0.1, high=3.0)
    assert [(c.cohort_id, c.current) for c in wide.out_of_bounds] == [("dementia", 0)]


def test_bounds_must_bracket_one(con):
    with pytest.raises(ValueError, match="bounds"):
        cohort_sizes_plausible(con, D1, low=1.5, high=2.0)


def _freshness_results(instance) -> dict[str, dg.AssetCheckEvaluation]:
    """Evaluate the freshness checks as the sensor does (a run of the checks alone)."""
    job = dg.define_asset_job("freshness", selection=dg.AssetSelection.checks(*FRESHNESS_CHECKS))
    defs = dg.Definitions(
        assets=[dg.AssetSpec(k) for k in FINAL_ASSETS], asset_checks=FRESHNESS_CHECKS, jobs=[job]
    )
    result = defs.resolve_job_def("freshness").execute_in_process(instance=instance)
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def test_freshness_warns_without_a_recent_run_and_passes_after_one():
    with dg.instance_for_test() as instance:
        before = _freshness_results(instance)
        assert set(before) == {k.to_user_string() for k in FINAL_ASSETS}
        assert all(not e.passed for e in before.values())
        assert all(e.severity == dg.AssetCheckSeverity.WARN for e in before.values())
        for key in FINAL_ASSETS:
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        after = _freshness_results(instance)
        assert all(e.passed for e in after.values())
