"""Finding and verifying deliveries: file-level faults are caught, named, and nothing loads."""

import gzip
import json
from datetime import date

import duckdb
import polars as pl
import pytest
from factory import EXTRACT_DATE, make_delivery

from phm.contract import TABLE_NAMES
from phm.delivery import (
    DeliveryError,
    find_delivery,
    open_delivery,
    read_table,
    read_table_checked,
)
from phm.ingest import load_raw
from phm.manifest import count_csv_rows, write_manifest


def test_latest_complete_delivery_is_chosen_and_incomplete_ones_skipped(tmp_path):
    make_delivery(tmp_path, extract_date=date(2026, 10, 1))
    make_delivery(tmp_path, extract_date=date(2026, 11, 1))
    make_delivery(tmp_path, extract_date=date(2026, 12, 1), manifest=False)  # still arriving
    (tmp_path / "_sidecar").mkdir()
    (tmp_path / "notes").mkdir()
    assert find_delivery(tmp_path).name == "2026-11-01"
    assert find_delivery(tmp_path, "2026-10-01").name == "2026-10-01"
    with pytest.raises(DeliveryError, match="still arriving"):
        find_delivery(tmp_path, "2026-12-01")
    with pytest.raises(DeliveryError, match="no such delivery"):
        find_delivery(tmp_path, "2025-01-01")


def test_no_complete_delivery_is_a_clear_error(tmp_path):
    make_delivery(tmp_path, manifest=False)
    with pytest.raises(DeliveryError, match="no complete delivery"):
        find_delivery(tmp_path)


def test_manifest_counts_match_and_ingest_loads_every_row(tmp_path):
    folder = make_delivery(tmp_path)
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert set(manifest["files"]) == set(TABLE_NAMES)
    delivery = open_delivery(tmp_path)
    con = duckdb.connect()
    counts = load_raw(con, delivery)
    for table in TABLE_NAMES:
        n = con.execute(f"select count(*) from raw.{table}").fetchone()[0]
        assert n == counts[table] == manifest["files"][table]["rows"]
    assert con.execute("select extract_date from raw._delivery").fetchone()[0] == EXTRACT_DATE
    # raw keeps the text as delivered and numbers rows from 1
    rows = con.execute(
        "select _row_number, primary_diagnosis, secondary_diagnoses from raw.sus_apc"
    ).fetchall()
    assert rows == [(1, "I50.0", "F00.0*;W19")]


def test_truncated_file_fails_naming_the_file(tmp_path):
    folder = make_delivery(tmp_path)
    path = folder / "gp_events.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))
    with pytest.raises(DeliveryError) as e:
        open_delivery(tmp_path)
    assert "gp_events.csv" in str(e.value) and "sha256" in str(e.value)


def test_row_count_mismatch_fails_naming_the_file(tmp_path):
    folder = make_delivery(tmp_path)
    m = json.loads((folder / "_manifest.json").read_text())
    m["files"]["ppn"]["rows"] += 1
    (folder / "_manifest.json").write_text(json.dumps(m))
    with pytest.raises(DeliveryError, match=r"ppn\.csv.*manifest says 2"):
        open_delivery(tmp_path)


def test_missing_file_fails(tmp_path):
    folder = make_delivery(tmp_path)
    (folder / "sus_op.csv").unlink()
    with pytest.raises(DeliveryError, match=r"sus_op\.csv: file listed in the manifest is missing"):
        open_delivery(tmp_path)


def test_manifest_missing_a_table_fails(tmp_path):
    folder = make_delivery(tmp_path)
    m = json.loads((folder / "_manifest.json").read_text())
    del m["files"]["community_assets"]
    (folder / "_manifest.json").write_text(json.dumps(m))
    with pytest.raises(DeliveryError, match="does not list table 'community_assets'"):
        open_delivery(tmp_path)


def test_unparseable_manifest_fails(tmp_path):
    folder = make_delivery(tmp_path)
    (folder / "_manifest.json").write_text("{not json")
    with pytest.raises(DeliveryError, match=r"_manifest\.json: manifest is not valid JSON"):
        open_delivery(tmp_path)


def test_manifest_date_must_match_folder(tmp_path):
    folder = make_delivery(tmp_path)
    m = json.loads((folder / "_manifest.json").read_text())
    m["extract_date"] = "2026-10-31"
    (folder / "_manifest.json").write_text(json.dumps(m))
    with pytest.raises(DeliveryError, match="does not match the folder name"):
        open_delivery(tmp_path)


def _rewrite(folder, table, data: bytes):
    path = folder / f"{table}.csv"
    path.write_bytes(data)
    files = {t: next(folder.glob(f"{t}.*")) for t in TABLE_NAMES}
    write_manifest(folder, folder.name, files)
    return path


def test_missing_required_column_fails_naming_file_and_column(tmp_path):
    folder = make_delivery(tmp_path)
    _rewrite(
        folder,
        "ppn",
        b"nhs_number,ppn_id,incident_date,category,risk_level\n9990000018,P1,2026-01-01,other,high\n",
    )
    d = open_delivery(tmp_path)
    with pytest.raises(DeliveryError, match=r"ppn\.csv: missing required column\(s\): shared_date"):
        read_table(d.entries["ppn"])


