"""History across deliveries (phm/history.py, reports/delivery_history) and the delivery
partitions the new-delivery sensor records (pipelines/sensors.py)."""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
import duckdb
import polars as pl
import pytest
from factory import make_delivery

from phm.disclosure import protect_value
from phm.history import HISTORY_TABLES, TREND_FILE, history_metadata, pcn_measure_trend
from phm.synth import generate
from pipelines.resources import Settings
from pipelines.runner import run_pipeline
from pipelines.sensors import build_new_delivery_sensor

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)
KEY = "0123456789abcdef0123456789abcdef0123"


def _rows(home, table, extract_date):
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return sorted(
            con.execute(f"SELECT * FROM {table} WHERE extract_date = ?", [extract_date]).fetchall(),
            key=repr,
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two deliveries run in sequence in one home, then the first one re-run."""
    root = tmp_path_factory.mktemp("history")
    extracts, home = root / "extracts", root / "home"
    for d in (OCT, NOV):
        generate(extracts, patients=1000, seed=5, extract_date=d)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
        run_pipeline(extracts, home, delivery=OCT.isoformat())
        first = {t: _rows(home, t, OCT) for t in HISTORY_TABLES}
        run_pipeline(extracts, home, delivery=NOV.isoformat())
        before = {t: _rows(home, t, NOV) for t in HISTORY_TABLES}
        run_pipeline(extracts, home, delivery=OCT.isoformat())
    return extracts, home, first, before


def test_history_tables_hold_both_deliveries(runs):
    _, home, _, _ = runs
    for table in HISTORY_TABLES:
        assert _rows(home, table, OCT), table
        assert _rows(home, table, NOV), table
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        dq = con.execute(
            "SELECT rows_delivered, rows_accepted + rows_quarantined FROM "
            "reports.history_data_quality"
        ).fetchall()
        status = con.execute("SELECT status FROM reports.history_model").fetchall()
    assert all(delivered == kept for delivered, kept in dq)
    assert {s for (s,) in status} <= {"trained", "current", "reused", "skipped"}


def test_rerun_replaces_only_its_own_rows(runs):
    _, home, first, before = runs
    for table in HISTORY_TABLES:
        # the other delivery is untouched; the re-run delivery has its rows once, as before
        assert _rows(home, table, NOV) == before[table], table
        assert _rows(home, table, OCT) == first[table], table


def test_trend_chart_in_every_pcn_folder(runs):
    _, home, _, _ = runs
    for d in (OCT, NOV):
        folder = home / "exports" / d.isoformat()
        pcns = [p for p in folder.iterdir() if (p / "manifest.json").is_file()]
        assert pcns
        for pcn in pcns:
            png = pcn / TREND_FILE
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            manifest = json.loads((pcn / "manifest.json").read_text())
            assert TREND_FILE in manifest["files"]


def test_metadata_is_disclosure_controlled(runs):
    _, home, _, _ = runs
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        figures = history_metadata(con, NOV)
        exact = con.execute("SELECT count(*) FROM marts.patient_measures").fetchone()[0]
    assert figures["registered"] % 5 == 0
    assert abs(figures["registered"] - exact) < exact * 0.1
    assert figures["rows_delivered"] % 5 == 0


def test_pcn_totals_are_the_protected_totals_not_sums_of_suppressed_cells(runs):
    """Each PCN's trend figure rests on its total through the disclosure rule (the totals the
    joint need-table protection treats as published), not on a sum of quintile cells of which
    some are suppressed (an undercount)."""
    _, home, _, _ = runs
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        exact = dict(
            con.execute(
                "SELECT pcn_code, sum(population) FROM geo.need_by_imd_quintile GROUP BY pcn_code"
            ).fetchall()
        )
        totals = dict(
            con.execute(
                "SELECT pcn_code, registered FROM reports.history_measures "
                "WHERE scope = 'total' AND extract_date = ?",
                [OCT],
            ).fetchall()
        )
        quintile_cells = con.execute(
            "SELECT count(*) FILTER (WHERE registered = '*'), count(*) "
            "FROM reports.history_measures WHERE scope = 'quintile' AND extract_date = ?",
            [OCT],
        ).fetchone()
        trend = {
            pcn: pcn_measure_trend(con, pcn).filter(pl.col("extract_date") == OCT) for pcn in exact
        }
    assert set(totals) == set(exact)
    assert quintile_cells[1] > 0
    for pcn, n in exact.items():
        assert totals[pcn] == protect_value(int(n))
        assert trend[pcn]["registered"].item() == int(protect_value(int(n)))


def test_sensor_adds_delivery_partitions(tmp_path):
    extracts = tmp_path / "extracts"
    for d in (OCT, NOV):
        make_delivery(extracts, extract_date=d)
    settings = Settings(extracts_root=extracts, home=tmp_path / "home")
    job = dg.define_asset_job("phm_nightly")
    sensor = build_new_delivery_sensor(settings, job)
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance))
        assert [r.run_key for r in result.run_requests] == [OCT.isoformat(), NOV.isoformat()]
        (request,) = result.dynamic_partitions_requests
        assert request.partitions_def_name == "delivery"
        assert list(request.partition_keys) == [OCT.isoformat(), NOV.isoformat()]
        # the cursor moves past both: the next evaluation asks for nothing more
        again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert isinstance(again, dg.SkipReason)


def test_trend_charts_drawn_in_workers_are_byte_identical(runs, tmp_path):
    """Two worker processes write the same PNGs and manifests, byte for byte, as drawing every
    chart in this process."""
    import shutil

    from phm.history import write_trend_charts

    _, home, _, _ = runs
    src = home / "exports" / NOV.isoformat()
    outs = {n: tmp_path / f"w{n}" for n in (1, 2)}
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        for n, out in outs.items():
            shutil.copytree(src, out)
            for png in out.glob(f"*/{TREND_FILE}"):
                png.unlink()  # drawn again below
            written = write_trend_charts(con, out, NOV, workers=n)
    assert len(written) >= 2
    files = {
        n: sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        for n, out in outs.items()
    }
    assert files[1] == files[2]
    assert any(p.name == TREND_FILE for p in files[1])
    for rel in files[1]:
        assert (outs[1] / rel).read_bytes() == (outs[2] / rel).read_bytes(), rel
