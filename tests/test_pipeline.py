"""The Dagster code location loads, and `phm run` materialises everything through it."""

import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource
from factory import EXTRACT_DATE, NHS, make_delivery

from phm.contract import TABLE_NAMES
from phm.measures import MEASURES_TABLES
from phm.paths import warehouse_path
from phm.pseudonymise import person_id
from phm.warehouse import SCHEMAS
from pipelines.assets.marts import REFERENCE_TABLES, no_identifiers_in_marts
from pipelines.definitions import NIGHTLY_JOB, build_definitions
from pipelines.resources import Settings
from pipelines.runner import PipelineFailed, run_pipeline


def test_definitions_load_with_job_schedule_and_resources(tmp_path):
    defs = build_definitions(Settings(tmp_path / "x", tmp_path / "home"))
    job = defs.resolve_job_def(NIGHTLY_JOB)
    assert job.executor_def.name == "in_process"
    schedule = defs.resolve_schedule_def("nightly_0200")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Europe/London"
    keys = {k.path[0] for k in defs.resolve_asset_graph().get_all_asset_keys()}
    # an asset key's prefix is its warehouse schema (or an export)
    assert keys <= set(SCHEMAS) | {"exports"}
    for table in TABLE_NAMES:
        assert f"raw/{table}" in {
            k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()
        }


def test_lineage_graph_shows_every_table_written(tmp_path):
    graph = build_definitions(Settings(tmp_path / "x", tmp_path / "home")).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    tables = {
        "raw/_delivery",
        "reference/codelists",
        "reference/ltc_conditions",
        "reference/hfrs_weights",
        "marts/ltc_registers",
        "marts/efi",
        "marts/efi_deficits",
        "marts/hfrs",
        "marts/utilisation",
        "marts/patient_measures",
        "marts/person_identity",
        "marts/cohort_members",
        "marts/cohort_definitions",
        "marts/clusters",
        "marts/cluster_profiles",
        "geo/need_by_lsoa",
        "geo/need_by_lsoa_published",
        "geo/need_by_imd_decile_published",
    }
    assert tables <= keys
    assert "geo/need_by_area" not in keys  # a step, not a table
    parents = {
        k.to_user_string()
        for k in graph.get(dg.AssetKey(["marts", "patient_measures"])).parent_keys
    }
    assert {"marts/ltc_registers", "marts/efi", "marts/hfrs", "marts/person_identity"} <= parents
    checks = {
        c.to_user_string(): graph.get_check_spec(c)
        for c in graph.asset_check_keys
        if c.name == "no_identifiers_in_marts"
    }
    assert list(checks) == ["marts/patient_measures:no_identifiers_in_marts"]
    assert next(iter(checks.values())).blocking


MEASURES = (
    [f"raw/{t}" for t in TABLE_NAMES]
    + ["raw/_delivery"]
    + [f"{s}/{t}" for s in ("staging", "quarantine") for t in TABLE_NAMES]
    + [f"reference/{t}" for t in REFERENCE_TABLES]
    + [t.replace(".", "/") for t in MEASURES_TABLES]
    + ["staging/apc_spells"]  # the spells view, written with the measures
)


def test_measures_run_passes_the_identifier_check_and_a_planted_column_fails_it(
    tmp_path, monkeypatch
):
    key = "a-test-pseudonymisation-key-0123456789"
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", key)
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    make_delivery(extracts)
    home.mkdir()
    defs = build_definitions(Settings(extracts, home))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("delivery", [EXTRACT_DATE.isoformat()])
    result = defs.resolve_job_def(NIGHTLY_JOB).execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey(k.split("/")) for k in MEASURES],
        partition_key=EXTRACT_DATE.isoformat(),
    )
    assert result.success
    evaluations = {e.asset_check_key.name: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations["no_identifiers_in_marts"] is True
    db = warehouse_path(home)
    con = duckdb.connect(str(db))
    ids = {r[0] for r in con.execute("SELECT person_id FROM marts.patient_measures").fetchall()}
    assert ids and ids <= {person_id(n, key.encode()) for n in NHS}
    assert "ltc_names" in {r[0] for r in con.execute("DESCRIBE marts.patient_measures").fetchall()}
    # an NHS number column anywhere else in marts fails the check
    con.execute("ALTER TABLE marts.hfrs ADD COLUMN nhs_number VARCHAR")
    con.close()
    check = no_identifiers_in_marts(warehouse=DuckDBResource(database=str(db)))
    assert check.passed is False
    assert check.metadata["tables_with_nhs_number"].value == ["marts.hfrs"]


def test_dagster_finds_the_code_location_from_the_repo_root():
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _scan_for(folder: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n}" for n in needles if n.encode() in data]
    return hits


RAW = [f"raw/{t}" for t in TABLE_NAMES] + ["raw/_delivery"]


def test_phm_run_ingests_and_keeps_last_good_state(tmp_path):
    # a hand-made delivery of two patients is too small for the risk model, so this runs
    # the ingest step; test_end_to_end runs every asset on generated deliveries
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    make_delivery(extracts)
    summary = run_pipeline(extracts, home, selection=RAW)
    assert set(summary.materialized) == set(RAW)
    # the run is recorded in HOME/dagster, where the UI looks
    assert (home / "dagster" / "dagster.yaml").exists()
    assert any((home / "dagster").rglob("*.db"))
    # no NHS number or date of birth in the event log or compute logs
    assert _scan_for(home / "dagster", [*NHS[:2], "1950-03-04", "1980-07-21"]) == []

    # a newer delivery with a file-level fault: the run fails naming the file...
    bad = make_delivery(extracts, extract_date=date(2026, 11, 8))
    (bad / "gp_events.csv").write_text("nhs_number,event_date\n")
    with pytest.raises(PipelineFailed, match=r"gp_events\.csv: sha256 differs"):
        run_pipeline(extracts, home, selection=RAW)
    # ...and the warehouse still answers with the good delivery
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    assert con.execute("select extract_date from raw._delivery").fetchone()[0] == date(2026, 11, 1)
    assert con.execute("select count(*) from raw.gp_events").fetchone()[0] == 2
    con.close()


def test_cli_help_and_run_failure_exit_code(tmp_path):
    phm = str(Path(sys.executable).parent / "phm")
    for sub in ([], ["generate"], ["run"], ["bench"]):
        out = subprocess.run([phm, *sub, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: phm" in out.stdout
    out = subprocess.run(
        [phm, "run", "--extracts", str(tmp_path / "none"), "--home", str(tmp_path / "h")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert "extracts folder does not exist" in out.stderr
    out = subprocess.run(
        [phm, "generate", "--patients", "0", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2 and "must be at least 1" in out.stderr
