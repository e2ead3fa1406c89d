"""Ingest parses CSV files with DuckDB's own reader (phm.ingest._load_csv_native): raw must
hold exactly what the established polars reader (phm.delivery.read_table_checked) gives,
for awkward but valid CSV; a file DuckDB reads otherwise falls back to polars."""

from __future__ import annotations

import gzip

import duckdb
import polars as pl
import pytest
from factory import make_delivery, remanifest

import phm.ingest
from phm.contract import TABLE_NAMES
from phm.delivery import DeliveryError, open_delivery, read_table_checked
from phm.ingest import load_raw

#: awkward but valid: BOM, CRLF, a quoted empty field (text ""), empty fields (null),
#: spaces and a tab kept as delivered, a quoted comma, doubled quote and newline, spaces
#: around a header name, and an extra column
AWKWARD_EVENTS = (
    "\ufeffnhs_number, event_date ,snomed_code,numeric_value,practice_code,site_note\r\n"
    '9990000018,2020-02-02,38341003,,C82001,""\r\n'
    '9990000018, 2026-10-01 ,"60621009",31.5,C82001,"a, ""quoted""\nnote"\r\n'
    "\t9990000018,,  ,x,C82001,\r\n"
    '"",2026-10-02,38341003,1e3,"C82001 ",last\r\n'
)


def _reference(delivery) -> dict[str, pl.DataFrame]:
    return {t: read_table_checked(delivery.entries[t])[0] for t in TABLE_NAMES}


def _no_polars(monkeypatch):
    """Make the fallback fail loudly, so a test proves the native path loaded every CSV."""

    def refuse(entry, workdir=None):
        raise AssertionError(f"fell back to polars for {entry.table}")

    monkeypatch.setattr(phm.ingest, "read_table_checked", refuse)


def _raw(con, table: str) -> pl.DataFrame:
    return con.execute(f'SELECT * FROM raw."{table}"').pl()


@pytest.mark.parametrize("compress", [False, True])
def test_native_csv_load_equals_the_polars_reader(tmp_path, monkeypatch, compress):
    folder = make_delivery(tmp_path)
    (folder / "gp_events.csv").write_bytes(AWKWARD_EVENTS.encode("utf-8"))
    if compress:
        path = folder / "gp_events.csv"
        (folder / "gp_events.csv.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    remanifest(folder)
    delivery = open_delivery(tmp_path)
    expected = _reference(delivery)
    assert expected["gp_events"].height == 4
    _no_polars(monkeypatch)
    con = duckdb.connect()
    counts = load_raw(con, delivery)
    for table in TABLE_NAMES:
        got = _raw(con, table)
        assert got.equals(expected[table]), table
        assert counts[table] == expected[table].height
    events = _raw(con, "gp_events")
    # text exactly as delivered: "" is the empty string, an empty field null
    assert events["site_note"].to_list()[0] == ""
    assert events["numeric_value"].to_list()[0] is None
    assert events["event_date"].to_list()[1] == " 2026-10-01 "
    assert events["site_note"].to_list()[1] == 'a, "quoted"\nnote'


def test_v1_delivery_missing_optional_columns_loads_them_as_null(tmp_path, monkeypatch):
    make_delivery(tmp_path, contract_version=1)
    delivery = open_delivery(tmp_path)
    expected = _reference(delivery)
    _no_polars(monkeypatch)
    con = duckdb.connect()
    load_raw(con, delivery)
    for table in TABLE_NAMES:
        assert _raw(con, table).equals(expected[table]), table
    missing = con.execute("SELECT missing_columns FROM raw._delivery").fetchone()[0]
    assert missing not in ("", "{}")


def test_a_blank_line_falls_back_to_polars_and_keeps_its_null_row(tmp_path):
    """DuckDB skips a blank line where polars reads a row of nulls (and the manifest counts
    it): the row count differs, so the delivery is loaded the established way."""
    folder = make_delivery(tmp_path)
    path = folder / "gp_events.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([lines[0], lines[1], "", *lines[2:]]) + "\n", encoding="utf-8")
    remanifest(folder)
    delivery = open_delivery(tmp_path)
    expected = _reference(delivery)
    con = duckdb.connect()
    load_raw(con, delivery)
    events = _raw(con, "gp_events")
    assert events.equals(expected["gp_events"])
    assert events.row(1, named=True)["nhs_number"] is None  # the blank line's row


def test_a_ragged_file_is_refused_with_the_established_message_and_nothing_loads(tmp_path):
    folder = make_delivery(tmp_path)
    path = folder / "gp_events.csv"
    text = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*text, text[-1] + ",surplus"]) + "\n", encoding="utf-8")
    remanifest(folder)
    con = duckdb.connect()
    with pytest.raises(DeliveryError, match="more fields than the header") as err:
        load_raw(con, open_delivery(tmp_path))
    assert "surplus" not in str(err.value)
    tables = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'raw'"
    ).fetchone()[0]
    assert tables == 0
