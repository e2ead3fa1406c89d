"""Runs started like the Dagster UI, the nightly schedule or the new-delivery sensor start
them (resources from the environment, the job executed in one run-worker process, no
``phm run``) stage a workspace and are promoted together, exactly like ``phm run``.

Small deliveries (the factory's two-patient delivery). No timing assertions: the lock drill
waits for the log line of the waiting run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from factory import make_delivery
from test_operations import KEY, NEW, OLD, RAW, _extract_date, _state

import phm.runhome
from phm.paths import dagster_home, published_path, run_root, warehouse_path
from phm.runhome import holds_lock, stage, staged_runs, unstage
from pipelines.definitions import NIGHTLY_JOB, build_definitions
from pipelines.partitions import delivery_key, register_delivery
from pipelines.resources import Settings
from pipelines.runner import prepare_dagster_home, run_pipeline

LATER, LATEST = date(2026, 11, 15), date(2026, 11, 22)
pytestmark = pytest.mark.slow

#: what a UI run worker does: Definitions from the environment, the job in process
UI_RUN = """
import logging, sys
logging.basicConfig(level=logging.INFO)
import dagster as dg
from pipelines.definitions import NIGHTLY_JOB, build_definitions
from pipelines.partitions import delivery_key, register_delivery
from pipelines.resources import Settings
from pipelines.runner import prepare_dagster_home
settings = Settings.from_env()
defs = build_definitions()
keys = [dg.AssetKey(a.split("/")) for a in sys.argv[1:]]
kwargs = {}
if keys:
    graph = defs.resolve_asset_graph()
    kwargs["asset_selection"] = list(
        dg.AssetSelection.assets(*keys).required_multi_asset_neighbors().resolve(graph)
    )
instance = dg.DagsterInstance.from_config(str(prepare_dagster_home(settings.home)))
# the UI launches one delivery partition (the latest complete delivery here)
partition = delivery_key(settings.extracts_root)
register_delivery(instance, partition)
try:
    result = defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        instance=instance, raise_on_error=False, partition_key=partition, **kwargs
    )
finally:
    instance.dispose()
print("run", result.run_id, result.success)
sys.exit(0 if result.success else 1)
"""


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", KEY)


def _ui_env(extracts: Path, home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PHM_PSEUDONYMISATION_KEY": KEY,
        "PHM_EXTRACTS": str(extracts),
        "PHM_HOME": str(home),
        **extra,
    }


def _ui_run_in_process(monkeypatch, extracts: Path, home: Path, selection: list[str] = ()):
    """The nightly job as the UI's run worker executes it, in this process."""
    monkeypatch.setenv("PHM_EXTRACTS", str(extracts))
    monkeypatch.setenv("PHM_HOME", str(home))
    monkeypatch.delenv("PHM_DELIVERY", raising=False)
    assert Settings.from_env().work is None
    defs = build_definitions()
    kwargs = {}
    if selection:
        keys = [dg.AssetKey(k.split("/")) for k in selection]
        graph = defs.resolve_asset_graph()
        kwargs["asset_selection"] = list(
            dg.AssetSelection.assets(*keys).required_multi_asset_neighbors().resolve(graph)
        )
    instance = dg.DagsterInstance.from_config(str(prepare_dagster_home(home)))
    partition = delivery_key(extracts)  # the UI launches one delivery partition
    register_delivery(instance, partition)
    try:
        return defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
            instance=instance, raise_on_error=False, partition_key=partition, **kwargs
        )
    finally:
        instance.dispose()


def _published_run_id(home: Path) -> str:
    con = duckdb.connect(str(published_path(home)), read_only=True)
    try:
        return con.execute("SELECT run_id FROM reports.published").fetchone()[0]
    finally:
        con.close()


# -- the staging functions themselves ------------------------------------------------------


