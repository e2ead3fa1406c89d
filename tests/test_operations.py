"""Operations drills: degrade instead of failing the night, one run at a time per home,
readers on the published copy, and a killed run leaving the last good state whole.

Runs are on small deliveries (the factory's two-patient delivery, or 1,000 generated
patients). No timing assertions: concurrent runs are ordered by the lock file's contents.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from factory import make_delivery

import geo.maps
from phm.contract import TABLE_NAMES
from phm.manifest import write_manifest
from phm.paths import lock_path, published_path, run_root, warehouse_path
from phm.publish import IDENTIFIER_COLUMNS, identifier_columns
from phm.runhome import home_lock
from phm.synth import generate
from pipelines.runner import run_pipeline

KEY = "0123456789abcdef0123456789abcdef0123"
OLD, NEW = date(2026, 11, 1), date(2026, 11, 8)
RAW = [f"raw/{t}" for t in TABLE_NAMES] + ["raw/_delivery"]
PHM = str(Path(sys.executable).parent / "phm")
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", KEY)


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _extract_date(db: Path, table: str = "raw._delivery") -> date:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT extract_date FROM {table}").fetchone()[0]
    finally:
        con.close()


def _state(home: Path) -> dict:
    """What readers and PCNs see: warehouse and published delivery, the exports' bytes."""
    return {
        "warehouse": _extract_date(warehouse_path(home)),
        "published": _extract_date(published_path(home), "reports.published"),
        "exports": _hash_tree(home / "exports"),
    }


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory):
    """A full run over the factory's two-patient delivery (too small to train a risk model or
    to cluster), with the maps of PCN U00002 made to fail."""
    root = tmp_path_factory.mktemp("ops")
    extracts, home = root / "extracts", root / "home"
    make_delivery(extracts, extract_date=OLD)
    real = geo.maps.plot_choropleth

    def failing(*args, **kwargs):
        if kwargs.get("pcn_code") == "U00002":
            raise RuntimeError("simulated rendering failure")
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
        mp.setenv("PHM_MAP_WORKERS", "1")  # in process, where the patched renderer is
        mp.setattr(geo.maps, "plot_choropleth", failing)
        summary = run_pipeline(extracts, home)
    return extracts, home, summary


def test_tiny_delivery_degrades_risk_and_still_produces_every_other_output(tiny_home):
    _, home, summary = tiny_home
    assert "marts/risk_scores" in summary.materialized
    con = duckdb.connect(str(warehouse_path(home)), read_only=True)
    status, reason = con.execute("SELECT status, reason FROM reports.risk_model_status").fetchone()
    assert status == "skipped" and "too few outcomes" in reason
    assert con.execute("SELECT count(*) FROM marts.risk_scores").fetchone()[0] == 0
    members = dict(
        con.execute("SELECT cohort_id, count(*) FROM marts.cohort_members GROUP BY 1").fetchall()
    )
    cohorts = {
        r[0] for r in con.execute("SELECT cohort_id FROM marts.cohort_definitions").fetchall()
    }
    con.close()
    assert "high_risk" in cohorts and members.get("high_risk", 0) == 0
    out = home / "exports" / OLD.isoformat()
    assert "skipped" in (out / "risk_model_status.md").read_text()
    for pcn in ("U00001", "U00002"):
        assert (out / pcn / "risk_register.csv").is_file()
        assert (out / pcn / "cohorts.xlsx").is_file()
        assert {p.stem for p in (out / pcn / "cohorts").glob("*.csv")} == cohorts
    assert (out / "summary.csv").is_file()


def test_one_pcn_map_failure_leaves_the_other_pcns_maps_and_exports(tiny_home):
    _, home, _ = tiny_home
    out = home / "exports" / OLD.isoformat()
    assert (out / "U00001" / "maps" / "need_map.html").is_file()
    assert any((out / "U00001" / "maps").glob("*.png"))
    assert not (out / "U00002" / "maps").exists()
    assert (out / "U00002" / "need_by_lsoa.gpkg").is_file()
    assert (out / "U00002" / "manifest.json").is_file()


