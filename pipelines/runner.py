"""Run the whole pipeline through Dagster, in process, with the instance under ``HOME/dagster``.

This is what ``phm run`` and the tests call: the same Definitions, job and assets as the UI
and the nightly schedule, so there is one orchestration path.

A run holds the home's lock from start to end (:func:`phm.runhome.home_lock`), first
finishes or clears what an interrupted run left (:func:`phm.runhome.recover`), works in its
own workspace ``HOME/.run/<run_id>/`` (a copy of the last good warehouse), and on success
builds the published copy and promotes everything together (:func:`phm.runhome.finish`, the
same ending as a run started from the UI, the schedule or a sensor). A failed run's workspace
is deleted: ``HOME`` keeps the last good run's warehouse, published copy, models and exports,
consistent with each other.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from phm.paths import REPO_ROOT, dagster_home
from phm.permissions import owner_only, private_dir
from phm.publish import PublishRefused
from phm.runhome import finish, home_lock, recover, start_run

log = logging.getLogger("pipelines.runner")


class PipelineFailed(Exception):
    """A run failed; the message says which step and why (e.g. a delivery's file-level fault)."""


@dataclass(frozen=True)
class RunSummary:
    """A successful run (a failed one raises PipelineFailed instead)."""

    run_id: str
    seconds: float
    materialized: list[str]


def prepare_dagster_home(home: Path) -> Path:
    """Create ``HOME/dagster`` with the repository's dagster.yaml (run concurrency, logging)."""
    dh = dagster_home(home)
    dh.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dh / "dagster.yaml")
    return dh


def run_pipeline(
    extracts_root: Path,
    home: Path,
    delivery: str | None = None,
    selection: list[str] | None = None,
    *,
    wait: bool = True,
) -> RunSummary:
    """Materialise every asset (or the ``selection`` of asset key paths like ``raw/gp_patients``)
    over the latest complete delivery (or ``delivery``). Raises PipelineFailed on failure, and
    :class:`phm.runhome.HomeBusy` if another run holds the home and ``wait`` is False.

    The home is made 0700 and everything the run creates is owner-only (umask 077)."""
    home = Path(home).resolve()
    with owner_only():
        private_dir(home)
        with home_lock(home, wait=wait):
            recover(home)
            return _run_locked(Path(extracts_root).resolve(), home, delivery, selection)


def _run_locked(
    extracts_root: Path, home: Path, delivery: str | None, selection: list[str] | None
) -> RunSummary:
    from dagster import DagsterInstance

    from phm.delivery import DeliveryError
    from pipelines.definitions import NIGHTLY_JOB, build_definitions
    from pipelines.partitions import delivery_key, register_delivery
    from pipelines.resources import Settings

    try:  # the run is the partition of this delivery (pipelines/partitions.py)
        partition = delivery_key(extracts_root, delivery)
    except DeliveryError as e:
        raise PipelineFailed(str(e)) from e
    dh = prepare_dagster_home(home)
    run_id = str(uuid.uuid4())
    work = start_run(home, run_id)
    settings = Settings(extracts_root, home, delivery, work=work)
    # the same settings for anything that reads the environment (e.g. a UI started later)
    os.environ["PHM_EXTRACTS"], os.environ["PHM_HOME"] = str(settings.extracts_root), str(home)
    defs = build_definitions(settings)
    job = defs.resolve_job_def(NIGHTLY_JOB)
    instance = DagsterInstance.from_config(str(dh))
    t0 = time.perf_counter()
    try:
        kwargs = {}
        if selection:
            kwargs["asset_selection"] = _resolve_selection(defs, selection)
        register_delivery(instance, partition)
        result = job.execute_in_process(
            instance=instance,
            raise_on_error=False,
            run_id=run_id,
            partition_key=partition,
            **kwargs,
        )
    finally:
        instance.dispose()
    try:
        finish(home, work, run_id, success=result.success, full_exports=not selection)
    except PublishRefused as e:
        raise PipelineFailed(str(e)) from e
    if not result.success:
        raise PipelineFailed(_failure_message(result))
    seconds = time.perf_counter() - t0
    materialized = sorted(
        e.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
        if e.asset_key is not None
    )
    log.info("run %s materialised %d assets in %.1fs", result.run_id, len(materialized), seconds)
    return RunSummary(result.run_id, seconds, materialized)


def _resolve_selection(defs, selection: list[str]) -> list:
    """Asset keys for ``raw/practices``-style paths, plus the other assets of any multi-asset
    that cannot run in part (``raw/practices`` is loaded with the whole delivery)."""
    from dagster import AssetKey, AssetSelection

    graph = defs.resolve_asset_graph()
    keys = [AssetKey(s.strip("/").split("/")) for s in selection]
    unknown = [k.to_user_string() for k in keys if not graph.has(k)]
    if unknown:
        raise PipelineFailed(
            f"no such asset: {', '.join(unknown)} (asset keys look like raw/practices)"
        )
    resolved = AssetSelection.assets(*keys).required_multi_asset_neighbors().resolve(graph)
    return sorted(resolved, key=lambda k: k.to_user_string())


def _failure_message(result) -> str:
    lines = []
    for event in result.all_events:
        if event.is_step_failure:
            err = event.step_failure_data.error
            # the domain error is the innermost cause (Dagster wraps it)
            while err is not None and err.cause is not None:
                err = err.cause
            message = err.message.strip() if err is not None else "unknown error"
            lines.append(f"step {event.step_key} failed: {message}")
    if not lines:
        lines.append(f"run {result.run_id} failed")
    return "\n".join(lines)
