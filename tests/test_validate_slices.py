"""Validation in the warehouse slice by slice (phm.validate.validate_in_warehouse) gives
exactly what validating each whole raw table gives, on generated deliveries with every kind
of injected fault; and the slice-by-slice frame writer keeps every row in order."""

from __future__ import annotations

from datetime import date

import duckdb
import polars as pl
import pytest

import schemas
from phm.contract import TABLE_NAMES
from phm.delivery import open_delivery
from phm.ingest import load_raw
from phm.synth import generate
from phm.synth.faults import FAULT_KINDS
from phm.validate import (
    QuarantineGateError,
    validate_in_warehouse,
    validate_table,
    warehouse_reference_keys,
)
from phm.warehouse import write_table

EXTRACT = date(2026, 11, 1)
#: small enough that every row-independent table of the delivery spans many slices
SLICE = 97


@pytest.fixture(scope="module")
def faulty_raw(tmp_path_factory) -> duckdb.DuckDBPyConnection:
    """raw.* of a generated delivery with injected faults (csv and parquet alike)."""
    root = tmp_path_factory.mktemp("faulty")
    result = generate(root, patients=600, seed=11, extract_date=EXTRACT, faults=0.05)
    faults = pl.read_csv(root / "_sidecar" / EXTRACT.isoformat() / "faults.csv")
    # the delivery really holds the faults the comparison is about
    assert set(faults["fault"].unique()) & set(FAULT_KINDS)
    assert result.rows["gp_events"] > 10 * SLICE
    con = duckdb.connect()
    load_raw(con, open_delivery(root))
    return con


def _whole(con, table: str):
    raw = con.execute(f'SELECT * FROM raw."{table}" ORDER BY _row_number').pl()
    return validate_table(table, raw, EXTRACT, warehouse_reference_keys(con, table))


@pytest.mark.parametrize("table", TABLE_NAMES)
def test_sliced_validation_equals_whole_table_validation(faulty_raw, table):
    con = faulty_raw
    result = validate_in_warehouse(con, table, EXTRACT, gate=False, slice_rows=SLICE)
    expected = _whole(con, table)
    staging = con.execute(f'SELECT * FROM staging."{table}"').pl()
    quarantine = con.execute(f'SELECT * FROM quarantine."{table}"').pl()
    # row for row, in delivered order: the same rows quarantined with the same reasons
    assert staging.equals(expected.staging)
    assert quarantine.equals(expected.quarantine)
    assert result.rule_counts == expected.rule_counts
    assert result.counts == expected.counts
    assert result.missing_columns == expected.missing_columns


def test_the_fault_injected_tables_are_sliced_and_quarantine_rows(faulty_raw):
    """The comparison above is not vacuous: the big row-independent tables span many slices
    and have quarantined rows, with several different rules."""
    con = faulty_raw
    for table in ("gp_events", "gp_medications", "gp_appointments"):
        assert schemas.rows_independent(table)
        rows = con.execute(f'SELECT count(*) FROM raw."{table}"').fetchone()[0]
        assert rows > 5 * SLICE
        result = validate_in_warehouse(con, table, EXTRACT, gate=False, slice_rows=SLICE)
        assert result.rows_quarantined > 0
        assert sum(1 for n in result.rule_counts.values() if n) >= 2


def test_tables_with_uniqueness_rules_are_never_sliced():
    """A uniqueness rule compares rows: slicing would miss a duplicate in another slice, so
    such tables are validated whole whatever the slice size."""
    for table in TABLE_NAMES:
        kinds = {r.kind for r in schemas.rules_for(table, EXTRACT, _empty_refs())}
        assert schemas.rows_independent(table) == ("duplicate_key" not in kinds)
    raw = pl.DataFrame(
        {
            "_row_number": [1, 2, 3],
            "practice_code": ["C82001", "C82002", "C82001"],
            "practice_name": ["A", "B", "C"],
            "pcn_code": ["U00001"] * 3,
            "pcn_name": ["P"] * 3,
            "icb_code": ["QWE"] * 3,
        }
    )
    con = duckdb.connect()
    for s in ("raw", "staging", "quarantine"):
        con.execute(f"CREATE SCHEMA {s}")
    write_table(con, "raw.practices", raw)
    result = validate_in_warehouse(con, "practices", EXTRACT, gate=False, slice_rows=1)
    expected = validate_table("practices", raw, EXTRACT)
    assert result.rule_counts == expected.rule_counts
    assert result.rule_counts["practice_code: unique (first delivered row wins)"] == 1
    quarantined = con.execute("SELECT _row_number FROM quarantine.practices").fetchall()
    assert quarantined == [(3,)]


