"""Deliveries as Dagster partitions (pipelines/partitions.py): every nightly asset is
partitioned by delivery, a run of partition ``<extract date>`` reads that delivery whoever
launches it, and re-running an older delivery after a newer one rebuilds that delivery's
exports and history rows without touching the other delivery's.

One home, two generated deliveries (October, November), three runs in sequence:

1. ``phm run`` without ``--delivery`` (:func:`pipelines.runner.run_pipeline`): the latest
   delivery, November, as its partition;
2. a launch of partition October as the UI's *Materialize* (or a backfill's first run) does
   it: the job of the code location (settings from the environment, no delivery pinned)
   executed for one partition on the home's Dagster instance;
3. partition November the same way: with 2, what a backfill of both deliveries launches.
"""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
import duckdb
import pytest

from phm.history import HISTORY_TABLES
from phm.paths import dagster_home, warehouse_path
from phm.synth import generate
from pipelines.definitions import NIGHTLY_JOB, build_definitions
from pipelines.partitioned import GROUP as PCN_GROUP
from pipelines.partitioned import PCN_PARTITIONS
from pipelines.partitions import DELIVERY_PARTITIONS, register_delivery
from pipelines.resources import Settings
from pipelines.runner import run_pipeline

OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)
KEY = "0123456789abcdef0123456789abcdef0123"
DELIVERY = dg.AssetKey(["raw", "_delivery"])
HISTORY = dg.AssetKey(["reports", "delivery_history"])


def _state(home) -> dict:
    """What the home's warehouse holds: the delivery in raw (the extract date every later
    step reads) and per history table the row count of each delivery."""
    with duckdb.connect(str(warehouse_path(home)), read_only=True) as con:
        raw = con.execute("SELECT extract_date FROM raw._delivery").fetchone()[0]
        history = {
            table: dict(
                con.execute(
                    f"SELECT extract_date, count(*) FROM {table} GROUP BY 1 ORDER BY 1"
                ).fetchall()
            )
            for table in HISTORY_TABLES
        }
    return {"raw": raw, "history": history}


def _launch(extracts, home, partition: str) -> dg.ExecuteInProcessResult:
    """One partition run as the UI launches it: the code location's job (nothing pinned
    but the folders), on the home's Dagster instance, tagged with the partition."""
    defs = build_definitions(Settings(extracts, home))
    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    try:
        # the UI offers the partitions the instance knows (the sensor adds each delivery)
        register_delivery(instance, partition)
        return defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
            instance=instance, partition_key=partition, raise_on_error=False
        )
    finally:
        instance.dispose()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("delivery_partitions")
    extracts, home = root / "extracts", root / "home"
    for d in (OCT, NOV):
        generate(extracts, patients=1500, seed=11, extract_date=d)
    states = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
        run_pipeline(extracts, home)
        states["latest"] = _state(home)
        older = _launch(extracts, home, OCT.isoformat())
        assert older.success
        states["older"] = _state(home)
        newer = _launch(extracts, home, NOV.isoformat())
        assert newer.success
        states["newer"] = _state(home)
    return extracts, home, states, older, newer


def test_every_nightly_asset_is_partitioned_by_delivery(tmp_path):
    defs = build_definitions(Settings(tmp_path / "x", tmp_path / "home"))
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(NIGHTLY_JOB)
    assert job.partitions_def == DELIVERY_PARTITIONS
    nightly = {n.key for n in job.asset_layer.asset_graph.asset_nodes if n.is_executable}
    assert len(nightly) > 50
    for key in nightly:
        assert graph.get(key).partitions_def == DELIVERY_PARTITIONS, key.to_user_string()
    # the scale-out job keeps its PCN partitions and reads all deliveries' marts
    pcn = graph.get(dg.AssetKey(["exports", "by_pcn", "exports"]))
    assert pcn.group_name == PCN_GROUP and pcn.partitions_def == PCN_PARTITIONS
    marts = dg.AssetKey(["marts", "patient_measures"])
    assert isinstance(pcn.partition_mappings[marts], dg.AllPartitionMapping)


def test_phm_run_runs_the_latest_delivery_as_its_partition(runs):
    _, home, states, _, _ = runs
    assert states["latest"]["raw"] == NOV
    with dg.DagsterInstance.from_config(str(dagster_home(home))) as instance:
        first = instance.get_runs(limit=3)[-1]  # the oldest of the three runs
        assert first.tags["dagster/partition"] == NOV.isoformat()
        assert instance.get_dynamic_partitions(DELIVERY_PARTITIONS.name) == [
            NOV.isoformat(),
            OCT.isoformat(),
        ]


def test_older_partition_after_the_newer_reads_the_older_delivery(runs):
    _, home, states, older, _ = runs
    after = states["older"]
    assert after["raw"] == OCT
    # the materialisations are recorded for that partition, with that delivery's metadata
    [ingest] = [e for e in older.get_asset_materialization_events() if e.asset_key == DELIVERY]
    assert ingest.partition == OCT.isoformat()
    assert ingest.materialization.metadata["extract_date"].value == OCT.isoformat()
    # its exports folder was (re)built, dated by its extract date; November's is still there
    for d in (OCT, NOV):
        manifests = sorted((home / "exports" / d.isoformat()).glob("*/manifest.json"))
        assert manifests
        for m in manifests:
            assert json.loads(m.read_text(encoding="utf-8"))["extract_date"] == d.isoformat()
    # history holds both deliveries; November's rows untouched by the October run
    for table in HISTORY_TABLES:
        counts = after["history"][table]
        assert set(counts) == {OCT, NOV}, table
        assert counts[NOV] == states["latest"]["history"][table][NOV], table
    assert after["history"]["reports.history_model"] == {OCT: 1, NOV: 1}


def test_backfill_of_both_partitions_keeps_one_row_set_per_delivery(runs):
    _, home, states, older, newer = runs
    final = states["newer"]
    assert final["raw"] == NOV
    for table in HISTORY_TABLES:
        # each delivery's rows once: the November re-run replaced its own rows, the same count
        assert final["history"][table] == states["older"]["history"][table], table
    assert final["history"]["reports.history_model"] == {OCT: 1, NOV: 1}
    with dg.DagsterInstance.from_config(str(dagster_home(home))) as instance:
        for key in (DELIVERY, HISTORY):
            assert instance.get_materialized_partitions(key) == {OCT.isoformat(), NOV.isoformat()}
        for result, d in ((older, OCT), (newer, NOV)):
            assert instance.get_run_by_id(result.run_id).tags["dagster/partition"] == d.isoformat()
        event = instance.get_latest_materialization_event(HISTORY)
        assert event.run_id == newer.run_id
        assert event.asset_materialization.partition == NOV.isoformat()


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
