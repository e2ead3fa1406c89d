"""The published copy of the warehouse: what notebooks, the UI and analysts read.

``HOME/published/warehouse.duckdb`` is rebuilt from a successful run's warehouse and swapped
in with :func:`os.replace`, so a reader sees either the previous run's copy or the new one,
never half a run, and never blocks the pipeline (it holds its own file, not the pipeline's).

It is the pseudonymised analytics mart: the tables of ``marts`` except
``marts.person_identity`` (keyed by ``person_id``), the ``_published`` tables of ``geo``
(disclosure-controlled), ``reports`` and ``reference``, plus ``reports.published``
(extract date and run id). No ``raw``, ``staging`` or ``quarantine`` schema, and no column
named like an identifier (:data:`IDENTIFIER_COLUMNS`): a table that has one stops the
publication with :class:`PublishRefused` and the previous copy stays.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import duckdb

from phm.warehouse import DELIVERY_TABLE

PUBLISHED_SCHEMAS = ("marts", "geo", "reports", "reference")
EXCLUDED_TABLES = frozenset({"marts.person_identity"})
#: column names that identify a person; none may appear in the published copy
IDENTIFIER_COLUMNS = frozenset(
    {
        "nhs_number",
        "nhs_no",
        "name",
        "patient_name",
        "forename",
        "forenames",
        "given_name",
        "surname",
        "family_name",
        "date_of_birth",
        "dob",
        "birth_date",
        "postcode",
        "address",
        "address_line_1",
    }
)


class PublishRefused(RuntimeError):
    """A table that would be published carries an identifier column."""


def _included(schema: str, table: str) -> bool:
    if f"{schema}.{table}" in EXCLUDED_TABLES:
        return False
    return schema != "geo" or table.endswith("_published")


def identifier_columns(con: duckdb.DuckDBPyConnection, catalog: str | None = None) -> list[str]:
    """``schema.table.column`` of every column named like an identifier (in ``catalog``)."""
    where = "AND table_catalog = ?" if catalog else ""
    rows = con.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns "
        f"WHERE lower(column_name) IN (SELECT unnest(?)) {where} ORDER BY 1, 2, 3",
        [sorted(IDENTIFIER_COLUMNS), *([catalog] if catalog else [])],
    ).fetchall()
    return [f"{s}.{t}.{c}" for s, t, c in rows]


def build_published(source: Path, dest: Path, run_id: str = "") -> dict[str, int]:
    """Write the published copy of ``source`` to ``dest`` (via a temporary file and
    :func:`os.replace`); returns the row count of each table published."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    con = duckdb.connect(str(tmp))
    try:
        con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
        tables = [
            (s, t)
            for s, t in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_catalog = 'src' AND table_type = 'BASE TABLE' ORDER BY 1, 2"
            ).fetchall()
            if s in PUBLISHED_SCHEMAS and _included(s, t)
        ]
        offending = [c for c in identifier_columns(con, "src") if _included(*c.split(".")[:2])]
        offending = [c for c in offending if c.split(".")[0] in PUBLISHED_SCHEMAS]
        if offending:
            raise PublishRefused(
                "not publishing: identifier column(s) in tables meant for readers: "
                + ", ".join(offending)
            )
        for schema in sorted({s for s, _ in tables} | {"reports"}):
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for schema, table in tables:
            con.execute(
                f'CREATE TABLE "{schema}"."{table}" AS SELECT * FROM src."{schema}"."{table}"'
            )
            counts[f"{schema}.{table}"] = con.execute(
                f'SELECT count(*) FROM "{schema}"."{table}"'
            ).fetchone()[0]
        extract_date: date | None = None
        has_delivery = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = 'src' "
            "AND table_schema = ? AND table_name = ?",
            DELIVERY_TABLE.split("."),
        ).fetchone()[0]
        if has_delivery:
            extract_date = con.execute(f"SELECT extract_date FROM src.{DELIVERY_TABLE}").fetchone()[
                0
            ]
        con.execute(
            "CREATE OR REPLACE TABLE reports.published AS "
            "SELECT CAST(? AS DATE) AS extract_date, CAST(? AS VARCHAR) AS run_id",
            [extract_date, run_id],
        )
        con.execute("DETACH src")
        leaked = identifier_columns(con)
        if leaked:  # belt and braces: the file written has none
            raise PublishRefused(f"not publishing: identifier column(s) {', '.join(leaked)}")
        con.execute("CHECKPOINT")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(tmp, dest)
    return counts
