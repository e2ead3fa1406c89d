"""Beyond one machine (docs/scaling.md): the PCN-partitioned job run with Dagster's
multiprocess executor gives the nightly job's PCN files byte for byte, and two ICB homes
run in parallel processes."""

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg

from phm.paths import exports_dir, warehouse_path
from phm.warehouse import session
from pipelines.partitioned import PCN_JOB, run_pcn_outputs, warehouse_pcns

KEY = "0123456789abcdef0123456789abcdef0123"


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_pcn_partitions_in_processes_equal_the_nightly_files(small_home, tmp_path, monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
    _, home = small_home
    pcns = warehouse_pcns(home)
    assert len(pcns) >= 2
    with session(warehouse_path(home), read_only=True) as con:
        extract_date = con.execute("SELECT extract_date FROM raw._delivery").fetchone()[0]
    out = tmp_path / "out"
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    try:
        runs = run_pcn_outputs(home, instance=instance, output=out, parallel=2)
        assert sorted(r.pcn_code for r in runs) == pcns
        assert all(r.success for r in runs), runs
        # every partition materialised, each PCN once
        for name in ("exports", "segments", "maps", "impact_report", "trends"):
            assert instance.get_materialized_partitions(
                dg.AssetKey(["exports", "by_pcn", name])
            ) == set(pcns)
        # the steps ran in processes of their own (the multiprocess executor), not in this one
        step_pids = set()
        for run in runs:
            record = instance.get_run_by_id(run.run_id)
            assert record.job_name == PCN_JOB
            assert record.tags["dagster/partition"] == run.pcn_code
            successes = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            assert len(successes) == 5
            step_pids |= {e.dagster_event.pid for e in successes}
        assert os.getpid() not in step_pids
        assert len(step_pids) == 5 * len(runs)  # one process per step
    finally:
        instance.dispose()

    nightly = exports_dir(home, extract_date.isoformat())
    partitioned = exports_dir(out, extract_date.isoformat())
    assert sorted(p.name for p in partitioned.iterdir()) == pcns
    for pcn in pcns:
        expected, got = _files(nightly / pcn), _files(partitioned / pcn)
        assert {"manifest.json", "risk_register.csv", "impact_report.html", "trends.png"} <= set(
            got
        )
        assert any(name.startswith("maps/") for name in got)
        assert sorted(got) == sorted(expected), pcn
        differ = [name for name in expected if expected[name] != got[name]]
        assert not differ, f"{pcn}: {differ}"


def test_two_icb_homes_run_in_parallel_processes(tmp_path):
    """A regional deployment: one delivery and one home (one warehouse file) per ICB, each
    its own ``phm run`` process, running at the same time."""
    from phm.synth import generate

    env = {**os.environ, "PHM_PSEUDONYMISATION_KEY": KEY}
    icbs = {"ICB_A": (3, 1000), "ICB_B": (4, 700)}
    procs = {}
    for icb, (seed, patients) in icbs.items():
        extracts = tmp_path / icb / "extracts"
        generate(extracts, patients=patients, seed=seed, extract_date=date(2026, 11, 1))
        home = tmp_path / icb / "home"
        cmd = [sys.executable, "-m", "pipelines.cli", "-q", "run"]
        cmd += ["--extracts", str(extracts), "--home", str(home)]
        procs[icb] = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    outputs = {icb: p.communicate() for icb, p in procs.items()}
    for icb, p in procs.items():
        assert p.returncode == 0, outputs[icb][0][-3000:]

    windows = {}
    pcns = {}
    for icb in icbs:
        home = tmp_path / icb / "home"
        pcns[icb] = warehouse_pcns(home)
        assert pcns[icb]
        exported = (home / "exports" / "2026-11-01").iterdir()
        assert sorted(p.name for p in exported if p.is_dir()) == pcns[icb]
        instance = dg.DagsterInstance.from_config(str(home / "dagster"))
        try:
            (record,) = instance.get_run_records()
            assert record.dagster_run.is_success
            windows[icb] = (record.start_time, record.end_time)
        finally:
            instance.dispose()
    # the two runs overlapped: each started before the other ended (no shared writer needed)
    (a_start, a_end), (b_start, b_end) = windows.values()
    assert a_start < b_end and b_start < a_end
    # and each home holds its own delivery's patients (ICB_A's delivery is the larger)
    counts = {}
    for icb in icbs:
        with session(warehouse_path(tmp_path / icb / "home"), read_only=True) as con:
            counts[icb] = con.execute("SELECT count(*) FROM marts.patient_measures").fetchone()[0]
    assert counts["ICB_A"] > counts["ICB_B"] > 0


def test_a_pcn_not_in_the_warehouse_fails_its_partition(small_home, tmp_path, monkeypatch):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", KEY)
    _, home = small_home
    instance = dg.DagsterInstance.local_temp(str(tmp_path))
    try:
        (run,) = run_pcn_outputs(
            home, instance=instance, output=tmp_path / "out", pcn_codes=["NOPE"]
        )
        assert not run.success
    finally:
        instance.dispose()