def _empty_refs() -> dict[str, pl.Series]:
    return {ref: pl.Series([], dtype=pl.String) for ref in schemas.REFERENCED_KEYS}


def test_gate_after_slices_rolls_back_and_keeps_the_previous_tables(faulty_raw, monkeypatch):
    con = faulty_raw
    validate_in_warehouse(con, "gp_events", EXTRACT, gate=False, slice_rows=SLICE)
    before = con.execute("SELECT * FROM staging.gp_events").pl()
    before_q = con.execute("SELECT * FROM quarantine.gp_events").pl()
    monkeypatch.setenv("PHM_MAX_QUARANTINE_SHARE", "0")
    with pytest.raises(QuarantineGateError, match="gp_events"):
        validate_in_warehouse(con, "gp_events", EXTRACT, slice_rows=SLICE)
    assert con.execute("SELECT * FROM staging.gp_events").pl().equals(before)
    assert con.execute("SELECT * FROM quarantine.gp_events").pl().equals(before_q)


def test_slice_rows_setting_is_checked(monkeypatch):
    from phm.validate import DEFAULT_VALIDATE_SLICE_ROWS, validate_slice_rows

    monkeypatch.delenv("PHM_VALIDATE_SLICE_ROWS", raising=False)
    assert validate_slice_rows() == DEFAULT_VALIDATE_SLICE_ROWS
    monkeypatch.setenv("PHM_VALIDATE_SLICE_ROWS", "5000")
    assert validate_slice_rows() == 5000
    for bad in ("0", "-3", "lots"):
        monkeypatch.setenv("PHM_VALIDATE_SLICE_ROWS", bad)
        with pytest.raises(ValueError, match="PHM_VALIDATE_SLICE_ROWS"):
            validate_slice_rows()


def test_empty_raw_table_gives_empty_tables_with_their_columns(faulty_raw):
    con = faulty_raw
    con.execute("CREATE OR REPLACE TABLE raw.gp_medications AS FROM raw.gp_medications LIMIT 0")
    result = validate_in_warehouse(con, "gp_medications", EXTRACT, gate=False, slice_rows=SLICE)
    expected = _whole(con, "gp_medications")
    assert result.rows_delivered == 0
    staging = con.execute("SELECT * FROM staging.gp_medications").pl()
    quarantine = con.execute("SELECT * FROM quarantine.gp_medications").pl()
    assert staging.schema == expected.staging.schema
    assert quarantine.schema == expected.quarantine.schema


def test_write_table_in_slices_keeps_every_row_in_order(monkeypatch):
    import phm.warehouse

    monkeypatch.setattr(phm.warehouse, "WRITE_SLICE_ROWS", 7)
    df = pl.DataFrame(
        {
            "n": pl.int_range(0, 100, eager=True),
            "s": [None if i % 5 == 0 else f"v{i}" for i in range(100)],
        }
    )
    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw")
    assert write_table(con, "raw.t", df) == 100
    assert con.execute("SELECT * FROM raw.t").pl().equals(df)
    # replace, then append
    assert write_table(con, "raw.t", df.head(3)) == 3
    assert write_table(con, "raw.t", df.slice(3), append=True) == 97
    assert con.execute("SELECT * FROM raw.t").pl().equals(df)
    # an empty frame still creates the table with its columns
    assert write_table(con, "raw.e", df.clear()) == 0
    assert con.execute("SELECT * FROM raw.e").pl().schema == df.schema
