"""Plausibility gates (docs/operations.md): an implausible share of quarantined rows fails the
delivery with a message naming table, share and top rules; patients whose practice row was
quarantined are listed for the data team and counted in the data-quality report."""

from __future__ import annotations

import gc

import duckdb
import polars as pl
import pytest
from factory import EXTRACT_DATE, NHS, default_rows, make_delivery, remanifest
from modulus11 import check_digit

from phm.contract import TABLE_NAMES, TABLES
from phm.validate import (
    QuarantineGateError,
    check_quarantine_share,
    max_quarantine_share,
    validate_table,
)
from pipelines.runner import PipelineFailed, run_pipeline


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", "0123456789abcdef0123456789abcdef0123")
    monkeypatch.delenv("PHM_MAX_QUARANTINE_SHARE", raising=False)


def _raw(table: str, rows: list[dict]) -> pl.DataFrame:
    cols = TABLES[table].column_names
    return pl.DataFrame(
        [{c: None if r.get(c) is None else str(r[c]) for c in cols} for r in rows],
        schema=dict.fromkeys(cols, pl.String),
    )


def _patients(n_bad: int, n: int = 40) -> pl.DataFrame:
    base = default_rows()["gp_patients"][0]
    numbers = []
    stem = 999000100
    while len(numbers) < n:
        c = check_digit(str(stem))
        if c is not None:
            numbers.append(f"{stem}{c}")
        stem += 1
    rows = [
        {**base, "nhs_number": nhs, "sex": "X" if i < n_bad else "F"}
        for i, nhs in enumerate(numbers)
    ]
    return _raw("gp_patients", rows)


def test_gate_limit_defaults_to_5_percent_and_is_configurable(monkeypatch):
    assert max_quarantine_share() == 0.05
    monkeypatch.setenv("PHM_MAX_QUARANTINE_SHARE", "0.2")
    assert max_quarantine_share() == 0.2
    monkeypatch.setenv("PHM_MAX_QUARANTINE_SHARE", "5")
    with pytest.raises(ValueError, match="between 0 and 1"):
        max_quarantine_share()


def test_gate_passes_at_the_limit_and_fails_above_it_naming_table_share_and_rules():
    refs = {"practices": pl.Series(["C82001"])}
    at_limit = validate_table("gp_patients", _patients(2), EXTRACT_DATE, refs)  # 2/40 = 5%
    assert check_quarantine_share(at_limit) == pytest.approx(0.05)
    above = validate_table("gp_patients", _patients(3), EXTRACT_DATE, refs)  # 7.5%
    with pytest.raises(QuarantineGateError) as e:
        check_quarantine_share(above)
    message = str(e.value)
    assert message.startswith("gp_patients: 7.5% of the delivered rows were quarantined")
    assert "limit of 5.0%" in message
    [(rule, n)] = e.value.top_rules
    assert n == 3 and rule in message and "sex" in rule
    # no row values in the message
    assert not any(nhs in message for nhs in _patients(3)["nhs_number"])
    # a higher limit lets it through
    assert check_quarantine_share(above, limit=0.1) == pytest.approx(0.075)


def test_float_nhs_numbers_in_parquet_fail_the_delivery_clearly(tmp_path):
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    folder = make_delivery(extracts, fmt="parquet")
    path = folder / "gp_patients.parquet"
    pl.read_parquet(path).with_columns(pl.col("nhs_number").cast(pl.Float64)).write_parquet(path)
    remanifest(folder)
    with pytest.raises(PipelineFailed) as e:
        run_pipeline(extracts, home, selection=["raw/practices", "staging/gp_patients"])
    message = str(e.value)
    assert "step validate_gp_patients failed" in message
    assert "gp_patients: 100.0% of the delivered rows were quarantined" in message
    assert "nhs_number" in message  # the rule broken most names the column
    # the failed step's connection lives on in the traceback until it is collected
    del e
    gc.collect()
    # a failed run promotes nothing (pipelines.runner): this home had no good run yet, so it
    # has no warehouse at all; with a good run before, that run's warehouse stays whole
    # (tests/test_operations.py)
    db = home / "warehouse.duckdb"
    if db.exists():
        con = duckdb.connect(str(db), read_only=True)
        try:  # nothing downstream got the implausible table
            tables = {
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'staging'"
                ).fetchall()
            }
        finally:
            con.close()
        assert "gp_patients" not in tables
    assert not any((home / ".run").glob("*/warehouse.duckdb"))  # the failed run's copy is gone


def test_patients_whose_practice_row_was_quarantined_are_listed_not_lost(tmp_path, monkeypatch):
    monkeypatch.setenv("PHM_MAX_QUARANTINE_SHARE", "1")  # 1 of 2 practices is over any limit
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    practices = default_rows()["practices"]
    practices[1] = {**practices[1], "pcn_code": "NOT-A-PCN"}  # C82002 quarantined
    make_delivery(extracts, {"practices": practices})
    selection = ["raw/_delivery"] + [f"staging/{t}" for t in TABLE_NAMES] + ["reports/data_quality"]
    run_pipeline(extracts, home, selection=selection)

    listed = pl.read_csv(
        home / "exceptions" / EXTRACT_DATE.isoformat() / "patients_without_practice.csv",
        infer_schema=False,
    )
    assert listed["nhs_number"].to_list() == [NHS[1]]
    assert listed["practice_code"].to_list() == ["C82002"]
    assert "pcn_code" in listed["practice_rules_broken"][0]

    report = (home / "exports" / EXTRACT_DATE.isoformat() / "data_quality.md").read_text()
    assert "## Patients without a practice" in report
    assert "1 accepted registration(s) name a practice whose row was quarantined" in report
    assert NHS[1] not in report  # only a count in the report
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        n = con.execute(
            "SELECT value FROM reports.data_quality WHERE metric = 'patients_without_practice'"
        ).fetchone()[0]
    finally:
        con.close()
    assert n == 1


def test_no_patients_without_practice_gives_an_empty_list(tmp_path):
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    make_delivery(extracts)
    selection = ["raw/_delivery"] + [f"staging/{t}" for t in TABLE_NAMES] + ["reports/data_quality"]
    run_pipeline(extracts, home, selection=selection)
    listed = pl.read_csv(
        home / "exceptions" / EXTRACT_DATE.isoformat() / "patients_without_practice.csv"
    )
    assert listed.height == 0 and "nhs_number" in listed.columns
    report = (home / "exports" / EXTRACT_DATE.isoformat() / "data_quality.md").read_text()
    assert "Every accepted registration names an accepted practice." in report
