"""Sensors: a new complete delivery starts the nightly job; a failed run leaves an alert file.

- ``new_delivery_sensor`` looks at the extracts root every ``PHM_SENSOR_INTERVAL_SECONDS``
  (default 300) for dated folders holding ``_manifest.json`` (complete deliveries) newer than
  its cursor, and asks for one run of the job per delivery: a run of the job's partition
  ``<extract date>`` (the nightly assets are partitioned by delivery,
  :data:`pipelines.partitions.DELIVERY_PARTITIONS`; the sensor adds the new keys in the same
  tick), run key = extract date (Dagster never starts two runs with the same key), the
  delivery also pinned in the run's config and the tag ``phm/delivery``. Folders without a
  manifest are still arriving and are ignored until it appears.
- ``run_failure_alert`` writes ``HOME/alerts/<UTC time>-<run id>.json`` (and a ``.txt``
  for people) naming the run, the failed step(s) and the reason: the hook for e-mail or
  Teams. The reason is the error's message (file names, rule names, counts); the pipeline's
  own errors never carry row values or identifiers.

Both are off until switched on under *Automation* (like the schedule) and need the
``dagster-daemon`` (or ``dagster dev``) to run.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg

from phm.delivery import DeliveryError, list_deliveries
from phm.files import atomic_write_text
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import Settings

DELIVERY_TAG = "phm/delivery"
ALERTS_DIR = "alerts"
_MAX_REASON = 2000


def sensor_interval_seconds() -> int:
    return int(os.environ.get("PHM_SENSOR_INTERVAL_SECONDS") or 300)


def new_deliveries(extracts_root: Path, cursor: str | None) -> list[str]:
    """Extract dates (oldest first) of the complete deliveries newer than ``cursor``."""
    after = date.fromisoformat(cursor) if cursor else date.min
    return [
        d.isoformat() for d, _, complete in list_deliveries(extracts_root) if complete and d > after
    ]


def delivery_run_config(settings: Settings, extract_date: str) -> dict:
    """Run config pinning the run to one delivery (``PHMSettings.delivery``)."""
    return {
        "resources": {
            "settings": {
                "config": {
                    "extracts_root": str(settings.extracts_root),
                    "home": str(settings.home),
                    "delivery": extract_date,
                }
            }
        }
    }


def build_new_delivery_sensor(settings: Settings, job) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_delivery_sensor",
        job=job,
        minimum_interval_seconds=sensor_interval_seconds(),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Starts {job.name} once for each new complete delivery (a dated folder with "
            f"_manifest.json) under {settings.extracts_root}, as a run of that delivery's "
            "partition (added to the delivery partitions); the cursor is the newest extract "
            "date requested."
        ),
    )
    def new_delivery_sensor(context: dg.SensorEvaluationContext):
        try:
            dates = new_deliveries(settings.extracts_root, context.cursor)
        except DeliveryError as e:
            return dg.SkipReason(str(e))
        if not dates:
            return dg.SkipReason(
                f"no complete delivery newer than {context.cursor or 'none'} under "
                f"{settings.extracts_root}"
            )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=d,
                    partition_key=d,
                    run_config=delivery_run_config(settings, d),
                    tags={DELIVERY_TAG: d},
                )
                for d in dates
            ],
            cursor=dates[-1],
            # the cursor keeps these new; the daemon skips a key the instance already has
            dynamic_partitions_requests=[DELIVERY_PARTITIONS.build_add_request(dates)],
        )

    return new_delivery_sensor


def _innermost_message(error) -> str:
    while error is not None and error.cause is not None:
        error = error.cause
    message = error.message.strip() if error is not None else "unknown error"
    return message[:_MAX_REASON]


def write_alert(
    home: Path | str,
    run_id: str,
    job_name: str,
    failures: list[tuple[str, str]],
    reason: str,
    when: datetime,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write ``HOME/alerts/<when>-<run_id>.json`` and ``.txt``; returns the JSON path.

    ``failures``: (step key, message) per failed step; ``reason``: the run's failure message.
    """
    folder = Path(home) / ALERTS_DIR
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = folder / f"{stamp}-{run_id}"
    alert = {
        "time": when.astimezone(UTC).isoformat(),
        "run_id": run_id,
        "job": job_name,
        "delivery": (tags or {}).get(DELIVERY_TAG),
        "failed_steps": [{"step": s, "reason": m} for s, m in failures],
        "reason": reason,
    }
    lines = [
        f"PHM pipeline run failed at {alert['time']}",
        f"run: {run_id} (job {job_name})",
    ]
    if alert["delivery"]:
        lines.append(f"delivery: {alert['delivery']}")
    lines += [f"step {s} failed: {m}" for s, m in failures] or [f"reason: {reason}"]
    atomic_write_text(base.with_suffix(".txt"), "\n".join(lines) + "\n")
    return atomic_write_text(
        base.with_suffix(".json"), json.dumps(alert, indent=2, sort_keys=True) + "\n"
    )


def build_run_failure_alert(settings: Settings) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="run_failure_alert",
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            f"Writes {Path(settings.home) / ALERTS_DIR}/<time>-<run id>.json and .txt for "
            "every failed run: run id, failed step(s), reason."
        ),
    )
    def run_failure_alert(context: dg.RunFailureSensorContext):
        failures = [
            (e.step_key or "?", _innermost_message(e.step_failure_data.error))
            for e in context.get_step_failure_events()
        ]
        run = context.dagster_run
        reason = (context.failure_event.message or "run failed")[:_MAX_REASON]
        path = write_alert(
            settings.home, run.run_id, run.job_name, failures, reason, datetime.now(UTC), run.tags
        )
        context.log.info(f"alert written: {path}")

    return run_failure_alert


def build_sensors(settings: Settings, job) -> list[dg.SensorDefinition]:
    return [build_new_delivery_sensor(settings, job), build_run_failure_alert(settings)]