def test_published_copy_holds_no_identifiers(tiny_home):
    _, home, summary = tiny_home
    con = duckdb.connect(str(published_path(home)), read_only=True)
    schemas = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT table_schema FROM information_schema.tables"
        ).fetchall()
    }
    columns = {
        r[0].lower()
        for r in con.execute("SELECT column_name FROM information_schema.columns").fetchall()
    }
    tables = {
        f"{s}.{t}"
        for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
        ).fetchall()
    }
    run_id = con.execute("SELECT run_id FROM reports.published").fetchone()[0]
    con.close()
    assert schemas <= {"marts", "geo", "reports", "reference"}
    assert not schemas & {"raw", "staging", "quarantine"}
    assert "marts.person_identity" not in tables and "geo.need_by_lsoa" not in tables
    assert {
        "marts.patient_measures",
        "marts.cohort_members",
        "geo.need_by_lsoa_published",
    } <= tables
    assert not columns & IDENTIFIER_COLUMNS
    assert run_id == summary.run_id
    # the pipeline's own warehouse still has the identity table (for direct-care exports)
    con = duckdb.connect(str(warehouse_path(home)), read_only=True)
    assert identifier_columns(con) != []
    con.close()
    # nothing of the run is left in its workspace
    assert list(run_root(home).iterdir()) == []


def _trim_sus_to_12_months(folder: Path, extract_date: date) -> None:
    cutoff = date(extract_date.year - 1, extract_date.month, extract_date.day).isoformat()
    columns = {
        "sus_apc": "admission_date",
        "sus_ecds": "arrival_datetime",
        "sus_op": "appointment_date",
    }
    for table, col in columns.items():
        path = folder / f"{table}.csv"
        df = pl.read_csv(path, infer_schema=False)
        df.filter(pl.col(col) > cutoff).write_csv(path)
    files = {t: folder / f"{t}.csv" for t in TABLE_NAMES}
    write_manifest(folder, extract_date.isoformat(), files)


def test_short_hospital_history_reuses_the_last_good_model(tmp_path):
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    generate(extracts, patients=1000, seed=3, extract_date=OLD)
    run_pipeline(extracts, home)
    assert (home / "models" / OLD.isoformat() / "emergency_admission_risk.joblib").is_file()
    later = date(2026, 12, 1)
    generate(extracts, patients=1000, seed=3, extract_date=later)
    _trim_sus_to_12_months(extracts / later.isoformat(), later)
    run_pipeline(extracts, home)
    con = duckdb.connect(str(published_path(home)), read_only=True)
    status, reason, version = con.execute(
        "SELECT status, reason, model_version FROM reports.risk_model_status"
    ).fetchone()
    scored = con.execute("SELECT count(*) FROM marts.risk_scores").fetchone()[0]
    high_risk = con.execute(
        "SELECT count(*) FROM marts.cohort_members WHERE cohort_id = 'high_risk'"
    ).fetchone()[0]
    con.close()
    assert status == "reused" and "reusing the last good model" in reason
    assert version.startswith(f"emergency-admission-12m/{OLD.isoformat()}/")
    assert scored > 0 and high_risk > 0
    assert "reused" in (home / "exports" / later.isoformat() / "risk_model_status.md").read_text()


def test_no_wait_exits_75_while_another_run_holds_the_home(tmp_path):
    home = tmp_path / "home"
    with home_lock(home):
        assert lock_path(home).read_text().strip() == str(os.getpid())
        out = subprocess.run(
            [PHM, "run", "--no-wait", "--extracts", str(tmp_path), "--home", str(home)],
            capture_output=True,
            text=True,
        )
    assert out.returncode == 75
    assert "another run holds" in out.stderr and str(os.getpid()) in out.stderr


