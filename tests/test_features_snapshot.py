"""The as-of snapshot behind the model features: the warehouse read in place through
filtered views in an attached in-memory catalog, nothing written to the warehouse, the
catalog dropped afterwards (also when building on it fails)."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest
from test_segmentation import ED, working_copy

from segmentation.features import snapshot

AS_OF = ED - dt.timedelta(days=365)


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    c = duckdb.connect(str(working_copy(tmp_path_factory, "snapshot")), read_only=True)
    c.execute("SET enable_progress_bar = false")
    yield c
    c.close()


def _catalogs(con) -> list[str]:
    return sorted(
        r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    )


def _tables(con) -> list[tuple]:
    return con.execute(
        "SELECT table_catalog, table_schema, table_name FROM information_schema.tables ORDER BY ALL"
    ).fetchall()


def _one(con, sql: str):
    return con.execute(sql).fetchone()[0]


def test_snapshot_holds_the_record_known_on_the_index_date(con):
    d = f"DATE '{AS_OF.isoformat()}'"
    with snapshot(con, AS_OF) as snap:
        assert _one(snap, f"SELECT max(event_date) <= {d} FROM staging.gp_events")
        assert _one(snap, "SELECT count(*) FROM staging.gp_events") == _one(
            con, f"SELECT count(*) FROM staging.gp_events WHERE event_date <= {d}"
        )
        assert _one(con, f"SELECT count(*) FROM staging.gp_events WHERE event_date > {d}") > 0
        registered = (
            f"registration_start <= {d} AND (registration_end IS NULL OR registration_end > {d})"
        )
        assert _one(snap, "SELECT count(*) FROM staging.gp_patients") == _one(
            con, f"SELECT count(*) FROM staging.gp_patients WHERE {registered}"
        )
        # a death after the index date was not yet known
        assert (
            _one(snap, f"SELECT count(*) FROM staging.gp_patients WHERE date_of_death > {d}") == 0
        )
        assert _one(snap, "SELECT count(*) FROM reference.codelists") == _one(
            con, "SELECT count(*) FROM reference.codelists"
        )


def test_snapshot_writes_to_its_own_catalog_and_drops_it(con):
    catalogs, tables = _catalogs(con), _tables(con)
    with snapshot(con, AS_OF) as snap:
        # the warehouse connection is read-only; the snapshot is not
        snap.execute("CREATE OR REPLACE TABLE marts.patient_measures AS SELECT 1 AS x")
        assert _one(snap, "SELECT x FROM marts.patient_measures") == 1
        assert len(_catalogs(con)) == len(catalogs) + 1
    assert _catalogs(con) == catalogs
    assert _tables(con) == tables
    assert _one(con, "SELECT count(*) FROM marts.patient_measures") > 1


def test_snapshot_catalog_is_dropped_when_building_on_it_fails(con):
    catalogs = _catalogs(con)
    with pytest.raises(duckdb.CatalogException), snapshot(con, AS_OF) as snap:
        snap.execute("SELECT * FROM staging.no_such_table")
    assert _catalogs(con) == catalogs
