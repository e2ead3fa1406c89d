"""Dagster resources: where the extracts and the run's home are, and the DuckDB warehouse.

Every run of the pipeline works in its own workspace ``HOME/.run/<run_id>/`` and is promoted
into ``HOME`` together on success, whoever starts it (docs/operations.md):

- ``phm run`` (:func:`pipelines.runner.run_pipeline`) takes the home's lock, stages the
  workspace and points both resources at it (``Settings.work``); the resources then do
  nothing more than hold the (re-entrant) lock.
- A run started from the Dagster UI, the schedule or a sensor gets its resources from
  ``Settings.from_env()`` (no workspace: ``PHMSettings.output`` empty, the warehouse resource
  on ``HOME/warehouse.duckdb``). Such a run stages itself when its resources are set up (once
  per run: the in-process executor): :func:`phm.runhome.stage` takes the home's lock
  (``HOME/.lock``, waiting for a run that holds it), finishes or clears what an interrupted
  run left, and copies the last good warehouse into the workspace; both resources then point
  there (they share it through :func:`phm.runhome.stage`, keyed by the run id). At teardown,
  :func:`phm.runhome.unstage` publishes and promotes the workspace if no step of the run
  failed (:func:`run_outcome`), or discards it, and releases the lock. A refused publication
  (:class:`phm.publish.PublishRefused`) keeps the last good state, is logged as an error in
  the run and leaves an alert file under ``HOME/alerts/`` (the run itself cannot be failed
  from a resource's teardown).

So there is one run at a time per home, and a failed or killed run leaves the last good state
whole, whoever starts it.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from phm.paths import REPO_ROOT, exports_dir, warehouse_path
from phm.runhome import home_lock, stage, unstage
from phm.warehouse import apply_settings

log = logging.getLogger("pipelines.resources")

DEFAULT_EXTRACTS = REPO_ROOT / "var" / "extracts"
DEFAULT_HOME = REPO_ROOT / "var" / "home"


@dataclass(frozen=True)
class Settings:
    """Where a run reads and writes. From the environment (``PHM_EXTRACTS``, ``PHM_HOME``,
    ``PHM_DELIVERY``) or the ``phm run`` options. ``work``: the run's workspace, where its
    outputs go until promotion (None: write in ``home``)."""

    extracts_root: Path
    home: Path
    delivery: str | None = None
    work: Path | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            extracts_root=Path(os.environ.get("PHM_EXTRACTS") or DEFAULT_EXTRACTS).resolve(),
            home=Path(os.environ.get("PHM_HOME") or DEFAULT_HOME).resolve(),
            delivery=os.environ.get("PHM_DELIVERY") or None,
        )

    @property
    def output_root(self) -> Path:
        return self.work or self.home


PARTITION_TAG = "dagster/partition"


class PHMSettings(dg.ConfigurableResource):
    """The run's inputs and outputs: the extracts root, the delivery (latest complete one
    when empty), the home folder (last good state: models of earlier runs) and the output
    folder this run writes its exports and models to: the run's workspace, given by
    ``phm run`` or, when ``output`` is empty (or the home), staged at setup
    (:func:`phm.runhome.stage`)."""

    extracts_root: str
    home: str
    delivery: str = ""
    output: str = ""

    _partition_delivery: str = PrivateAttr(default="")
    _work: str = PrivateAttr(default="")

    @property
    def output_root(self) -> Path:
        """The run's workspace (given by ``phm run``, or staged at setup), else the home."""
        return Path(self._work or self.output or self.home)

    def _on_home(self) -> bool:
        return not self.output or Path(self.output).resolve() == Path(self.home).resolve()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # a run launched for a partition of ``delivery`` (tag dagster/partition = extract
        # date) reads that delivery; an explicit, different delivery is refused
        run = context.dagster_run
        key = (run.tags or {}).get(PARTITION_TAG) if run is not None else None
        self._partition_delivery = key or ""
        if run is not None and self._on_home():  # never write in the home itself
            self._work = str(stage(Path(self.home), run.run_id))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._work:
            self._work = ""
            end_staged_run(context, Path(self.home))

    @property
    def selected_delivery(self) -> str:
        """The delivery the run reads: the run's partition key, else ``delivery``, else ''
        (the latest complete delivery). Raises ValueError if both are set and differ."""
        key, pinned = self._partition_delivery, self.delivery
        if key and pinned and key != pinned:
            raise ValueError(
                f"this run is for the delivery partition {key} but its settings name delivery "
                f"{pinned} (run config resources.settings.config.delivery or PHM_DELIVERY): "
                "remove the delivery setting or launch the partition of that delivery"
            )
        return key or pinned

    def exports(self, extract_date: str) -> Path:
        path = exports_dir(self.output_root, extract_date)
        path.mkdir(parents=True, exist_ok=True)
        return path


