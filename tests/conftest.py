"""Shared fixtures. Test helpers are plain modules in this folder (``factory``,
``measures_fixtures``, ``geo_demo``, ``modulus11``), importable because pytest puts ``tests/``
on the path (``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest
from measures_fixtures import measures_connection, reset_staging


@pytest.fixture(scope="module")
def ref_con() -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with the measures' reference tables, loaded once per test module."""
    return measures_connection()


@pytest.fixture
def con(ref_con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``ref_con`` with empty staging tables (plus the one test practice) for each test.

    Modules with another kind of warehouse (e.g. test_risk, test_geo_need) define their own
    ``con``, which takes precedence over this one."""
    reset_staging(ref_con)
    return ref_con


@pytest.fixture(scope="session")
def small_home(tmp_path_factory):
    """A small generated delivery (1,500 patients) run through the whole pipeline once per
    session: ``(extracts, home)``, for the Dagster UI and the notebook tests."""
    from phm.synth import generate
    from pipelines.runner import run_pipeline

    root = tmp_path_factory.mktemp("small_home")
    extracts, home = root / "extracts", root / "home"
    generate(extracts, patients=1500, seed=7, extract_date=date(2026, 11, 1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHM_PSEUDONYMISATION_KEY", "0123456789abcdef0123456789abcdef0123")
        run_pipeline(extracts, home)
    return extracts, home


@pytest.fixture(scope="module")
def demo_need_warehouse():
    """An in-memory demo warehouse (3,000 patients, seed 11) with the need tables built, one
    per test module."""
    from geo_demo import make_demo_warehouse

    from geo.need import build_need_tables

    con = duckdb.connect()
    make_demo_warehouse(con, n_patients=3000, seed=11)
    build_need_tables(con)
    yield con
    con.close()
