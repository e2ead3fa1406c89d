"""Bridges to Health segments, needs-based clusters and per-PCN outputs on a generated delivery.

The generated warehouse is shared with tests/test_risk.py through :func:`shared_warehouse`
(built once per test session under pytest's base temp folder); each module works on its
own copy of the DuckDB file.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest

from phm.contract import TABLE_NAMES
from phm.measures import MEASURES_TABLES
from phm.synth import generate
from pipelines.assets.marts import REFERENCE_TABLES
from pipelines.runner import run_pipeline
from segmentation.bridges import (
    BRIDGES_PATH,
    BridgesDefinitionError,
    assign_segments,
    load_bridges_definition,
    segment_names,
)
from segmentation.clusters import build_clusters
from segmentation.report import write_pcn_outputs

ED = date(2026, 11, 1)
PATIENTS = 5000
SEED = 21

#: the assets the segmentation needs (ingest, validation, code lists, measures)
SELECTION = [
    *(f"raw/{t}" for t in TABLE_NAMES),
    "raw/_delivery",
    *(f"staging/{t}" for t in TABLE_NAMES),
    *(f"quarantine/{t}" for t in TABLE_NAMES),
    *(f"reference/{t}" for t in REFERENCE_TABLES),
    *(t.replace(".", "/") for t in MEASURES_TABLES),
]


def shared_warehouse(tmp_path_factory) -> tuple[Path, Path]:
    """(extracts root, warehouse file) of one generated delivery run through the pipeline."""
    base = tmp_path_factory.getbasetemp() / "segmentation_shared"
    done = base / "DONE"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        generate(base / "extracts", patients=PATIENTS, seed=SEED, extract_date=ED)
        run_pipeline(base / "extracts", base / "home", selection=SELECTION)
        done.touch()
    return base / "extracts", base / "home" / "warehouse.duckdb"


def working_copy(tmp_path_factory, name: str) -> Path:
    _, warehouse = shared_warehouse(tmp_path_factory)
    copy = tmp_path_factory.mktemp(name) / "warehouse.duckdb"
    shutil.copyfile(warehouse, copy)
    return copy


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = working_copy(tmp_path_factory, "segmentation")
    c = duckdb.connect(str(path))
    c.execute("SET enable_progress_bar = false")
    assign_segments(c)
    yield c
    c.close()


# --------------------------------------------------------------------------------------
# Bridges to Health
# --------------------------------------------------------------------------------------


def test_every_patient_has_exactly_one_segment(con):
    n_patients = con.execute("SELECT count(*) FROM marts.patient_measures").fetchone()[0]
    rows, people, nulls = con.execute(
        "SELECT count(*), count(DISTINCT person_id), count(*) FILTER (WHERE segment IS NULL "
        "OR segment_reason IS NULL OR segment_reason = '') FROM marts.segments"
    ).fetchone()
    assert rows == people == n_patients
    assert nulls == 0
    missing = con.execute(
        "SELECT count(*) FROM marts.patient_measures pm ANTI JOIN marts.segments USING (person_id)"
    ).fetchone()[0]
    assert missing == 0
    segs = {r[0] for r in con.execute("SELECT DISTINCT segment FROM marts.segments").fetchall()}
    assert segs <= set(segment_names())
    # a population of this size has people in the common segments
    assert {"healthy", "chronic conditions with normal function", "acute but curable"} <= segs


def test_the_eight_segments_in_priority_order_each_rule_cited():
    d = load_bridges_definition()
    assert d.names == [
        "short period of decline before dying",
        "frailty and dementia",
        "limited reserve and exacerbations (organ failure)",
        "stable but serious disability",
        "maternal and infant health",
        "chronic conditions with normal function",
        "acute but curable",
        "healthy",
    ]
    assert all(r.citation for s in d.segments for r in s.rules)
    assert any("Lynn" in s for s in d.source)


def test_priority_first_matching_segment_wins(con):
    inputs = con.execute(
        """
        SELECT s.segment, pm.has_dementia, pm.has_copd, pm.has_heart_failure, pm.ltc_count,
               pm.emergency_admissions_12m, pm.age
        FROM marts.segments s JOIN marts.patient_measures pm USING (person_id)
        """
    ).pl()
    # dementia outranks organ failure, chronic conditions and acute
    dem = inputs.filter(pl.col("has_dementia"))
    assert dem.height > 0
    assert set(dem["segment"]) <= {"short period of decline before dying", "frailty and dementia"}
    organ = inputs.filter(pl.col("has_copd") | pl.col("has_heart_failure"))
    assert set(organ["segment"]) <= set(segment_names()[:3])
    # nobody with a long-term condition is "healthy" or merely "acute"
    ltc = inputs.filter(pl.col("ltc_count") >= 1)
    assert not set(ltc["segment"]) & {"healthy", "acute but curable"}
    # healthy = no condition and no acute episode
    healthy = inputs.filter(pl.col("segment") == "healthy")
    assert healthy["ltc_count"].max() == 0
    assert healthy["emergency_admissions_12m"].max() == 0


def test_reason_lists_every_matching_rule_of_the_segment(con):
    df = con.execute(
        """
        SELECT s.segment_reason, pm.has_heart_failure, pm.has_copd
        FROM marts.segments s JOIN marts.patient_measures pm USING (person_id)
        WHERE s.segment = 'limited reserve and exacerbations (organ failure)'
        """
    ).pl()
    assert df.height > 0
    for r in df.iter_rows(named=True):
        assert ("heart failure" in r["segment_reason"]) == r["has_heart_failure"]
        assert ("COPD" in r["segment_reason"]) == r["has_copd"]


def _write_definition(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridges.yaml"
    base = BRIDGES_PATH.read_text(encoding="utf-8").split("\nsegments:")[0]
    path.write_text(base + "\nsegments:\n" + text, encoding="utf-8")
    return path


def test_definition_needs_a_catch_all_last_segment(tmp_path):
    path = _write_definition(
        tmp_path,
        """
  - id: old
    name: old
    rules: [{id: r, measure: age, op: ">=", value: 80, reason: old, citation: x}]
  - id: rest
    name: rest
    rules: [{id: r, measure: age, op: "<", value: 80, reason: young, citation: x}]