class HomeWarehouse(DuckDBResource):
    """The DuckDB warehouse, holding the home's lock for the whole run, with the project's
    DuckDB settings (threads, memory_limit, temp_directory: phm.warehouse).

    ``database`` is the run's workspace warehouse (``phm run``) or the home's own
    ``warehouse.duckdb``; a run never writes the latter directly: it stages its workspace at
    setup (:func:`phm.runhome.stage`) and connects to the workspace's copy."""

    home: str

    _stack: ExitStack | None = PrivateAttr(default=None)
    _work: str = PrivateAttr(default="")

    @property
    def database_path(self) -> str:
        """The file this run's connections open."""
        return str(warehouse_path(Path(self._work))) if self._work else self.database

    def _on_home_warehouse(self) -> bool:
        return Path(self.database).resolve() == warehouse_path(Path(self.home)).resolve()

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        if run is not None and self._on_home_warehouse():
            self._work = str(stage(Path(self.home), run.run_id))
            return
        self._stack = ExitStack()
        self._stack.enter_context(home_lock(Path(self.home)))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._work:
            self._work = ""
            end_staged_run(context, Path(self.home))
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    @contextmanager
    def get_connection(self):
        if not self._work:
            with super().get_connection() as con:
                apply_settings(con, self.database)
                yield con
            return
        con = duckdb.connect(self.database_path, config={"custom_user_agent": "dagster"})
        try:
            apply_settings(con, self.database_path)
            yield con
        finally:
            con.close()


def run_outcome(instance: dg.DagsterInstance, run: dg.DagsterRun) -> tuple[bool, str]:
    """Whether every step of ``run`` succeeded so far, from the instance's event log, and if
    not why (the failed or unfinished step keys; no error text, which the run's log has)."""
    failed = sorted(
        {
            r.event_log_entry.step_key or "?"
            for r in instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
            ).records
        }
    )
    if failed:
        return False, f"step(s) failed: {', '.join(failed)}"
    current = instance.get_run_by_id(run.run_id)
    if current is not None and current.status in (
        dg.DagsterRunStatus.CANCELING,
        dg.DagsterRunStatus.CANCELED,
    ):
        return False, "the run was cancelled"
    plan = (
        instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        if run.execution_plan_snapshot_id
        else None
    )
    if plan is not None and plan.step_keys_to_execute:
        done = {
            r.event_log_entry.step_key
            for r in instance.get_records_for_run(
                run.run_id,
                of_type={dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_SKIPPED},
            ).records
        }
        missing = sorted(set(plan.step_keys_to_execute) - done)
        if missing:
            return False, f"step(s) did not finish: {', '.join(missing)}"
    return True, ""


def end_staged_run(context: dg.InitResourceContext, home: Path) -> None:
    """The teardown of a resource of a staged run (:func:`phm.runhome.unstage`): the last
    one promotes the workspace if the run succeeded, else discards it. A run of the whole job
    (no asset or op selection, not a re-execution: the schedule, the sensor,
    ``execute_in_process`` of the job) replaces each export folder whole; any other run
    replaces only the entries it wrote, like ``phm run --select``."""
    run = context.dagster_run
    success, reason = run_outcome(context.instance, run)
    # execute_in_process records a whole-job run's asset selection as empty, a launch as None
    full_exports = (
        not run.asset_selection and not run.resolved_op_selection and run.parent_run_id is None
    )
    try:
        ended = unstage(home, run.run_id, success=success, full_exports=full_exports)
    except Exception as e:
        message = f"run {run.run_id} not promoted, {home} keeps the last good state: {e}"
        context.log.error(message)
        log.error(message)
        _alert(home, run, message)
        raise
    if not ended:
        return
    if success:
        context.log.info(f"run {run.run_id} promoted into {home}")
    else:
        context.log.warning(
            f"run {run.run_id} not promoted ({reason}): its workspace was discarded, "
            f"{home} keeps the last good state"
        )


def _alert(home: Path, run: dg.DagsterRun, message: str) -> None:
    """An alert file for a failure the run's status does not show (pipelines/sensors.py)."""
    from pipelines.sensors import write_alert  # sensors imports this module

    try:
        write_alert(home, run.run_id, run.job_name, [], message, datetime.now(UTC), run.tags)
    except OSError as e:
        log.error("could not write the alert for run %s: %s", run.run_id, e)


def build_resources(settings: Settings) -> dict:
    return {
        "settings": PHMSettings(
            extracts_root=str(settings.extracts_root),
            home=str(settings.home),
            delivery=settings.delivery or "",
            # empty: the run stages its own workspace (UI, schedule, sensor)
            output=str(settings.work or ""),
        ),
        "warehouse": HomeWarehouse(
            database=str(warehouse_path(settings.output_root)), home=str(settings.home)
        ),
    }
