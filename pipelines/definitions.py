"""The Dagster code location: assets, checks, resources, the nightly job (its assets
partitioned by delivery, pipelines/partitions.py), its schedule and the sensors (new
deliveries, run-failure alerts; pipelines/sensors.py), and the PCN-partitioned scale-out job
``phm_pcn_outputs`` (pipelines/partitioned.py).

``dagster dev`` run from the repository root finds this module through ``[tool.dagster]`` in
pyproject.toml. ``phm run`` builds the same Definitions with its own settings.
"""

from __future__ import annotations

import os
import signal

import dagster as dg

from phm.delivery import DeliveryError
from phm.paths import lock_path, published_path
from pipelines import checks as quality_checks
from pipelines import partitioned
from pipelines.assets import (
    cohorts,
    exports,
    geo,
    history,
    impact,
    ingest,
    marts,
    segmentation,
    staging,
)
from pipelines.partitions import delivery_key, register_delivery
from pipelines.resources import Settings, build_resources
from pipelines.sensors import DELIVERY_TAG, build_sensors

ASSET_MODULES = [ingest, staging, marts, segmentation, cohorts, exports, geo, impact, history]

NIGHTLY_JOB = "phm_nightly"

#: test hook for the kill drills (docs/operations.md): ``PHM_TEST_KILL_AT=<op name>`` (e.g.
#: ``ingest_delivery``, ``validate_gp_events``, ``patient_measures``, ``exports__pcn_exports``) makes
#: the run process SIGKILL itself as soon as that step has succeeded. Unset in production.
KILL_ENV = "PHM_TEST_KILL_AT"


@dg.success_hook(name="phm_test_kill_switch")
def _kill_switch(context: dg.HookContext) -> None:
    if os.environ.get(KILL_ENV) == context.op.name:
        os.kill(os.getpid(), signal.SIGKILL)


def build_nightly_schedule(settings: Settings, job) -> dg.ScheduleDefinition:
    """02:00 every night: a run of the latest complete delivery's partition (added to the
    ``delivery`` partitions first); skipped, with the reason, when there is none."""

    @dg.schedule(
        name="nightly_0200",
        job=job,
        cron_schedule="0 2 * * *",
        execution_timezone="Europe/London",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            "Every night at 02:00 UK time (Europe/London, so BST is respected): a run of the "
            f"latest complete delivery under {settings.extracts_root} (its partition)."
        ),
    )
    def nightly_0200(context: dg.ScheduleEvaluationContext):
        try:
            key = delivery_key(settings.extracts_root)
        except DeliveryError as e:
            return dg.SkipReason(str(e))
        register_delivery(context.instance, key)
        return dg.RunRequest(partition_key=key, tags={DELIVERY_TAG: key})

    return nightly_0200


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    assets = [
        *dg.load_assets_from_modules(ASSET_MODULES),
        *quality_checks.ASSETS,
        *partitioned.ASSETS,
    ]
    checks = [*dg.load_asset_checks_from_modules(ASSET_MODULES), *quality_checks.ASSET_CHECKS]
    job = dg.define_asset_job(
        NIGHTLY_JOB,
        # the PCN-partitioned scale-out assets are their own job (pipelines/partitioned.py)
        selection=dg.AssetSelection.all() - dg.AssetSelection.groups(partitioned.GROUP),
        description=(
            "Materialise every asset over one delivery: the run's partition (an extract date)."
        ),
        hooks={_kill_switch} if os.environ.get(KILL_ENV) else None,
        metadata={
            # where readers (notebooks, analysts) read: never the pipeline's own warehouse
            "published_copy": dg.MetadataValue.path(str(published_path(settings.home))),
            "lock": dg.MetadataValue.path(str(lock_path(settings.home))),
        },
    )
    schedule = build_nightly_schedule(settings, job)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[job, partitioned.pcn_outputs_job_def],
        schedules=[schedule],
        sensors=[*build_sensors(settings, job), *quality_checks.SENSORS],
        resources={**build_resources(settings), **partitioned.build_resources(settings.home)},
        executor=dg.in_process_executor,
    )


defs = build_definitions()
