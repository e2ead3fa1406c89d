"""Small SQL helpers shared by the measure modules."""

from __future__ import annotations

import datetime as dt

import duckdb

MARTS = "marts"

#: "the last 12 months" = the 365 days ending on the extract date, inclusive (contract)
DAYS_12_MONTHS = 365
#: "the last 2 years" (HFRS) = the 730 days ending on the extract date, inclusive
DAYS_2_YEARS = 730


def date_literal(d: dt.date) -> str:
    """A DuckDB DATE literal for ``d`` (a date, not a datetime)."""
    if isinstance(d, dt.datetime) or not isinstance(d, dt.date):
        raise TypeError(f"extract_date must be a datetime.date, got {type(d).__name__}")
    return f"DATE '{d.isoformat()}'"


def window_start(d: dt.date, days: int) -> str:
    """First day of the ``days``-day window ending on ``d`` inclusive, as a DATE literal."""
    return date_literal(d - dt.timedelta(days=days - 1))


def require_tables(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Fail clearly if an input table is missing (``schema.table``, or a bare temp table name)."""
    rows = con.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
    have = {f"{s}.{t}" for s, t in rows} | {t for _, t in rows}
    missing = [t for t in tables if t not in have]
    if missing:
        raise LookupError(f"measures need table(s) {', '.join(missing)}, which do not exist")


def row_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
