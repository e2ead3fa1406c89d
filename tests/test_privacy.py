"""Pseudonymisation and disclosure control."""

import duckdb
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phm.disclosure import DisclosurePolicy, protect_count, protect_rate, protect_value
from phm.pseudonymise import (
    KeyMissing,
    build_identity,
    identifier_columns,
    load_key,
    person_id,
    person_id_sql,
    sql_params,
)


@settings(max_examples=50, deadline=None)
@given(key=st.binary(min_size=1, max_size=100), nhs=st.text("0123456789", min_size=10, max_size=10))
def test_duckdb_hmac_equals_python_hmac(key, nhs):
    con = duckdb.connect()
    got = con.execute(
        f"SELECT {person_id_sql('$nhs')}", {**sql_params(key), "nhs": nhs}
    ).fetchone()[0]
    assert got == person_id(nhs, key)


def test_identity_table_is_one_row_per_person(tmp_path):
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE p AS SELECT * FROM (VALUES ('9990000018'), ('9990000026'), ('9990000018')) t(nhs_number)"
    )
    assert build_identity(con, b"k" * 32, "p") == 2
    rows = dict(con.execute("SELECT nhs_number, person_id FROM marts.person_identity").fetchall())
    assert rows["9990000018"] == person_id("9990000018", b"k" * 32)
    assert rows["9990000018"] != person_id("9990000018", b"other-key-000000")


def test_identifier_columns_names_marts_tables_holding_nhs_numbers():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE SCHEMA staging")
    con.execute("CREATE TABLE marts.person_identity (person_id VARCHAR, nhs_number VARCHAR)")
    con.execute("CREATE TABLE marts.segments (person_id VARCHAR, segment VARCHAR)")
    con.execute("CREATE TABLE staging.gp_events (nhs_number VARCHAR)")  # not a mart
    assert identifier_columns(con) == []
    con.execute("CREATE TABLE marts.efi (NHS_Number VARCHAR, efi_score DOUBLE)")
    con.execute("ALTER TABLE marts.segments ADD COLUMN nhs_number VARCHAR")
    assert identifier_columns(con) == ["marts.efi", "marts.segments"]


def test_key_configuration(tmp_path, monkeypatch):
    for var in ("PHM_PSEUDONYMISATION_KEY", "PHM_PSEUDONYMISATION_KEY_FILE", "PHM_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PHM_DEV_KEY_FILE", str(tmp_path / "dev.key"))
    first = load_key()
    assert (tmp_path / "dev.key").exists() and load_key() == first  # stable once generated
    monkeypatch.setenv("PHM_MODE", "production")
    with pytest.raises(KeyMissing, match="PHM_MODE=production needs a pseudonymisation key"):
        load_key()
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(KeyMissing, match="does not exist"):
        load_key()
    (tmp_path / "prod.key").write_text("a-long-production-secret-of-40-characters\n")
    (tmp_path / "prod.key").chmod(0o600)
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY_FILE", str(tmp_path / "prod.key"))
    assert load_key() == b"a-long-production-secret-of-40-characters"
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", "from-env-0123456789abcdef0123456789")
    assert load_key() == b"from-env-0123456789abcdef0123456789"


def test_small_counts_hidden_and_others_rounded():
    policy = DisclosurePolicy()
    df = pl.DataFrame({"n": [0, 1, 7, 8, 10, 12, 13, 102, None]})
    out = df.select(protect_count(pl.col("n"), policy))["n"].to_list()
    assert out == ["0", "*", "*", "10", "10", "10", "15", "100", None]
    assert protect_value(3, policy) == "*" and protect_value(23, policy) == "25"
    custom = DisclosurePolicy(suppress_max=4, round_to=10)
    assert protect_value(5, custom) == "10" and protect_value(4, custom) == "*"


def test_rates_on_few_events_are_not_shown():
    df = pl.DataFrame({"rate": [1.5, 2.5], "events": [9, 10]})
    out = df.select(protect_rate(pl.col("rate"), pl.col("events"), DisclosurePolicy()))
    assert out["rate"].to_list() == [None, 2.5]
