"""Input robustness drills (docs/operations.md, "Input robustness"): each hostile or malformed
file fails the delivery clearly, naming the file, before anything is committed."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from datetime import date, datetime

import duckdb
import polars as pl
import pytest
from factory import NHS, default_rows, make_delivery, remanifest

from phm.delivery import DeliveryError, open_delivery, read_manifest, read_table, verify_files
from phm.ingest import load_raw
from pipelines.cli import main

D1, D2 = date(2026, 11, 1), date(2026, 11, 8)


def _csv(folder, table: str, text: str) -> None:
    (folder / f"{table}.csv").write_text(text, encoding="utf-8")
    remanifest(folder)


def _load(root, day=None):
    con = duckdb.connect()
    return con, load_raw(con, open_delivery(root, day))


def test_duplicate_column_names_fail_naming_the_column(tmp_path):
    folder = make_delivery(tmp_path)
    _csv(
        folder,
        "practices",
        "practice_code,practice_name,pcn_code,pcn_name,icb_code,pcn_code\n"
        "C82001,Alpha,U00001,North,QK1,U00009\n"
        "C82002,Beta,U00002,South,QK1,U00009\n",
    )
    with pytest.raises(
        DeliveryError, match=r"practices\.csv: duplicate column name\(s\).*pcn_code"
    ):
        _load(tmp_path)


def test_duplicate_column_names_differing_only_in_case_fail(tmp_path):
    folder = make_delivery(tmp_path)
    _csv(
        folder,
        "practices",
        "practice_code,practice_name,pcn_code,pcn_name,icb_code,ICB_CODE\n"
        "C82001,Alpha,U00001,North,QK1,X\nC82002,Beta,U00002,South,QK1,X\n",
    )
    with pytest.raises(DeliveryError, match=r"duplicate column.*icb_code/ICB_CODE"):
        _load(tmp_path)


@pytest.mark.parametrize("column", ["_row_number", "failed_rules", "Table_Name"])
def test_a_column_named_like_an_internal_one_fails_before_anything_is_committed(tmp_path, column):
    make_delivery(tmp_path, extract_date=D1)
    rows = default_rows()["sus_op"]
    folder = make_delivery(
        tmp_path, {"sus_op": [{**r, column: "7"} for r in rows]}, extract_date=D2
    )
    con = duckdb.connect()
    load_raw(con, open_delivery(tmp_path, D1))
    before = con.execute("SELECT * FROM raw.sus_op").pl()
    with pytest.raises(DeliveryError, match=rf"sus_op\.csv: column\(s\) {column} clash"):
        load_raw(con, open_delivery(tmp_path, D2))
    # the last good state is untouched: still the first delivery, every table
    assert con.execute("SELECT extract_date FROM raw._delivery").fetchone()[0] == D1
    assert con.execute("SELECT * FROM raw.sus_op").pl().equals(before)
    assert folder.is_dir()


def test_a_symlink_pointing_outside_the_delivery_is_refused(tmp_path):
    folder = make_delivery(tmp_path / "extracts")
    outside = tmp_path / "elsewhere.csv"
    (folder / "ppn.csv").rename(outside)
    os.symlink(outside, folder / "ppn.csv")
    with pytest.raises(DeliveryError, match=r"ppn\.csv: is a symbolic link pointing outside"):
        open_delivery(tmp_path / "extracts")


def test_a_symlink_within_the_delivery_is_read(tmp_path):
    folder = make_delivery(tmp_path)
    (folder / "ppn.csv").rename(folder / "ppn-data.csv")
    os.symlink("ppn-data.csv", folder / "ppn.csv")
    d = open_delivery(tmp_path)
    assert read_table(d.entries["ppn"]).height == len(default_rows()["ppn"])


def _parquet_with_timestamps(tmp_path, dob: list[datetime]):
    folder = make_delivery(tmp_path, fmt="parquet")
    path = folder / "gp_patients.parquet"
    df = pl.read_parquet(path).with_columns(
        pl.Series("date_of_birth", dob, dtype=pl.Datetime("us"))
    )
    df.write_parquet(path)
    remanifest(folder)
    return read_manifest(folder)


def test_parquet_timestamp_at_midnight_in_a_date_column_is_read_as_a_date(tmp_path):
    d = _parquet_with_timestamps(tmp_path, [datetime(1950, 3, 4), datetime(1980, 7, 21)])
    df = read_table(d.entries["gp_patients"])
    assert df["date_of_birth"].to_list() == ["1950-03-04", "1980-07-21"]


def test_parquet_timestamp_with_a_time_of_day_in_a_date_column_fails_naming_it(tmp_path):
    d = _parquet_with_timestamps(tmp_path, [datetime(1950, 3, 4), datetime(1980, 7, 21, 13, 5)])
    with pytest.raises(
        DeliveryError,
        match=r"gp_patients\.parquet: column date_of_birth .* time of day in 1 row",
    ):
        read_table(d.entries["gp_patients"])


def test_an_unbalanced_quote_names_the_file_and_line(tmp_path):
    folder = make_delivery(tmp_path)
    _csv(
        folder,
        "practices",
        "practice_code,practice_name,pcn_code,pcn_name,icb_code\n"
        "C82001,Alpha,U00001,North,QK1\n"
        'C82002,"Beta Practice,U00002,South,QK1\n'
        "C82003,Gamma,U00002,South,QK1\n",
    )
    with pytest.raises(
        DeliveryError,
        match=r"practices\.csv: unbalanced quote: the quoted field opened on line 3 is never",
    ):
        open_delivery(tmp_path)


def test_a_gzip_bomb_is_refused(tmp_path, monkeypatch):
    folder = make_delivery(tmp_path, fmt="csv.gz")
    header = ",".join(["referral_id", "measure", "timepoint", "score", "recorded_date"])
    with gzip.open(folder / "sp_outcomes.csv.gz", "wb") as f:
        f.write(header.encode() + b"\n")
        for _ in range(40):  # 40 MiB of one field, compressing about a thousandfold
            f.write(b"0" * (1 << 20))
        f.write(b",ons4_anxiety,baseline,1,2026-01-01\n")
    remanifest(folder)
    monkeypatch.setenv("PHM_MAX_DECOMPRESSION_RATIO", "100")
    with pytest.raises(DeliveryError, match=r"sp_outcomes\.csv\.gz: decompresses to more than"):
        open_delivery(tmp_path)
    # an ordinary compressed delivery is well within the bound
    ok = make_delivery(tmp_path / "ok", fmt="csv.gz")
    verify_files(read_manifest(ok))


def test_the_bytes_parsed_are_the_bytes_hashed(tmp_path):
    """A file swapped after verification (same row count, other content) is caught when read."""
    folder = make_delivery(tmp_path)
    d = open_delivery(tmp_path)
    text = (folder / "gp_patients.csv").read_text(encoding="utf-8")
    (folder / "gp_patients.csv").write_text(text.replace(NHS[0], NHS[4]), encoding="utf-8")
    with pytest.raises(DeliveryError, match=r"gp_patients\.csv: sha256 differs"):
        read_table(d.entries["gp_patients"])


def test_phm_run_select_raw_practices_works(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", "0123456789abcdef0123456789abcdef0123")
    make_delivery(tmp_path / "extracts")
    home = tmp_path / "home"
    rc = main(
        [
            "run",
            "--extracts",
            str(tmp_path / "extracts"),
            "--home",
            str(home),
            "--select",
            "raw/practices",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM raw.practices").fetchone()[0] == 2
        # only the ingest step ran: nothing was validated
        assert not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'staging'"
        ).fetchone()[0]
    finally:
        con.close()
    assert (
        main(
            [
                "run",
                "--extracts",
                str(tmp_path / "extracts"),
                "--home",
                str(home),
                "--select",
                "raw/no_such_table",
            ]
        )
        == 1
    )
    assert "no such asset: raw/no_such_table" in capsys.readouterr().err


def _set_manifest_entry(folder, table: str, **fields) -> None:
    path = folder / "_manifest.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["files"][table].update(fields)
    path.write_text(json.dumps(m), encoding="utf-8")


def test_a_gzip_of_several_members_reads_like_the_csv(tmp_path):
    make_delivery(tmp_path / "csv")
    folder = make_delivery(tmp_path / "gz", fmt="csv.gz")
    text = gzip.decompress((folder / "sus_op.csv.gz").read_bytes())
    cut = text.index(b"\n") + 1  # header in one member, the rows in another
    (folder / "sus_op.csv.gz").write_bytes(gzip.compress(text[:cut]) + gzip.compress(text[cut:]))
    remanifest(folder)
    a = read_table(open_delivery(tmp_path / "csv").entries["sus_op"])
    b = read_table(open_delivery(tmp_path / "gz").entries["sus_op"])
    assert b.height == len(default_rows()["sus_op"]) and a.equals(b)


def test_a_truncated_gzip_listed_with_its_own_sha256_is_refused(tmp_path):
    folder = make_delivery(tmp_path, fmt="csv.gz")
    path = folder / "sus_op.csv.gz"
    data = path.read_bytes()[:-12]  # the deflate end and the gzip trailer are missing
    path.write_bytes(data)
    _set_manifest_entry(folder, "sus_op", sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(DeliveryError, match=r"sus_op\.csv\.gz: unreadable file \(gzip stream is"):
        open_delivery(tmp_path)


def test_a_gzip_bomb_with_a_wrong_sha256_is_reported_as_corrupt(tmp_path, monkeypatch):
    """The sha256 is judged first: a file that is not what the manifest lists is corrupt,
    whatever it decompresses to."""
    folder = make_delivery(tmp_path, fmt="csv.gz")
    (folder / "ppn.csv.gz").write_bytes(gzip.compress(b"nhs_number\n" + b"0" * (20 << 20)))
    monkeypatch.setenv("PHM_MAX_DECOMPRESSION_RATIO", "2")
    with pytest.raises(DeliveryError, match=r"ppn\.csv\.gz: sha256 differs"):
        open_delivery(tmp_path)


def test_an_unbalanced_quote_past_the_first_chunk_names_its_line(tmp_path):
    folder = make_delivery(tmp_path)
    header = "asset_id,name,category,latitude,longitude,lsoa11_code\n"
    rows = [f"CA{i},Hall {i},social_activity,52.6,-1.1,\n" for i in range(40_000)]  # ~1.5 MiB
    rows[30_000] = 'CA30000,"Hall,social_activity,52.6,-1.1,\n'
    _csv(folder, "community_assets", header + "".join(rows))
    with pytest.raises(DeliveryError, match=r"opened on line 30002 is never closed"):
        open_delivery(tmp_path)


def test_the_private_copy_is_parsed_beside_the_warehouse_and_removed(tmp_path):
    """Ingest copies each file (as hashed) into the warehouse's folder to parse it; no copy
    is left behind, after a good delivery or a refused one."""
    make_delivery(tmp_path / "good")
    bad = make_delivery(tmp_path / "bad", extract_date=D2)
    _csv(bad, "ppn", "nhs_number,nhs_number\n1,2\n")
    home = tmp_path / "home"
    home.mkdir()
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    counts = load_raw(con, open_delivery(tmp_path / "good"))
    assert counts["gp_patients"] == len(default_rows()["gp_patients"])
    with pytest.raises(DeliveryError, match="duplicate column"):
        load_raw(con, open_delivery(tmp_path / "bad"))
    con.close()
    assert not [p.name for p in home.iterdir() if p.name.startswith("phm-ingest-")]