""",
    )
    with pytest.raises(BridgesDefinitionError, match=r"segments\[1\]\.rules: .*everyone: true"):
        load_bridges_definition(path)


def test_definition_with_unknown_column_fails_clearly(con, tmp_path):
    path = _write_definition(
        tmp_path,
        """
  - id: odd
    name: odd
    rules:
      - id: r
        reason: odd
        citation: x
        all: [{measure: has_unicorns, op: is_true}, {measure: age, op: ">", value: 3}]
  - id: rest
    name: rest
    rules: [{id: r, everyone: true, reason: rest, citation: x}]
""",
    )
    with pytest.raises(
        BridgesDefinitionError,
        match=r"bridges\.yaml: segments\[0\]\.rules\[0\]\.all\[0\]\.measure: unknown column "
        "'has_unicorns'",
    ):
        assign_segments(con, definition=load_bridges_definition(path))


def test_definition_rejects_sql_text(tmp_path):
    path = _write_definition(
        tmp_path,
        """
  - id: odd
    name: odd
    rules: [{id: r, when: "age > 3; DROP TABLE x", reason: odd, citation: x}]
  - id: rest
    name: rest
    rules: [{id: r, everyone: true, reason: rest, citation: x}]
""",
    )
    with pytest.raises(BridgesDefinitionError, match=r"rules\[0\]\.when: SQL text is not accepted"):
        load_bridges_definition(path)


def test_custom_definition_first_segment_wins(tmp_path_factory, tmp_path):
    path = _write_definition(
        tmp_path,
        """
  - id: older
    name: older
    rules: [{id: r, measure: age, op: ">=", value: 50, reason: "aged {age}", citation: x}]
  - id: everyone
    name: everyone
    rules: [{id: r, everyone: true, reason: rest, citation: x}]
""",
    )
    c = duckdb.connect(str(working_copy(tmp_path_factory, "custom_bridges")))
    try:
        n = assign_segments(c, definition=load_bridges_definition(path))
        df = c.execute(
            "SELECT s.segment, s.segment_reason, pm.age FROM marts.segments s "
            "JOIN marts.patient_measures pm USING (person_id)"
        ).pl()
    finally:
        c.close()
    assert df.height == n
    older = df.filter(pl.col("segment") == "older")
    assert older["age"].min() >= 50
    assert df.filter(pl.col("segment") == "everyone")["age"].max() < 50
    assert all(r == f"aged {a}" for r, a in older.select("segment_reason", "age").iter_rows())


# --------------------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clusters(con):
    return build_clusters(con, seed=7)


def test_clusters_chosen_by_silhouette_and_cover_everyone(con, clusters):
    assert set(clusters.silhouettes) == set(range(3, 9))
    assert clusters.k == max(clusters.silhouettes, key=lambda k: (clusters.silhouettes[k], -k))
    n = con.execute("SELECT count(*) FROM marts.patient_measures").fetchone()[0]
    rows, people, ks = con.execute(
        "SELECT count(*), count(DISTINCT person_id), count(DISTINCT cluster) FROM marts.clusters"
    ).fetchone()
    assert rows == people == n
    assert ks == clusters.k
    prof = con.execute("SELECT * FROM marts.cluster_profiles ORDER BY cluster").pl()
    assert prof["cluster"].to_list() == list(range(1, clusters.k + 1))
    assert prof["description"].str.len_chars().min() > 40
    assert prof["cluster_label"].str.len_chars().min() > 3
    for v in prof["patients"]:
        assert v == "*" or int(v) % 5 == 0


def test_clusters_are_deterministic_for_a_seed(con, clusters):
    first = con.execute("SELECT person_id, cluster FROM marts.clusters ORDER BY 1").pl()
    again = build_clusters(con, seed=7)
    second = con.execute("SELECT person_id, cluster FROM marts.clusters ORDER BY 1").pl()
    assert again.k == clusters.k
    assert first.equals(second)


# --------------------------------------------------------------------------------------
# Per-PCN outputs
# --------------------------------------------------------------------------------------


def test_pcn_outputs_are_disclosure_controlled(con, tmp_path):
    written = write_pcn_outputs(con, tmp_path)
    pcns = {
        r[0] for r in con.execute("SELECT DISTINCT pcn_code FROM marts.patient_measures").fetchall()
    }
    assert set(written) == pcns
    for pcn, (csv, png) in written.items():
        assert csv == tmp_path / pcn / "segments.csv"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        df = pl.read_csv(csv, infer_schema=False)
        assert df["segment"].to_list() == segment_names()
        assert set(df["pcn_code"]) == {pcn}
        for v in df["patients"]:
            assert v == "*" or int(v) % 5 == 0
        shares = [float(s) for s in df["share_pct"].drop_nulls()]
        assert 90 <= sum(shares) <= 110