def _warehouse_with(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    con.execute("CREATE OR REPLACE TABLE marts.t AS SELECT ? AS v", [value])
    con.close()


def _value(path: Path) -> int:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT v FROM marts.t").fetchone()[0]
    finally:
        con.close()


def test_one_workspace_and_lock_per_run_and_the_last_user_ends_it(tmp_path):
    home = tmp_path / "home"
    _warehouse_with(warehouse_path(home), 1)
    work = stage(home, "run-a")
    assert stage(home, "run-a") == work == run_root(home) / "run-a"
    assert _value(warehouse_path(work)) == 1  # a copy of the last good warehouse
    assert holds_lock(home)
    _warehouse_with(warehouse_path(work), 2)
    assert unstage(home, "run-a", success=True, full_exports=True) is False
    assert holds_lock(home) and work.is_dir() and _value(warehouse_path(home)) == 1
    assert unstage(home, "run-a", success=True, full_exports=True) is True
    assert not holds_lock(home) and staged_runs() == []
    assert _value(warehouse_path(home)) == 2
    assert _published_run_id(home) == "run-a"
    assert not work.exists()
    # a failed run: discarded, the home keeps the last good state
    work = stage(home, "run-b")
    _warehouse_with(warehouse_path(work), 3)
    assert unstage(home, "run-b", success=False, full_exports=True) is True
    assert not work.exists() and not holds_lock(home)
    assert _value(warehouse_path(home)) == 2 and _published_run_id(home) == "run-a"


# -- runs started like the UI, the schedule or the sensor ----------------------------------


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory):
    """The last good state of an old delivery (``phm run``, raw tables only), then a whole
    UI-style run of the new delivery, with the moment of promotion recorded."""
    root = tmp_path_factory.mktemp("staged")
    extracts, home = root / "extracts", root / "home"
    make_delivery(extracts, extract_date=OLD)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
        run_pipeline(extracts, home, selection=RAW)
        make_delivery(extracts, extract_date=NEW)
        before = os.stat(warehouse_path(home))
        seen = {}
        real_promote = phm.runhome.promote

        def spy(home_, work, *, full_exports):
            seen.update(
                work=work,
                full_exports=full_exports,
                home_inode=os.stat(warehouse_path(home)).st_ino,
                home_mtime=os.stat(warehouse_path(home)).st_mtime_ns,
                home_delivery=_extract_date(warehouse_path(home)),
                home_published=_extract_date(published_path(home), "reports.published"),
                home_new_exports=(home / "exports" / NEW.isoformat()).exists(),
                work_delivery=_extract_date(warehouse_path(work)),
                work_published=_extract_date(work / "published.duckdb", "reports.published"),
                work_exports=sorted(p.name for p in (work / "exports" / NEW.isoformat()).iterdir()),
            )
            return real_promote(home_, work, full_exports=full_exports)

        mp.setattr(phm.runhome, "promote", spy)
        result = _ui_run_in_process(mp, extracts, home)
    return extracts, home, result, before, seen


def test_a_ui_run_works_in_its_workspace_and_is_promoted_on_success(ui_home):
    _, home, result, before, seen = ui_home
    assert result.success
    # during the run: everything in HOME/.run/<run_id>/, HOME untouched until promotion
    assert seen["work"] == run_root(home) / result.run_id
    assert seen["home_inode"] == before.st_ino and seen["home_mtime"] == before.st_mtime_ns
    assert seen["home_delivery"] == seen["home_published"] == OLD
    assert seen["home_new_exports"] is False
    assert seen["work_delivery"] == seen["work_published"] == NEW
    assert {"U00001", "U00002", "summary.csv"} <= set(seen["work_exports"])
    assert seen["full_exports"] is True
    # after: the new delivery's warehouse, published copy (of this run) and exports
    assert _extract_date(warehouse_path(home)) == NEW
    assert _extract_date(published_path(home), "reports.published") == NEW
    assert _published_run_id(home) == result.run_id
    out = home / "exports" / NEW.isoformat()
    assert (out / "U00001" / "risk_register.csv").is_file()
    assert (out / "U00002" / "cohorts.xlsx").is_file()
    assert list(run_root(home).iterdir()) == []
    assert staged_runs() == [] and not holds_lock(home)
    assert (home.stat().st_mode & 0o777) == 0o700


