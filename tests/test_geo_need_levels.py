"""geo.need.build_need_tables sums every level from one temporary patients table: the same
tables as each level straight from the marts, and the same on every run."""

from __future__ import annotations

import pytest
from polars.testing import assert_frame_equal

from geo.need import LEVELS, NEED_PATIENTS, build_need_tables, compute_need, published_table


@pytest.fixture(scope="module")
def warehouse(demo_need_warehouse):
    return demo_need_warehouse


def _tables(con) -> dict:
    names = [t for _, t in LEVELS.values()] + [published_table(lvl) for lvl in LEVELS]
    return {name: con.execute(f"SELECT * FROM {name}").pl() for name in names}


def test_every_level_equals_the_level_computed_alone(warehouse):
    for level, (area_col, table) in LEVELS.items():
        built = warehouse.execute(f"SELECT * FROM {table}").pl()
        alone = compute_need(warehouse, level)
        assert built.height > 0 and built[area_col].n_unique() > 1
        assert_frame_equal(built, alone, check_dtypes=False)


def test_the_patients_table_is_dropped(warehouse):
    left = warehouse.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [NEED_PATIENTS]
    ).fetchone()[0]
    assert left == 0


def test_a_second_build_gives_the_same_tables(warehouse):
    first = _tables(warehouse)
    build_need_tables(warehouse)
    second = _tables(warehouse)
    for name, df in first.items():
        assert_frame_equal(df, second[name])
