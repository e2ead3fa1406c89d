"""The whole pipeline on generated deliveries: faults found exactly, PCN exports separate,
no identifiers in the Dagster event log, exports byte-identical across runs."""

import hashlib
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from phm.contract import TABLE_NAMES
from phm.delivery import open_delivery
from phm.ingest import load_raw
from phm.paths import sidecar_dir
from phm.synth import generate
from phm.validate import validate_table, warehouse_reference_keys
from pipelines.runner import PipelineFailed, run_pipeline

ED = date(2026, 11, 1)


@pytest.fixture(scope="module")
def run_home(tmp_path_factory):
    """One clean generated delivery, run twice through Dagster into the same home."""
    root = tmp_path_factory.mktemp("e2e")
    extracts, home = root / "extracts", root / "home"
    generate(extracts, patients=3000, seed=11, extract_date=ED)
    first = run_pipeline(extracts, home)
    hashes = _hash_tree(home / "exports")
    second = run_pipeline(extracts, home)
    return extracts, home, first, second, hashes


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_generated_faults_are_exactly_what_validation_quarantines(tmp_path):
    generate(tmp_path, patients=2000, seed=5, extract_date=ED, faults=0.02)
    faults = pl.read_csv(sidecar_dir(tmp_path, ED.isoformat()) / "faults.csv", infer_schema=False)
    assert faults.height > 0
    con = duckdb.connect()
    load_raw(con, open_delivery(tmp_path))
    found = []
    for table in TABLE_NAMES:
        raw = con.execute(f"SELECT * FROM raw.{table}").pl()
        result = validate_table(table, raw, ED, warehouse_reference_keys(con, table))
        assert result.staging.height + result.quarantine.height == raw.height
        found.append(
            result.quarantine.select(
                pl.lit(table).alias("table"),
                pl.col("_row_number").cast(pl.Int64).alias("row_number"),
                pl.col("failed_rules"),
            )
        )
    quarantined = pl.concat(found)
    injected = faults.select("table", pl.col("row_number").cast(pl.Int64), "column", "fault")
    got = set(quarantined.select("table", "row_number").iter_rows())
    want = set(injected.select("table", "row_number").iter_rows())
    assert got == want, (sorted(got - want)[:10], sorted(want - got)[:10])
    # and each row was quarantined for a rule about the column the fault was put in
    joined = injected.join(quarantined, on=["table", "row_number"])
    misnamed = joined.filter(
        ~pl.struct("column", "failed_rules").map_elements(
            lambda r: any(r["column"] in rule for rule in r["failed_rules"]),
            return_dtype=pl.Boolean,
        )
    )
    assert misnamed.height == 0, misnamed.head(10)
    assert set(injected["fault"]) >= {
        "bad_nhs_number",
        "future_date",
        "date_order",
        "malformed_code",
        "not_allowed_value",
        "duplicate_key",
        "orphan_reference",
        "missing_required",
    }


def test_every_asset_materialised_both_times(run_home):
    _, _, first, second, _ = run_home
    assert first.materialized == second.materialized
    assert {"raw/gp_patients", "staging/gp_patients", "marts/patient_measures"} <= set(
        first.materialized
    )


def test_each_pcn_export_holds_only_its_own_patients(run_home):
    _, home, *_ = run_home
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    pcn_of = dict(
        con.execute(
            "SELECT i.nhs_number, pm.pcn_code FROM marts.patient_measures pm "
            "JOIN marts.person_identity i USING (person_id)"
        ).fetchall()
    )
    con.close()
    out = home / "exports" / ED.isoformat()
    pcns = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(pcns) >= 2
    seen = 0
    for pcn in pcns:
        patient_files = [out / pcn / "risk_register.csv", *(out / pcn / "cohorts").glob("*.csv")]
        for csv in (out / pcn).rglob("*.csv"):
            df = pl.read_csv(csv, infer_schema=False)
            if "nhs_number" not in df.columns:
                # area tables (e.g. maps/asset_gaps.csv) hold no patient rows
                assert csv not in patient_files
                continue
            wrong = [n for n in df["nhs_number"] if pcn_of.get(n) != pcn]
            assert wrong == [], f"{csv}: {len(wrong)} patients of another PCN"
            seen += df.height
    assert seen > 0


def test_no_identifier_in_dagster_storage_or_published_outputs(run_home):
    extracts, home, *_ = run_home
    patients = pl.read_csv(extracts / ED.isoformat() / "gp_patients.csv", infer_schema=False)
    nhs = set(patients["nhs_number"].drop_nulls())
    dobs = set(patients["date_of_birth"].drop_nulls())
    # the Dagster event log and compute logs
    blobs = [p.read_bytes() for p in (home / "dagster").rglob("*") if p.is_file()]
    assert blobs
    import re

    digits10 = re.compile(rb"(?<!\d)\d{10}(?!\d)")
    leaked = {m.decode() for b in blobs for m in digits10.findall(b)} & nhs
    assert leaked == set()
    # published outputs: the summary and the data quality report
    out = home / "exports" / ED.isoformat()
    for name in ("summary.csv", "data_quality.md"):
        text = (out / name).read_text()
        assert not any(n in text for n in nhs)
        assert not any(d in text for d in list(dobs)[:2000])


def test_summary_counts_are_disclosure_controlled(run_home):
    _, home, *_ = run_home
    summary = pl.read_csv(home / "exports" / ED.isoformat() / "summary.csv", infer_schema=False)
    for col in ("registered", "members"):
        for v in summary[col]:
            assert v == "*" or int(v) % 5 == 0


def test_exports_are_identical_across_runs(run_home):
    _, home, _, _, hashes = run_home
    assert hashes == _hash_tree(home / "exports")


def test_bad_delivery_fails_and_marts_keep_the_last_good_state(run_home):
    """Runs last: it adds a newer, corrupt delivery to the extracts."""
    extracts, home, *_ = run_home
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    before = con.execute("SELECT count(*), sum(ltc_count) FROM marts.patient_measures").fetchone()
    con.close()
    bad = ED.replace(day=8).isoformat()
    generate(extracts, patients=300, seed=2, extract_date=ED.replace(day=8))
    path = extracts / bad / "sus_apc.csv"
    path.write_bytes(path.read_bytes()[:-200])  # truncated in transit
    with pytest.raises(PipelineFailed, match=r"sus_apc\.csv: sha256 differs from the manifest"):
        run_pipeline(extracts, home)
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT extract_date FROM raw._delivery").fetchone()[0] == ED
    after = con.execute("SELECT count(*), sum(ltc_count) FROM marts.patient_measures").fetchone()
    assert after == before and before[0] > 0
    con.close()