def test_failed_and_killed_ui_runs_leave_the_last_good_state_and_the_next_run_succeeds(
    ui_home, tmp_path, monkeypatch
):
    _, good, _, _, _ = ui_home
    home, extracts = tmp_path / "home", tmp_path / "extracts"
    shutil.copytree(good, home)
    before = _state(home)
    assert before["warehouse"] == before["published"] == NEW and before["exports"]
    # a broken delivery: a file truncated after its manifest was written
    folder = make_delivery(extracts, extract_date=LATER)
    (folder / "gp_patients.csv").write_text("nhs_number\n", encoding="utf-8")
    result = _ui_run_in_process(monkeypatch, extracts, home)
    assert not result.success
    assert _state(home) == before
    assert list(run_root(home).iterdir()) == [] and staged_runs() == []
    assert not holds_lock(home)
    # a good delivery, and the run worker killed after ingesting it (in its workspace)
    make_delivery(extracts, extract_date=LATEST)
    cmd = [sys.executable, "-c", UI_RUN]
    killed = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env=_ui_env(extracts, home, PHM_TEST_KILL_AT="ingest_delivery"),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert _state(home) == before
    [left] = list(run_root(home).iterdir())
    assert _extract_date(warehouse_path(left)) == LATEST
    # the next run clears the killed run's workspace and succeeds
    proc = subprocess.run(cmd + RAW, capture_output=True, text=True, env=_ui_env(extracts, home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"removed the workspace of unfinished run {left.name}" in proc.stderr
    after = _state(home)
    assert after["warehouse"] == after["published"] == LATEST
    assert after["exports"] == before["exports"]  # a raw-only run writes no exports
    assert list(run_root(home).iterdir()) == []


def test_a_refused_publication_keeps_the_last_good_state_and_leaves_an_alert(
    ui_home, tmp_path, monkeypatch
):
    extracts, good, _, _, _ = ui_home
    home = tmp_path / "home"
    shutil.copytree(good, home)
    con = duckdb.connect(str(warehouse_path(home)))
    con.execute("ALTER TABLE marts.hfrs ADD COLUMN nhs_number VARCHAR")
    con.close()
    before = _state(home)
    inode = os.stat(warehouse_path(home)).st_ino
    run_id = _published_run_id(home)
    result = _ui_run_in_process(monkeypatch, extracts, home, RAW)
    assert _state(home) == before
    assert os.stat(warehouse_path(home)).st_ino == inode
    assert _published_run_id(home) == run_id
    assert list(run_root(home).iterdir()) == [] and not holds_lock(home)
    [alert] = sorted((home / "alerts").glob("*.json"))
    content = json.loads(alert.read_text(encoding="utf-8"))
    assert content["run_id"] == result.run_id
    assert "not publishing" in content["reason"] and "marts.hfrs.nhs_number" in content["reason"]
    # the run's event log (what the UI shows) has the error
    instance = dg.DagsterInstance.from_config(str(dagster_home(home)))
    try:
        errors = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if e.level >= logging.ERROR and "not promoted" in e.user_message
        ]
    finally:
        instance.dispose()
    assert errors and "marts.hfrs.nhs_number" in errors[0]


HOLD_LOCK = """
import sys
from pathlib import Path
from phm.runhome import home_lock
with home_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_ui_run_waits_while_another_process_holds_the_home(ui_home, tmp_path):
    extracts, _, _, _, _ = ui_home
    home = tmp_path / "home"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(home)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    run = None
    try:
        assert holder.stdout.readline().strip() == "held"
        run = subprocess.Popen(
            [sys.executable, "-c", UI_RUN, *RAW],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_ui_env(extracts, home),
        )
        seen = []
        for line in run.stderr:
            seen.append(line)
            if "waiting for the run that holds" in line:
                break
        assert str(holder.pid) in seen[-1], "".join(seen)[-3000:]
        # it waits before staging anything
        assert not run_root(home).exists() and not warehouse_path(home).exists()
        holder.stdin.close()
        assert holder.wait() == 0
        _, err = run.communicate()
        assert run.returncode == 0, err[-3000:]
    finally:
        for proc in (holder, run):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert _extract_date(warehouse_path(home)) == NEW
    assert _extract_date(published_path(home), "reports.published") == NEW
    assert list(run_root(home).iterdir()) == []
