"""Shared fixtures. Test helpers are plain modules in this folder (``factory``,
``measures_fixtures``, ``geo_demo``, ``modulus11``), importable because pytest puts ``tests/``
on the path (``pythonpath`` in pyproject.toml)."""

from __future__ import annotations

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
