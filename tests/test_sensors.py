"""Sensors: a new complete delivery starts one run (cursor), incomplete folders are ignored,
a failed run writes an alert file naming the run, the step and the reason."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from factory import NHS, make_delivery

from pipelines.definitions import NIGHTLY_JOB, build_definitions
from pipelines.resources import Settings
from pipelines.sensors import DELIVERY_TAG

D1, D2, D3 = date(2026, 11, 1), date(2026, 11, 8), date(2026, 11, 15)
RAW = [dg.AssetKey(["raw", "_delivery"])]


def _defs(tmp_path: Path) -> dg.Definitions:
    (tmp_path / "home").mkdir(exist_ok=True)
    return build_definitions(Settings(tmp_path / "extracts", tmp_path / "home"))


def _tick(defs: dg.Definitions, cursor: str | None, instance=None):
    sensor = defs.get_sensor_def("new_delivery_sensor")
    context = dg.build_sensor_context(cursor=cursor, instance=instance, definitions=defs)
    return sensor.evaluate_tick(context)


def test_new_delivery_starts_one_run_per_delivery_and_moves_the_cursor(tmp_path):
    extracts = tmp_path / "extracts"
    make_delivery(extracts, extract_date=D1)
    defs = _defs(tmp_path)

    first = _tick(defs, None)
    assert [r.run_key for r in first.run_requests] == ["2026-11-01"]
    request = first.run_requests[0]
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
    request = next(r for r in _tick(defs, None).run_requests if r.run_key == "2026-11-01")
    job = defs.resolve_job_def(NIGHTLY_JOB)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(
            run_config=request.run_config,
            instance=instance,
            asset_selection=_ingest_keys(defs),
            tags=request.tags,
        )
    assert result.success
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
        result = job.execute_in_process(
            instance=instance,
            asset_selection=_ingest_keys(defs),
            raise_on_error=False,
            tags={DELIVERY_TAG: "2026-11-01"},
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


def test_sensors_are_registered_and_off_by_default(tmp_path):
    defs = _defs(tmp_path)
    for name in ("new_delivery_sensor", "run_failure_alert"):
        sensor = defs.get_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", "0123456789abcdef0123456789abcdef0123")
