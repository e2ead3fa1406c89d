"""Empty staging tables typed per the contract, and row insertion, for the measures tests.

The real ``staging`` schema is built by ingest/validation; the measures only need its
tables and types, which :func:`create_staging_tables` creates from :mod:`phm.contract`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb

from phm.contract import TABLES

DUCKDB_TYPES = {
    "str": "VARCHAR",
    "date": "DATE",
    "datetime": "TIMESTAMP",
    "int": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
}


def create_staging_tables(
    con: duckdb.DuckDBPyConnection, tables: Iterable[str] | None = None, schema: str = "staging"
) -> None:
    """Create (or replace) empty contract tables in ``schema``."""
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for name in tables if tables is not None else TABLES:
        t = TABLES[name]
        cols = ", ".join(f"{c.name} {DUCKDB_TYPES[c.type]}" for c in t.columns)
        con.execute(f"CREATE OR REPLACE TABLE {schema}.{name} ({cols})")


def insert_rows(
    con: duckdb.DuckDBPyConnection,
    table: str,
    rows: Iterable[Mapping[str, Any]],
    schema: str = "staging",
) -> int:
    """Insert dict rows into a contract table; missing nullable columns are null."""
    t = TABLES[table]
    names = t.column_names
    values = []
    for r in rows:
        unknown = set(r) - set(names)
        if unknown:
            raise KeyError(f"{table}: unknown column(s) {sorted(unknown)}")
        values.append([r.get(n) for n in names])
    if values:
        marks = ", ".join("?" for _ in names)
        con.executemany(
            f"INSERT INTO {schema}.{table} ({', '.join(names)}) VALUES ({marks})", values
        )
    return len(values)


def code_for_condition(
    con: duckdb.DuckDBPyConnection, condition_id: str, role: str = "diagnosis"
) -> str:
    """A code of ``condition_id``'s ``role`` lists that is in no other LTC condition's lists.

    Reads ``reference.codelists`` and ``reference.ltc_condition_codelists``; deterministic
    (the smallest such code), so tests can build patients with exactly the conditions meant.
    """
    row = con.execute(
        """
        WITH m AS (
            SELECT c.code, l.condition_id, l.role
            FROM reference.ltc_condition_codelists l JOIN reference.codelists c USING (codelist_id)
        )
        SELECT code FROM m
        WHERE condition_id = ? AND role = ?
          AND code NOT IN (SELECT code FROM m WHERE condition_id <> ?)
        ORDER BY code LIMIT 1
        """,
        [condition_id, role, condition_id],
    ).fetchone()
    if row is None:
        raise LookupError(f"no code exclusive to {condition_id} ({role})")
    return row[0]


def code_for_deficit(con: duckdb.DuckDBPyConnection, deficit_id: str) -> str:
    """A code of an eFI deficit's list that is in no other deficit's list (deterministic)."""
    row = con.execute(
        """
        WITH m AS (
            SELECT c.code, d.deficit_id
            FROM reference.efi_deficit_definitions d JOIN reference.codelists c USING (codelist_id)
        )
        SELECT code FROM m
        WHERE deficit_id = ? AND code NOT IN (SELECT code FROM m WHERE deficit_id <> ?)
        ORDER BY code LIMIT 1
        """,
        [deficit_id, deficit_id],
    ).fetchone()
    if row is None:
        raise LookupError(f"no code exclusive to eFI deficit {deficit_id}")
    return row[0]


TEST_PRACTICE = {
    "practice_code": "C82044",
    "practice_name": "Test Practice",
    "pcn_code": "U12345",
    "pcn_name": "Test PCN",
    "icb_code": "QK1",
}


def measures_connection() -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with the reference tables loaded and empty staging tables."""
    from phm.measures.patient import load_reference_tables

    con = duckdb.connect()
    load_reference_tables(con)
    reset_staging(con)
    return con


def reset_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Empty staging tables plus one practice (``TEST_PRACTICE``)."""
    create_staging_tables(con)
    insert_rows(con, "practices", [TEST_PRACTICE])


def add_patients(con: duckdb.DuckDBPyConnection, *nhs_numbers: str, **overrides: Any) -> None:
    """Register patients at ``TEST_PRACTICE`` (born 1950-06-15, registered 2000-01-01)."""
    import datetime as dt

    base = {
        "date_of_birth": dt.date(1950, 6, 15),
        "sex": "F",
        "ethnic_category": "A",
        "lsoa11_code": None,
        "practice_code": TEST_PRACTICE["practice_code"],
        "registration_start": dt.date(2000, 1, 1),
        "registration_end": None,
        "date_of_death": None,
    }
    insert_rows(con, "gp_patients", [{**base, **overrides, "nhs_number": n} for n in nhs_numbers])


def add_events(con: duckdb.DuckDBPyConnection, nhs_number: str, *events: tuple) -> None:
    """Add gp_events as ``(snomed_code, event_date)`` pairs."""
    insert_rows(
        con,
        "gp_events",
        [
            {
                "nhs_number": nhs_number,
                "snomed_code": code,
                "event_date": when,
                "practice_code": TEST_PRACTICE["practice_code"],
            }
            for code, when in events
        ],
    )


def add_issues(con: duckdb.DuckDBPyConnection, nhs_number: str, *issues: tuple) -> None:
    """Add gp_medications issues as ``(bnf_code, issue_date)`` pairs (dm+d code derived)."""
    insert_rows(
        con,
        "gp_medications",
        [
            {
                "nhs_number": nhs_number,
                "bnf_code": bnf,
                "issue_date": when,
                "dmd_code": str(zlib.crc32((bnf or "").encode())),
                "quantity": 28.0,
            }
            for bnf, when in issues
        ],
    )
