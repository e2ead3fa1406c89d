"""The Dagster code location: assets, checks, resources, the nightly job, its schedule and
the sensors (new deliveries, run-failure alerts; pipelines/sensors.py).

``dagster dev`` run from the repository root finds this module through ``[tool.dagster]`` in
pyproject.toml. ``phm run`` builds the same Definitions with its own settings.
"""

from __future__ import annotations

import dagster as dg

from pipelines import checks as quality_checks
from pipelines.assets import (
    cohorts,
    exports,
    geo,
    impact,
    ingest,
    marts,
    segmentation,
    staging,
)
from pipelines.resources import Settings, build_resources
from pipelines.sensors import build_sensors

ASSET_MODULES = [ingest, staging, marts, segmentation, cohorts, exports, geo, impact]

NIGHTLY_JOB = "phm_nightly"


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    assets = [*dg.load_assets_from_modules(ASSET_MODULES), *quality_checks.ASSETS]
    checks = [*dg.load_asset_checks_from_modules(ASSET_MODULES), *quality_checks.ASSET_CHECKS]
    job = dg.define_asset_job(
        NIGHTLY_JOB,
        selection=dg.AssetSelection.all(),
        description="Materialise every asset over the latest complete delivery.",
    )
    schedule = dg.ScheduleDefinition(
        name="nightly_0200",
        job=job,
        cron_schedule="0 2 * * *",
        execution_timezone="Europe/London",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Every night at 02:00 UK time (Europe/London, so BST is respected).",
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[job],
        schedules=[schedule],
        sensors=[*build_sensors(settings, job), *quality_checks.SENSORS],
        resources=build_resources(settings),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
