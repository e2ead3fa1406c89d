"""``phm bench``: wall time and peak memory of each pipeline stage at a given size.

Each stage runs in its own child process (``python -m pipelines.bench STAGE ...``) so its peak
resident memory (max RSS from ``wait4``) is its own. Results are printed and written to
``<results>/bench-<patients>.json`` and ``.md``. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

EXTRACT_DATE = date(2026, 11, 1)


def _paths(workdir: Path, patients: int) -> tuple[Path, Path]:
    root = Path(workdir) / f"n{patients}"
    return root / "extracts", root / "home"


def stage_generate(workdir: Path, patients: int, seed: int) -> dict:
    from phm.nhs_test_range import NHS_TEST_PATIENTS
    from phm.synth import generate

    extracts, _ = _paths(workdir, patients)
    # beyond the 999 test range, a benchmark may borrow the 998 range (never for real use)
    result = generate(
        extracts,
        patients=patients,
        seed=seed,
        extract_date=EXTRACT_DATE,
        nhs_overflow=patients > NHS_TEST_PATIENTS,
    )
    return {"rows": sum(result.rows.values())}


def stage_read_floor(workdir: Path, patients: int, seed: int) -> dict:
    """DuckDB's own read of every delivery file: ``SELECT count(*)`` over ``read_csv``
    (all columns as text, as ingest loads them) or ``read_parquet``, one file at a time. The
    floor that ingest and validation are compared with (``ingest_validate_ratio``)."""
    import duckdb

    from phm.delivery import open_delivery

    extracts, _ = _paths(workdir, patients)
    delivery = open_delivery(extracts, EXTRACT_DATE.isoformat())
    con = duckdb.connect()
    rows, per_table = 0, {}
    con.execute("SELECT count(*) FROM range(10)").fetchone()  # start-up outside the timing
    t0 = time.perf_counter()
    for table, entry in sorted(delivery.entries.items()):
        t1 = time.perf_counter()
        if entry.file.name.endswith(".parquet"):
            sql = "SELECT count(*) FROM read_parquet(?)"
        else:
            sql = "SELECT count(*) FROM read_csv(?, header = true, all_varchar = true)"
        rows += con.execute(sql, [str(entry.file)]).fetchone()[0]
        per_table[table] = round(time.perf_counter() - t1, 2)
    seconds = time.perf_counter() - t0
    con.close()
    return {"rows": rows, "read_s": round(seconds, 2), "table_s": per_table}


def stage_ingest(workdir: Path, patients: int, seed: int) -> dict:
    from phm.delivery import open_delivery
    from phm.ingest import load_raw
    from phm.paths import warehouse_path
    from phm.warehouse import session

    extracts, home = _paths(workdir, patients)
    wh = warehouse_path(home)
    wh.unlink(missing_ok=True)
    delivery = open_delivery(extracts, EXTRACT_DATE.isoformat())
    with session(wh) as con:
        counts = load_raw(con, delivery)
    return {"rows": sum(counts.values())}


def stage_validate(workdir: Path, patients: int, seed: int) -> dict:
    """Every raw table through the pandera schemas into staging and quarantine, as the
    pipeline's validation assets do (:func:`phm.validate.validate_in_warehouse`, without the
    plausibility gate)."""
    from phm.contract import TABLE_NAMES
    from phm.paths import warehouse_path
    from phm.validate import validate_in_warehouse
    from phm.warehouse import current_extract_date, session

    _, home = _paths(workdir, patients)
    quarantined, seconds = 0, {"read": 0.0, "validate": 0.0, "write": 0.0}
    with session(warehouse_path(home)) as con:
        extract_date = current_extract_date(con)
        for table in TABLE_NAMES:
            result = validate_in_warehouse(con, table, extract_date, gate=False, seconds=seconds)
            quarantined += result.rows_quarantined
    return {"quarantined": quarantined, **{f"{k}_s": round(v, 1) for k, v in seconds.items()}}


def stage_measures(workdir: Path, patients: int, seed: int) -> dict:
    """Code lists, LTC registers, eFI, HFRS, utilisation and patient_measures, with the wall
    and CPU seconds of each step (CPU seconds count every DuckDB thread: a measure of work
    that depends less on what else the machine is doing)."""
    from phm.measures import build_patient_measures
    from phm.paths import warehouse_path
    from phm.pseudonymise import load_key
    from phm.warehouse import current_extract_date, session

    _, home = _paths(workdir, patients)
    with session(warehouse_path(home)) as con:
        report = build_patient_measures(con, current_extract_date(con), key=load_key())
    return {
        "patients": report.row_counts.get("marts.patient_measures"),
        "step_s": {k: round(v, 1) for k, v in report.seconds.items()},
        "step_cpu_s": {k: round(v, 1) for k, v in report.cpu_seconds.items()},
    }


def step_seconds(home: Path, run_id: str) -> dict[str, float]:
    """Wall seconds of each step of a finished Dagster run, from the run's event log (largest
    first): where the time of a ``pipeline`` or ``nightly`` stage goes."""
    from dagster import DagsterEventType, DagsterInstance

    from phm.paths import dagster_home

    kinds = {
        DagsterEventType.STEP_START,
        DagsterEventType.STEP_SUCCESS,
        DagsterEventType.STEP_FAILURE,
    }
    instance = DagsterInstance.from_config(str(dagster_home(home)))
    try:
        started: dict[str, float] = {}
        seconds: dict[str, float] = {}
        for entry in instance.all_logs(run_id, of_type=kinds):
            key = entry.step_key
            if entry.dagster_event.event_type == DagsterEventType.STEP_START:
                started[key] = entry.timestamp
            elif key in started:
                seconds[key] = round(entry.timestamp - started[key], 1)
    finally:
        instance.dispose()
    return dict(sorted(seconds.items(), key=lambda kv: (-kv[1], kv[0])))


def _pipeline_home(workdir: Path, patients: int) -> tuple[Path, Path]:
    extracts, home = _paths(workdir, patients)
    return extracts, home.with_name("home-pipeline")


def stage_pipeline(workdir: Path, patients: int, seed: int) -> dict:
    """The whole Dagster run (every asset, maps and exports included) in a fresh home: the
    first run, which trains the risk model."""
    import shutil

    from pipelines.runner import run_pipeline

    extracts, home = _pipeline_home(workdir, patients)
    shutil.rmtree(home, ignore_errors=True)
    summary = run_pipeline(extracts, home, delivery=EXTRACT_DATE.isoformat())
    return {"assets": len(summary.materialized), "step_s": step_seconds(home, summary.run_id)}


def stage_nightly(workdir: Path, patients: int, seed: int) -> dict:
    """The whole Dagster run again in the ``pipeline`` stage's home: a nightly run on a home
    whose risk model is current, so it scores with the stored model instead of retraining
    (``segmentation.risk.retrain``); everything else is rebuilt as on any night."""
    from pipelines.runner import run_pipeline

    extracts, home = _pipeline_home(workdir, patients)
    if not (home / "models").is_dir():
        raise SystemExit("the nightly stage needs the pipeline stage's home: run --stage pipeline")
    summary = run_pipeline(extracts, home, delivery=EXTRACT_DATE.isoformat())
    return {"assets": len(summary.materialized), "step_s": step_seconds(home, summary.run_id)}


def stage_impact(workdir: Path, patients: int, seed: int) -> dict:
    """The impact stage on the measures' warehouse: treated sets and panels, matching,
    estimates (1,000 bootstrap replicates), outcome scores and caseload (the outreach funnel
    only when the cohorts have been built, e.g. by the pipeline stage)."""
    from phm.impact import pipeline as impact
    from phm.paths import warehouse_path
    from phm.warehouse import current_extract_date, session, table_exists

    _, home = _paths(workdir, patients)
    seconds: dict[str, float] = {}
    with session(warehouse_path(home)) as con:
        ed = current_extract_date(con)
        steps = [
            ("panels", lambda: impact.build_panels(con, ed)),
            ("matching", lambda: impact.build_matches(con)),
            ("estimates", lambda: impact.build_estimates(con)),
            ("outcome_scores", lambda: impact.build_outcome_scores(con, ed)),
        ]
        if table_exists(con, "marts.cohort_members"):
            steps.append(("caseload", lambda: impact.build_caseload(con, ed)))
        summary = {}
        for name, step in steps:
            t0 = time.perf_counter()
            out = step()
            seconds[name] = round(time.perf_counter() - t0, 1)
            if name == "matching":
                summary = out
    sp = summary.get("social_prescribing", {})
    return {"treated": sp.get("treated"), "matched": sp.get("matched"), "step_s": seconds}


STAGES = {
    "generate": stage_generate,
    "read_floor": stage_read_floor,
    "ingest": stage_ingest,
    "validate": stage_validate,
    "measures": stage_measures,
    "impact": stage_impact,
    "pipeline": stage_pipeline,
    "nightly": stage_nightly,
}


def _run_stage(stage: str, workdir: Path, patients: int, seed: int) -> dict:
    cmd = [sys.executable, "-m", "pipelines.bench", stage, str(workdir), str(patients), str(seed)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench stage {stage} failed (exit {proc.returncode})")
    detail = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return {
        "stage": stage,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 0),
        # user + system CPU seconds of the stage's process (every thread): less dependent on
        # what else a shared machine is doing than the wall time
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        **detail,
    }


#: how many of the slowest Dagster steps the printout and the Markdown results list
TOP_STEPS = 12
#: the stages that are whole Dagster runs (their ``step_s`` come from the run's event log)
RUN_STAGES = ("pipeline", "nightly")

#: the scaling target: ingest plus validation within 3 times DuckDB's own read
FLOOR_TARGET_RATIO = 3.0


def floor_comparison(rows: list[dict]) -> dict | None:
    """Ingest, validate and ingest + validate beside DuckDB's read floor (seconds and ratio),
    from the rows of one bench run; None unless the floor and both stages were measured."""
    by = {r["stage"]: r for r in rows}
    if not {"read_floor", "ingest", "validate"} <= set(by):
        return None
    floor = max(float(by["read_floor"]["read_s"]), 0.01)
    ingest, validate = float(by["ingest"]["seconds"]), float(by["validate"]["seconds"])
    out = {"read_floor_s": round(floor, 2)}
    for name, secs in (
        ("ingest", ingest),
        ("validate", validate),
        ("ingest_validate", ingest + validate),
    ):
        out[f"{name}_s"] = round(secs, 1)
        out[f"{name}_ratio"] = round(secs / floor, 1)
    out["target_ratio"] = FLOOR_TARGET_RATIO
    out["within_target"] = out["ingest_validate_ratio"] <= FLOOR_TARGET_RATIO
    return out


def run_bench(
    patients: int, seed: int, workdir: Path, results: Path, stages: list[str] | None = None
) -> list[dict]:
    stages = stages or list(STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"unknown bench stage(s) {unknown}; known: {list(STAGES)}")
    rows = []
    print(f"phm bench: {patients:,} patients, seed {seed}, {os.cpu_count()} cores")
    print(f"{'stage':<12} {'wall s':>8} {'CPU s':>8} {'peak MiB':>10}  detail")
    for stage in stages:
        row = _run_stage(stage, Path(workdir), patients, seed)
        rows.append(row)
        detail = {
            k: v for k, v in row.items() if k not in ("stage", "seconds", "peak_rss_mib", "cpu_s")
        }
        if stage in RUN_STAGES:  # the slowest steps only; all of them are in the results file
            detail["step_s"] = dict(list(detail["step_s"].items())[:TOP_STEPS])
        print(
            f"{stage:<12} {row['seconds']:>8.1f} {row['cpu_s']:>8.1f} "
            f"{row['peak_rss_mib']:>10.0f}  {detail}"
        )
    floor = floor_comparison(rows)
    if floor:
        print(f"DuckDB read floor (count(*) of every file): {floor['read_floor_s']:.2f} s")
        for name in ("ingest", "validate", "ingest_validate"):
            print(
                f"  {name.replace('_', ' + '):<18} {floor[f'{name}_s']:>8.1f} s"
                f"  = {floor[f'{name}_ratio']:>5.1f} x floor"
            )
        verdict = "within" if floor["within_target"] else "OVER"
        print(f"  ingest + validate {verdict} the {FLOOR_TARGET_RATIO:g}x target")
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    record = {
        "patients": patients,
        "seed": seed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "stages": rows,
        "read_floor": floor,
    }
    (results / f"bench-{patients}.json").write_text(json.dumps(record, indent=2) + "\n")
    md = [
        f"# phm bench: {patients:,} patients",
        "",
        "| stage | wall time (s) | CPU time (s) | peak memory (MiB) |",
        "|---|---:|---:|---:|",
        *[
            f"| {r['stage']} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} |"
            for r in rows
        ],
    ]
    if floor:
        md += [
            "",
            f"DuckDB read floor (`count(*)` of every delivery file): {floor['read_floor_s']:.2f} s",
            "",
            "| step | wall time (s) | x floor |",
            "|---|---:|---:|",
            *[
                f"| {n.replace('_', ' + ')} | {floor[f'{n}_s']:.1f} | {floor[f'{n}_ratio']:.1f} |"
                for n in ("ingest", "validate", "ingest_validate")
            ],
        ]
    for r in rows:
        if r["stage"] in RUN_STAGES and r.get("step_s"):
            md += [
                "",
                f"Slowest steps of the {r['stage']} stage (wall s, from the run's event log):",
                "",
                "| step | wall time (s) |",
                "|---|---:|",
                *[f"| {k} | {v:.1f} |" for k, v in list(r["step_s"].items())[:TOP_STEPS]],
                f"| (sum of all {len(r['step_s'])} steps) | {sum(r['step_s'].values()):.1f} |",
            ]
    (results / f"bench-{patients}.md").write_text("\n".join(md) + "\n")
    print(f"results: {results / f'bench-{patients}.json'}")
    return rows


def _child(argv: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    stage, workdir, patients, seed = argv[0], Path(argv[1]), int(argv[2]), int(argv[3])
    detail = STAGES[stage](workdir, patients, seed)
    print(json.dumps(detail))


if __name__ == "__main__":
    _child(sys.argv[1:])