def _start(extracts: Path, home: Path, delivery: date, *extra: str, env=None):
    cmd = [PHM, "run", "--extracts", str(extracts), "--home", str(home)]
    cmd += ["--delivery", delivery.isoformat(), *extra]
    for key in RAW:
        cmd += ["--select", key]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PHM_PSEUDONYMISATION_KEY": KEY, **(env or {})},
    )


def _wait_until(predicate, proc) -> None:
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)


def test_two_concurrent_runs_end_on_the_newer_delivery(tmp_path):
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    make_delivery(extracts, extract_date=OLD)
    make_delivery(extracts, extract_date=NEW)
    home.mkdir()
    older = _start(extracts, home, OLD)
    # the older delivery's run holds the lock before the newer one starts
    _wait_until(
        lambda: lock_path(home).exists() and lock_path(home).read_text().strip() == str(older.pid),
        older,
    )
    newer = _start(extracts, home, NEW)
    out_new = newer.communicate()
    out_old = older.communicate()
    assert older.returncode == 0, out_old
    assert newer.returncode == 0, out_new
    assert "waiting for the run that holds" in out_new[1] and str(older.pid) in out_new[1]
    assert _extract_date(warehouse_path(home)) == NEW
    assert _extract_date(published_path(home), "reports.published") == NEW


def test_a_reader_holding_the_published_copy_does_not_block_a_run(tmp_path):
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    make_delivery(extracts, extract_date=OLD)
    run_pipeline(extracts, home, selection=RAW)
    reader = duckdb.connect(str(published_path(home)), read_only=True)
    old_style = duckdb.connect(str(warehouse_path(home)), read_only=True)
    assert reader.execute("SELECT extract_date FROM reports.published").fetchone()[0] == OLD
    make_delivery(extracts, extract_date=NEW)
    run_pipeline(extracts, home, selection=RAW)
    # the open connection still sees the run it opened, whole
    assert reader.execute("SELECT extract_date FROM reports.published").fetchone()[0] == OLD
    reader.close()
    old_style.close()
    assert _extract_date(published_path(home), "reports.published") == NEW
    assert _extract_date(warehouse_path(home)) == NEW


KILL_POINTS = ["ingest_delivery", "validate_gp_events", "patient_measures", "exports__pcn_exports"]


def test_killed_runs_leave_the_last_good_state_and_the_next_run_succeeds(tiny_home, tmp_path):
    extracts, good, _ = tiny_home
    home = tmp_path / "home"
    shutil.copytree(good, home)
    before = _state(home)
    assert before["warehouse"] == before["published"] == OLD
    make_delivery(extracts, extract_date=NEW)
    cmd = [PHM, "run", "--extracts", str(extracts), "--home", str(home)]
    env = {**os.environ, "PHM_PSEUDONYMISATION_KEY": KEY}
    for kill_at in KILL_POINTS:  # SIGKILL during ingest, validation, measures, exports
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**env, "PHM_TEST_KILL_AT": kill_at}
        )
        assert proc.returncode == -signal.SIGKILL, (kill_at, proc.stderr[-2000:])
        assert _state(home) == before, kill_at
    # killed half-way through promotion (warehouse and models moved, exports not yet): the
    # next run finishes the promotion from the journal before it starts
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**env, "PHM_TEST_KILL_AT": "promote:exports"}
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert any((p / "PROMOTE").exists() for p in run_root(home).iterdir())
    proc = subprocess.run(
        cmd + [a for k in RAW for a in ("--select", k)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished the promotion" in proc.stderr
    after = _state(home)
    assert after["warehouse"] == after["published"] == NEW
    new_exports = home / "exports" / NEW.isoformat()
    assert (new_exports / "U00001" / "risk_register.csv").is_file()
    assert {k for k in after["exports"] if k.startswith(OLD.isoformat())} == {
        k for k in before["exports"] if k.startswith(OLD.isoformat())
    }
    assert list(run_root(home).iterdir()) == []