def test_wrong_encoding_fails_and_nothing_is_loaded(tmp_path):
    good = tmp_path / "good"
    make_delivery(good)
    con = duckdb.connect()
    load_raw(con, open_delivery(good))
    before = con.execute("select count(*) from raw.community_assets").fetchone()[0]

    bad = tmp_path / "bad"
    folder = make_delivery(bad, extract_date=date(2026, 11, 2))
    _rewrite(
        folder,
        "community_assets",
        "asset_id,name,category,latitude,longitude,lsoa11_code\nCA9,Caf\u00e9 club,food,52.6,-1.1,\n"
        "CA8,Second,food,52.6,-1.1,\n".encode("latin-1"),
    )
    with pytest.raises(DeliveryError, match=r"community_assets\.csv: wrong encoding"):
        load_raw(con, open_delivery(bad))
    # the transaction rolled back: the good delivery is still there, whole
    assert con.execute("select count(*) from raw.community_assets").fetchone()[0] == before
    assert con.execute("select extract_date from raw._delivery").fetchone()[0] == EXTRACT_DATE
    assert con.execute("select count(*) from raw.gp_patients").fetchone()[0] == 2


def test_bom_quotes_and_extra_columns_are_accepted(tmp_path):
    folder = make_delivery(tmp_path)
    _rewrite(
        folder,
        "community_assets",
        b"\xef\xbb\xbfasset_id,name,category,latitude,longitude,lsoa11_code,opening_hours\n"
        b'CA1,"Hall, ""big"" one\nupstairs",social_activity,52.6,-1.1,,9-5\n',
    )
    df = read_table(open_delivery(tmp_path).entries["community_assets"])
    assert df.columns[0] == "_row_number" and "opening_hours" in df.columns
    assert df.row(0, named=True)["name"] == 'Hall, "big" one\nupstairs'
    assert df.row(0, named=True)["lsoa11_code"] is None


@pytest.mark.parametrize("fmt", ["csv.gz", "parquet"])
def test_gzip_and_parquet_deliveries_read_like_csv(tmp_path, fmt):
    make_delivery(tmp_path / "csv")
    make_delivery(tmp_path / fmt, fmt=fmt)
    a = read_table(open_delivery(tmp_path / "csv").entries["sus_apc"])
    b = read_table(open_delivery(tmp_path / fmt).entries["sus_apc"])
    assert a.equals(b)


def test_csv_row_count_honours_quoted_newlines(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b'a,b\n1,"two\nlines"\n2,x')
    assert count_csv_rows(p) == 2
    g = tmp_path / "x.csv.gz"
    g.write_bytes(gzip.compress(b"a\n1\n2\n3\n"))
    assert count_csv_rows(g) == 3


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_v1_delivery_loads_with_null_v2_columns_and_the_report_names_them(tmp_path, fmt):
    from phm.validate import (
        data_quality_markdown,
        data_quality_summary,
        missing_v2_fields,
        validate_table,
        warehouse_reference_keys,
    )

    folder = make_delivery(tmp_path, fmt=fmt, contract_version=1)
    header = pl.read_csv(folder / "sus_apc.csv").columns if fmt == "csv" else None
    if header is not None:
        assert "discharge_method" not in header
    delivery = open_delivery(tmp_path)
    assert delivery.contract_version == 1
    df, absent = read_table_checked(delivery.entries["sus_apc"])
    assert absent == ["discharge_method", "discharge_destination"]
    assert df["discharge_method"].null_count() == df.height == 1
    con = duckdb.connect()
    load_raw(con, delivery)
    assert (
        con.execute("select count(*) from raw.gp_patients where lsoa21_code is null").fetchone()[0]
        == con.execute("select count(*) from raw.gp_patients").fetchone()[0]
    )
    # validate into staging and quarantine as the pipeline does
    con.execute("create schema if not exists staging; create schema if not exists quarantine")
    for t in TABLE_NAMES:
        raw = con.execute(f"select * from raw.{t}").pl()
        r = validate_table(t, raw, delivery.extract_date, warehouse_reference_keys(con, t))
        assert r.rows_quarantined == 0, r.quarantine
        con.register("s", r.staging.to_arrow())
        con.register("q", r.quarantine.to_arrow())
        con.execute(f"create table staging.{t} as select * from s")
        con.execute(f"create table quarantine.{t} as select * from q")
        con.unregister("s")
        con.unregister("q")
    assert (
        con.execute(
            "select count(*) from staging.sus_apc where discharge_destination is null"
        ).fetchone()[0]
        == 1
    )
    summary = data_quality_summary(con)
    assert missing_v2_fields(summary) == [
        "gp_patients.lsoa21_code",
        "sus_apc.discharge_method",
        "sus_apc.discharge_destination",
    ]
    md = data_quality_markdown(summary)
    assert "`sus_apc.discharge_destination`" in md and "`gp_patients.lsoa21_code`" in md


def test_v2_delivery_report_names_no_missing_field(tmp_path):
    from phm.validate import data_quality_markdown, missing_v2_fields, validate_delivery

    delivery = open_delivery(make_delivery(tmp_path).parent)
    assert delivery.contract_version == 2
    raw = {t: read_table(e) for t, e in delivery.entries.items()}
    assert raw["sus_apc"]["discharge_destination"].to_list() == ["19"]
    results = validate_delivery(raw, delivery.extract_date)
    assert missing_v2_fields(results) == []
    assert "The delivery has every v2 field." in data_quality_markdown(results)


def test_unknown_contract_version_is_refused(tmp_path):
    make_delivery(tmp_path, contract_version=3)
    with pytest.raises(DeliveryError, match="contract_version is 3"):
        open_delivery(tmp_path)
