"""Sensors and the schedule: a new complete delivery starts one run of its partition
(cursor), incomplete folders are ignored, the nightly schedule requests the latest complete
delivery's partition, a failed run writes an alert file naming the run, the step and the
reason."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from factory import NHS, make_delivery

from pipelines.definitions import NIGHTLY_JOB, build_definitions
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import Settings
from pipelines.sensors import DELIVERY_TAG

D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 8), date(2026, 11, 15)
RAW = [dg.AssetKey(["raw", "_delivery"])]


def _defs(tmp_path: Path) -> dg.Definitions:
    (tmp_path / "home").mkdir(exist_ok=True)
    return build_definitions(Settings(tmp_path / "extracts", tmp_path / "home"))


def _tick(defs: dg.Definitions, cursor: str | None, instance=None):
    sensor = defs.get_sensor_def("new_delivery_sensor")
    if instance is None:
        # the requests' partition keys are checked against an instance (as the daemon does)
        with dg.instance_for_test() as temporary:
            return _tick(defs, cursor, temporary)
    context = dg.build_sensor_context(
        cursor=cursor, instance=instance, instance_ref=instance.get_ref(), definitions=defs
    )
    return sensor.evaluate_tick(context)


def test_new_delivery_starts_one_run_per_delivery_and_moves_the_cursor(tmp_path):
    extracts = tmp_path / "extracts"
    make_delivery(extracts, extract_date=D1)
    defs = _defs(tmp_path)

    first = _tick(defs, None)
    assert [r.run_key for r in first.run_requests] == ["2026-11-01"]
    request = first.run_requests[0]
    # a run of the delivery's partition, the key added in the same tick
    assert request.partition_key == "2026-11-01"
    (added,) = first.dynamic_partitions_requests
    assert added.partitions_def_name == DELIVERY_PARTITIONS.name
    assert list(added.partition_keys) == ["2026-11-01"]
    assert request.tags[DELIVERY_TAG] == "2026-11-01"
    assert request.run_config["resources"]["settings"]["config"]["delivery"] == "2026-11-01"
    assert first.cursor == "2026-11-01"

    # nothing new: no run, same delivery never requested twice
    again = _tick(defs, first.cursor)
    assert again.run_requests == []
    assert again.skip_message and "2026-11-01" in again.skip_message

    # a folder still arriving (no manifest) is ignored until its manifest appears
    make_delivery(extracts, extract_date=D2, manifest=False)
    assert _tick(defs, first.cursor).run_requests == []
    make_delivery(extracts, extract_date=D2)
    make_delivery(extracts, extract_date=D3)
    later = _tick(defs, first.cursor)
    assert [r.run_key for r in later.run_requests] == ["2026-11-08", "2026-11-15"]
    assert [r.partition_key for r in later.run_requests] == ["2026-11-08", "2026-11-15"]
    assert list(later.dynamic_partitions_requests[0].partition_keys) == ["2026-11-08", "2026-11-15"]
    assert later.cursor == "2026-11-15"


def test_missing_extracts_root_skips_with_a_reason(tmp_path):
    result = _tick(_defs(tmp_path), None)
    assert result.run_requests == []
    assert "extracts folder does not exist" in result.skip_message


def test_the_requested_run_reads_the_delivery_it_names(tmp_path):
    """The run config of the request pins the delivery, even when a newer one exists."""
    extracts = tmp_path / "extracts"
    make_delivery(extracts, extract_date=D1)
    make_delivery(extracts, extract_date=D2)
    defs = _defs(tmp_path)
    job = defs.resolve_job_def(NIGHTLY_JOB)
    with dg.instance_for_test() as instance:
        tick = _tick(defs, None, instance)
        request = next(r for r in tick.run_requests if r.run_key == "2026-11-01")
        # what the daemon does with the tick: add the partitions, then launch the runs
        for add in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
        result = job.execute_in_process(
            run_config=request.run_config,
            instance=instance,
            asset_selection=_ingest_keys(defs),
            tags=request.tags,
            partition_key=request.partition_key,
        )
        assert result.success
        assert result.dagster_run.tags["dagster/partition"] == "2026-11-01"
        materialized = instance.get_materialized_partitions(dg.AssetKey(["raw", "_delivery"]))
        assert materialized == {"2026-11-01"}
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT extract_date FROM raw._delivery").fetchone()[0] == D1
    finally:
        con.close()


def _ingest_keys(defs: dg.Definitions) -> list[dg.AssetKey]:
    graph = defs.resolve_asset_graph()
    return sorted(
        dg.AssetSelection.assets(*RAW).required_multi_asset_neighbors().resolve(graph),
        key=lambda k: k.to_user_string(),
    )


def test_failed_run_writes_an_alert_naming_run_step_and_reason(tmp_path):
    extracts = tmp_path / "extracts"
    folder = make_delivery(extracts, extract_date=D1)
    # truncate a file after the manifest was written: a file-level fault
    (folder / "gp_patients.csv").write_text("nhs_number\n", encoding="utf-8")
    defs = _defs(tmp_path)
    job = defs.resolve_job_def(NIGHTLY_JOB)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(DELIVERY_PARTITIONS.name, ["2026-11-01"])
        result = job.execute_in_process(
            instance=instance,
            asset_selection=_ingest_keys(defs),
            raise_on_error=False,
            tags={DELIVERY_TAG: "2026-11-01"},
            partition_key="2026-11-01",
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = result.get_run_failure_event()
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_alert",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
        ).for_run_failure()
        defs.get_sensor_def("run_failure_alert")(context)

    alerts = sorted((tmp_path / "home" / "alerts").iterdir())
    assert [p.suffix for p in alerts] == [".json", ".txt"]
    assert alerts[0].stem.endswith(result.run_id)
    alert = json.loads(alerts[0].read_text(encoding="utf-8"))
    assert alert["run_id"] == result.run_id
    assert alert["job"] == NIGHTLY_JOB
    assert alert["delivery"] == "2026-11-01"
    [step] = alert["failed_steps"]
    assert step["step"] == "ingest_delivery"
    assert "gp_patients.csv" in step["reason"] and "sha256" in step["reason"]
    text = alerts[1].read_text(encoding="utf-8")
    assert result.run_id in text and "step ingest_delivery failed" in text
    # no identifiers in the alert
    for nhs in NHS.values() if isinstance(NHS, dict) else NHS:
        assert str(nhs) not in text + alerts[0].read_text(encoding="utf-8")


def test_a_partition_run_pinned_to_another_delivery_fails_clearly(tmp_path):
    """Partition key and an explicit delivery setting must agree; no silent choice."""
    extracts = tmp_path / "extracts"
    make_delivery(extracts, extract_date=D1)
    make_delivery(extracts, extract_date=D2)
    (tmp_path / "home").mkdir()
    pinned = Settings(extracts, tmp_path / "home", delivery="2026-11-08")
    defs = build_definitions(pinned)
    job = defs.resolve_job_def(NIGHTLY_JOB)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(DELIVERY_PARTITIONS.name, ["2026-11-01", "2026-11-08"])
        result = job.execute_in_process(
            instance=instance,
            asset_selection=_ingest_keys(defs),
            raise_on_error=False,
            partition_key="2026-11-01",
        )
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        message = str(failure.step_failure_data.error)
        assert "partition 2026-11-01" in message and "delivery 2026-11-08" in message
        # the same setting with its own partition runs
        agreed = job.execute_in_process(
            instance=instance, asset_selection=_ingest_keys(defs), partition_key="2026-11-08"
        )
        assert agreed.success
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT extract_date FROM raw._delivery").fetchone()[0] == D2
    finally:
        con.close()


def _schedule_tick(defs: dg.Definitions, instance):
    schedule = defs.resolve_schedule_def("nightly_0200")
    context = dg.build_schedule_context(
        instance=instance, instance_ref=instance.get_ref(), repository_def=defs.get_repository_def()
    )
    return schedule.evaluate_tick(context)


def test_schedule_requests_the_latest_complete_delivery_partition(tmp_path):
    extracts = tmp_path / "extracts"
    make_delivery(extracts, extract_date=D1)
    make_delivery(extracts, extract_date=D2)
    make_delivery(extracts, extract_date=D3, manifest=False)  # still arriving
    defs = _defs(tmp_path)
    with dg.instance_for_test() as instance:
        tick = _schedule_tick(defs, instance)
        [request] = tick.run_requests
        assert request.partition_key == "2026-11-08"
        assert request.tags[DELIVERY_TAG] == "2026-11-08"
        assert instance.get_dynamic_partitions(DELIVERY_PARTITIONS.name) == ["2026-11-08"]
        # the next night, once the newer delivery is complete: its partition
        make_delivery(extracts, extract_date=D3)
        [later] = _schedule_tick(defs, instance).run_requests
        assert later.partition_key == "2026-11-15"
        assert instance.get_dynamic_partitions(DELIVERY_PARTITIONS.name) == [
            "2026-11-08",
            "2026-11-15",
        ]
        # a night without a new delivery runs the same partition again; the key is kept once
        [again] = _schedule_tick(defs, instance).run_requests
        assert again.partition_key == "2026-11-15"
        assert len(instance.get_dynamic_partitions(DELIVERY_PARTITIONS.name)) == 2


def test_schedule_skips_with_a_reason_when_there_is_no_complete_delivery(tmp_path):
    extracts = tmp_path / "extracts"
    make_delivery(extracts, extract_date=D1, manifest=False)
    defs = _defs(tmp_path)
    with dg.instance_for_test() as instance:
        tick = _schedule_tick(defs, instance)
        assert tick.run_requests == []
        assert "no complete delivery" in tick.skip_message
        assert instance.get_dynamic_partitions(DELIVERY_PARTITIONS.name) == []


def test_sensors_are_registered_and_off_by_default(tmp_path):
    defs = _defs(tmp_path)
    for name in ("new_delivery_sensor", "run_failure_alert"):
        sensor = defs.get_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", "0123456789abcdef0123456789abcdef0123")
