"""Load a verified delivery into the warehouse's ``raw`` schema, all tables or none."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from phm.contract import TABLE_NAMES, TABLES
from phm.delivery import (
    ROW_NUMBER,
    Delivery,
    DeliveryError,
    ManifestEntry,
    _check_header,
    _header_names,
    _verified_copy,
    read_table_checked,
)
from phm.warehouse import DELIVERY_TABLE, ensure_schemas, write_table

log = logging.getLogger("phm.ingest")


@contextmanager
def single_threaded_writes(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the enclosed table writes on one DuckDB thread, then restore the setting.

    Writing a large frame into an order-preserving table with two threads cost DuckDB 1.5
    more than twice the CPU time of one thread (6.8 s against 2.9 s for 3.7 million
    ``gp_events`` rows, measured 2026-12-02) and was no faster in wall time on two cores:
    the parallel batches are merged again afterwards. The row order (the delivered order)
    is the same either way."""
    (before,) = con.execute("SELECT current_setting('threads')").fetchone()
    con.execute("SET threads = 1")
    try:
        yield
    finally:
        con.execute(f"SET threads = {int(before)}")


def _scratch_folder(con: duckdb.DuckDBPyConnection) -> Path | None:
    """Where a delivery file's private copy is parsed: beside the warehouse file (inside the
    pipeline's owner-only home), or the system's temporary folder for an in-memory database."""
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return Path(row[0]).resolve().parent if row and row[0] else None


class _NotNative(Exception):
    """DuckDB's own CSV reader cannot load this file exactly as the polars reader would (it
    refused the file, or read another number of rows): the delivery is loaded again the
    established way, which accepts it or names its fault."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _load_csv_native(
    con: duckdb.DuckDBPyConnection, entry: ManifestEntry, scratch: Path | None
) -> tuple[int, list[str]]:
    """Load one CSV file into ``raw.<table>`` with DuckDB's own reader, streaming: the file
    is never held in Python memory (the polars frame of an 18-million-row file, plus what
    DuckDB keeps while appending it from Arrow, peaked near 6 GB at 1,000,000 patients).

    The same checks as :func:`phm.delivery.read_table_checked`, in the same order: the file
    is copied (decompressed) while hashed and counted and checked against the manifest
    (:func:`phm.delivery._verified_copy`), its header checked, and the copy parsed with the
    reader's options pinned to the CSV the contract describes (comma, double quotes doubled
    inside quotes, header, every field text, an empty field null and a quoted empty field
    the empty string, no sniffing, strict). Anything the reader refuses and a row count
    other than the manifest's raise :class:`_NotNative`. Returns the rows loaded and the
    optional (v2) columns the file lacks, loaded as null."""
    path = entry.file
    contract = TABLES[entry.table]
    with tempfile.TemporaryDirectory(prefix="phm-ingest-", dir=scratch) as folder:
        copy = Path(folder) / "table.csv"
        _verified_copy(entry, copy)
        names = _header_names(entry, copy)
        _check_header(entry, names)
        names = [n.lstrip("\ufeff").strip() for n in names]
        if not names or any(not n for n in names):
            raise _NotNative(entry.table)
        missing = [c for c in contract.required_column_names if c not in names]
        if missing:
            raise DeliveryError(path, f"missing required column(s): {', '.join(missing)}")
        extras = [c for c in names if c not in contract.column_names]
        absent = [c for c in contract.optional_column_names if c not in names]
        columns = "{" + ", ".join(f"'{n.replace(chr(39), chr(39) * 2)}': 'VARCHAR'" for n in names)
        columns += "}"
        select = [
            f"{_ident(c)}" if c in names else f"NULL::VARCHAR AS {_ident(c)}"
            for c in contract.column_names
        ] + [_ident(c) for c in extras]
        try:
            con.execute(
                f"""CREATE OR REPLACE TABLE raw.{_ident(entry.table)} AS
                SELECT row_number() OVER () AS {ROW_NUMBER}, {", ".join(select)}
                FROM read_csv(?, header = true, auto_detect = false, delim = ',',
                    quote = '"', escape = '"', allow_quoted_nulls = false,
                    strict_mode = true, null_padding = false, encoding = 'utf-8',
                    columns = {columns})""",
                [str(copy)],
            )
        except duckdb.Error as e:
            # the reader's message quotes the offending line: never passed on
            raise _NotNative(f"{entry.table} ({type(e).__name__})") from None
    (rows,) = con.execute(f"SELECT count(*) FROM raw.{_ident(entry.table)}").fetchone()
    if rows != entry.rows:
        raise _NotNative(entry.table)
    if extras:
        log.info("%s: extra columns kept in raw and ignored downstream: %s", path.name, extras)
    if absent:
        log.info("%s: optional v2 column(s) not delivered, loaded as null: %s", path.name, absent)
    return rows, absent


def load_raw(con: duckdb.DuckDBPyConnection, delivery: Delivery) -> dict[str, int]:
    """Replace every ``raw.<table>`` with the delivery's files in one transaction.

    Any file-level fault (unreadable, wrong encoding, missing column) raises
    :class:`phm.delivery.DeliveryError` and rolls back: the warehouse keeps the last good state.
    Returns rows loaded per table.

    ``raw._delivery`` records the extract date, the folder, the manifest, the contract version
    and ``missing_columns`` (JSON: table -> optional v2 columns the delivery left out, loaded
    as null), which the data-quality report lists.

    CSV files are parsed by DuckDB itself (:func:`_load_csv_native`); when it refuses a file
    the whole load is rolled back and done again with :func:`phm.delivery.read_table_checked`
    (polars) for every file, which loads what it accepts and names any fault as before.
    """
    try:
        return _load_raw(con, delivery, native=True)
    except _NotNative as e:
        log.info("DuckDB's CSV reader refused %s: loading the delivery with polars", e)
        return _load_raw(con, delivery, native=False)


def _load_raw(con: duckdb.DuckDBPyConnection, delivery: Delivery, native: bool) -> dict[str, int]:
    ensure_schemas(con)
    scratch = _scratch_folder(con)
    counts: dict[str, int] = {}
    missing: dict[str, list[str]] = {}
    with single_threaded_writes(con):
        con.execute("BEGIN TRANSACTION")
        try:
            for table in TABLE_NAMES:
                t0 = time.perf_counter()
                entry = delivery.entries[table]
                if native and not entry.file.name.endswith(".parquet"):
                    counts[table], absent = _load_csv_native(con, entry, scratch)
                else:
                    df, absent = read_table_checked(entry, scratch)
                    counts[table] = write_table(con, f"raw.{table}", df)
                    del df
                if absent:
                    missing[table] = absent
                log.info(
                    "raw.%s: %d rows from %s (%.1fs)",
                    table,
                    counts[table],
                    entry.file.name,
                    time.perf_counter() - t0,
                )
            meta = pl.DataFrame(
                {
                    "extract_date": [delivery.extract_date],
                    "folder": [str(delivery.folder)],
                    "manifest": [
                        json.dumps(
                            {
                                t: {"file": e.file.name, "rows": e.rows, "sha256": e.sha256}
                                for t, e in delivery.entries.items()
                            },
                            sort_keys=True,
                        )
                    ],
                    "contract_version": [delivery.contract_version],
                    "missing_columns": [json.dumps(missing, sort_keys=True)],
                }
            )
            write_table(con, DELIVERY_TABLE, meta)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return counts
