"""geo.need on a small hand-made warehouse: counts, rates, disclosure control, GeoPackage."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3

import duckdb
import geopandas as gpd
import polars as pl
import pytest
from record_stub import add_empty_record

from geo.need import (
    ALL_PCNS,
    build_need_tables,
    compute_need,
    need_strata,
    publish,
    published_table,
    write_need_geopackages,
)
from geo.reference import OGL_ATTRIBUTION, load_imd2019, load_lsoa_boundaries
from phm.disclosure import DisclosurePolicy

POLICY = DisclosurePolicy(suppress_max=7, round_to=5, min_rate_events=10)
L1, L2 = "E01013600", "E01013601"


def _published(con, level: str) -> pl.DataFrame:
    strata = need_strata(con, level)
    return publish(compute_need(con, level, strata=strata), POLICY, strata=strata)


def _patients() -> pl.DataFrame:
    """47 patients.

    * PCN U00001 / LSOA L1: 12 patients aged 70 (band 70-74): 3 with 5+ LTCs, 8 with 2+;
      4 moderately frail; emergency admissions 2 each for 6 patients and 0 else (12 events);
      A&E 1 each (12 events).
    * PCN U00001 / LSOA L2: 5 patients aged 30, nothing recorded.
    * PCN U00002 / LSOA L2: 20 patients aged 40 with 1 A&E attendance each (20 events), one
      emergency admission in total.
    * PCN U00002 / no LSOA: 10 patients aged 50.
    """
    rows = []

    def add(n, pcn, practice, lsoa, age, **kw):
        for i in range(n):
            r = {
                "person_id": f"{pcn}-{lsoa}-{i}",
                "age": age,
                "sex": "F",
                "practice_code": practice,
                "pcn_code": pcn,
                "lsoa11_code": lsoa,
                "ltc_count": 0,
                "mental_ltc_count": 0,
                "physical_ltc_count": 0,
                "efi_category": "fit",
                "hfrs_category": None,
                "emergency_admissions_12m": 0,
                "ae_attendances_12m": 0,
            }
            for k, v in kw.items():
                r[k] = v(i) if callable(v) else v
            rows.append(r)

    add(
        12,
        "U00001",
        "A00001",
        L1,
        70,
        ltc_count=lambda i: 5 if i < 3 else (2 if i < 8 else 0),
        efi_category=lambda i: "moderate" if i < 4 else "fit",
        emergency_admissions_12m=lambda i: 2 if i < 6 else 0,
        ae_attendances_12m=1,
    )
    add(5, "U00001", "A00002", L2, 30)
    add(
        20,
        "U00002",
        "B00001",
        L2,
        40,
        ae_attendances_12m=1,
        emergency_admissions_12m=lambda i: 1 if i == 0 else 0,
    )
    add(10, "U00002", "B00001", None, 50)
    imd = load_imd2019().select("lsoa11_code", pl.col("imd_decile").alias("imd2019_decile"))
    df = pl.DataFrame(rows).join(imd, on="lsoa11_code", how="left")
    return df.with_columns(
        pl.col("age").cast(pl.Int32),
        pl.col("imd2019_decile").cast(pl.Int32),
        ((pl.col("imd2019_decile") + 1) // 2).cast(pl.Int32).alias("imd2019_quintile"),
        pl.col("hfrs_category").cast(pl.String),
    )


@pytest.fixture()
def con():
    c = duckdb.connect()
    for s in ("staging", "marts"):
        c.execute(f"CREATE SCHEMA {s}")
    pm = _patients()
    practices = pl.DataFrame(
        {
            "practice_code": ["A00001", "A00002", "B00001"],
            "practice_name": ["Alpha", "Beta", "Gamma"],
            "pcn_code": ["U00001", "U00001", "U00002"],
            "pcn_name": ["First PCN", "First PCN", "Second PCN"],
        }
    )
    frail = pm.filter(pl.col("efi_category") == "moderate")["person_id"].to_list()
    cohorts = pl.DataFrame(
        {
            "cohort_id": ["frail"] * (len(frail) + 2) + ["A&E users"] * 20,
            "person_id": frail
            + [frail[0], "not-registered"]  # duplicate row, and a non-registered member
            + [f"U00002-{L2}-{i}" for i in range(20)],
        }
    )
    for name, df in (
        ("marts.patient_measures", pm),
        ("staging.practices", practices),
        ("marts.cohort_members", cohorts),
    ):
        c.register("_df", df)
        c.execute(f"CREATE TABLE {name} AS SELECT * FROM _df")
        c.unregister("_df")
    add_empty_record(c, dt.date(2026, 11, 1))
    yield c
    c.close()


def _row(df: pl.DataFrame, pcn: str, key: str, value) -> dict:
    f = df.filter(pl.col("pcn_code") == pcn)
    f = f.filter(pl.col(key).is_null()) if value is None else f.filter(pl.col(key) == value)
    assert f.height == 1, (pcn, value, f)
    return f.row(0, named=True)


def test_raw_lsoa_counts_and_rates(con):
    raw = compute_need(con, "lsoa")
    a = _row(raw, "U00001", "lsoa11_code", L1)
    assert a["pcn_name"] == "First PCN" and a["lsoa11_name"] == "Leicester 003A"
    assert a["population"] == 12
    assert (a["ltc5_n"], a["ltc2_n"], a["frailty_n"], a["frailty_denominator"]) == (3, 8, 4, 12)
    assert a["ltc5_pct"] == pytest.approx(25.0)
    assert a["emergency_admissions_n"] == 12
    assert a["emergency_admissions_crude_per_1000"] == pytest.approx(1000.0)
    # everyone in one band (70-74, ESP weight 5,000 of 100,000), band rate 1,000 per 1,000:
    # DSR = 5000 × 1000 / 100000 = 50 per 1,000 (other bands have no population)
    assert a["emergency_admissions_dsr_per_1000"] == pytest.approx(50.0)
    assert a["cohort_frail_n"] == 4 and a["cohort_a_e_users_n"] == 0
    # all PCNs together in L2: 5 + 20 patients
    both = _row(raw, ALL_PCNS, "lsoa11_code", L2)
    assert both["population"] == 25 and both["ae_attendances_n"] == 20
    assert both["cohort_a_e_users_n"] == 20
    # patients with no LSOA are counted in a null-LSOA row
    assert _row(raw, "U00002", "lsoa11_code", None)["population"] == 10
    assert raw.filter(pl.col("pcn_code") == ALL_PCNS)["population"].sum() == 47
    # PCN rows first, then ALL; sorted
    assert raw["pcn_code"].to_list()[-1] == ALL_PCNS


def test_frailty_prevalence_is_the_frailty_cohort(con):
    """The numerator is data/cohorts/frailty.yaml: aged 65+ and eFI moderate/severe, or a
    moderate/severe frailty code, or (from age 75 only) HFRS intermediate/high; the
    denominator is everyone aged 65+."""
    con.execute(
        "UPDATE marts.patient_measures SET hfrs_category = 'high' "
        "WHERE person_id IN ('U00001-E01013600-10', 'U00001-E01013600-0')"
    )  # a fit patient aged 70 with high HFRS (not frail: HFRS counts from 75); one eFI-moderate
    con.execute(
        "UPDATE marts.patient_measures SET efi_category = 'severe', hfrs_category = 'high' "
        "WHERE person_id = 'U00002-E01013601-0'"
    )  # aged 40: not in the denominator, so not in the numerator
    raw = compute_need(con, "lsoa")
    a = _row(raw, "U00001", "lsoa11_code", L1)
    assert (a["frailty_n"], a["frailty_denominator"]) == (4, 12)
    b = _row(raw, "U00002", "lsoa11_code", L2)
    assert (b["frailty_n"], b["frailty_denominator"]) == (0, 0)


def test_imd_group_tables(con):
    dec = compute_need(con, "imd_decile")
    quint = compute_need(con, "imd_quintile")
    for t in (dec, quint):
        assert t.filter(pl.col("pcn_code") == ALL_PCNS)["population"].sum() == 47
    assert "imd2019_decile" in dec.columns and "imd2019_quintile" in quint.columns


def test_msoa_level_from_lsoa_names(con):
    """L1 and L2 are Leicester 003A and 003B: one MSOA, "Leicester 003"."""
    raw = compute_need(con, "msoa")
    assert raw.columns[:3] == ["pcn_code", "pcn_name", "msoa11_name"]
    assert _row(raw, "U00001", "msoa11_name", "Leicester 003")["population"] == 17
    assert _row(raw, "U00002", "msoa11_name", "Leicester 003")["population"] == 20
    assert _row(raw, "U00002", "msoa11_name", None)["population"] == 10  # no LSOA
    assert _row(raw, ALL_PCNS, "msoa11_name", "Leicester 003")["ltc5_n"] == 3
    # published through the same disclosure control: 17 -> 15, 3 people -> suppressed
    pub = _published(con, "msoa")
    a = _row(pub, "U00001", "msoa11_name", "Leicester 003")
    assert a["population"] == "15" and a["ltc5_n"] == "*" and a["ltc5_pct"] is None
    assert a["ae_attendances_n"] == "10"  # 12 -> 10
    t = _row(pub, ALL_PCNS, "msoa11_name", "Leicester 003")
    assert t["population"] == "35" and t["ae_attendances_n"] == "30"
    assert t["ae_attendances_crude_per_1000"] == pytest.approx(round(30 / 35 * 1000, 1))


def test_published_values_are_disclosure_controlled(con):
    pub = _published(con, "lsoa")
    a = _row(pub, "U00001", "lsoa11_code", L1)
    # 12 patients, but hidden: PCN U00001 has 5 (suppressed) in L2, and its areas add up to
    # its population, so the smallest other area is suppressed with it (complementary)
    assert a["population"] == "*"
    assert a["ltc5_n"] == "*" and a["frailty_n"] == "*" and a["cohort_frail_n"] == "*"
    assert a["ltc2_n"] == "10"  # 8 -> 10
    # no rate rests on a suppressed count (the denominator here), nor on fewer than 10
    assert a["ltc2_pct"] is None and a["ltc5_pct"] is None and a["ltc5_pct_lcl95"] is None
    assert a["emergency_admissions_crude_per_1000"] is None
    # the ALL row of L1 has a single PCN: equal to the suppressed cell, so suppressed too
    assert _row(pub, ALL_PCNS, "lsoa11_code", L1)["population"] == "*"
    small = _row(pub, "U00001", "lsoa11_code", L2)
    assert small["population"] == "*" and small["ae_attendances_n"] == "0"
    b = _row(pub, "U00002", "lsoa11_code", L2)
    assert b["emergency_admissions_n"] == "*" and b["population"] == "*"
    assert b["ae_attendances_n"] == "20" and b["ae_attendances_crude_per_1000"] is None
    assert b["emergency_admissions_dsr_per_1000"] is None
    # ALL / L2: 25 patients, 20 A&E attendances; rates from the protected counts
    t = _row(pub, ALL_PCNS, "lsoa11_code", L2)
    assert t["population"] == "25" and t["ae_attendances_n"] == "20"
    assert t["ae_attendances_crude_per_1000"] == pytest.approx(800.0)
    # DSR from per-band counts rounded to 5: 20 events in 20 people aged 40-44 (ESP weight
    # 7,000) and none in 5 people aged 30-34: 7000 × 1000 / 100000
    assert t["ae_attendances_dsr_per_1000"] == pytest.approx(70.0)
    # within every area, the PCN rows and the ALL row never have exactly one suppressed cell
    for c in ("population", "ltc5_n", "emergency_admissions_n", "cohort_frail_n"):
        stars = pub.group_by("lsoa11_code").agg((pl.col(c) == "*").sum().alias("k"))
        assert (stars["k"] != 1).all(), c
    # no published count column is numeric; no value 1..7 anywhere
    counts = [c for c in pub.columns if c == "population" or c.endswith(("_n", "_denominator"))]
    for c in counts:
        assert pub[c].dtype == pl.String, c
        vals = [v for v in pub[c].to_list() if v not in (None, "*")]
        assert all(int(v) % 5 == 0 and not 1 <= int(v) <= 7 for v in vals), c


def test_build_need_tables_writes_raw_and_published(con):
    written = build_need_tables(con, POLICY)
    assert set(written) == {
        "geo.need_by_lsoa",
        "geo.need_by_lsoa_published",
        "geo.need_by_msoa",
        "geo.need_by_msoa_published",
        "geo.need_by_imd_decile",
        "geo.need_by_imd_decile_published",
        "geo.need_by_imd_quintile",
        "geo.need_by_imd_quintile_published",
    }
    pop = con.execute(
        f"SELECT population FROM {published_table('lsoa')} "
        f"WHERE pcn_code = 'U00001' AND lsoa11_code = '{L2}'"
    ).fetchone()[0]
    assert pop == "*"


def test_geopackage_has_every_lsoa_and_only_published_values(con, tmp_path):
    build_need_tables(con, POLICY)
    pub = con.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    paths = write_need_geopackages(pub, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "U00001/need_by_lsoa.gpkg",
        "U00002/need_by_lsoa.gpkg",
    ]
    first = gpd.read_file(paths[0])
    assert first.crs.to_epsg() == 4326
    # every LSOA where the PCN has patients (from the input) appears
    inputs = con.execute(
        "SELECT DISTINCT lsoa11_code FROM marts.patient_measures "
        "WHERE pcn_code = 'U00001' AND lsoa11_code IS NOT NULL ORDER BY 1"
    ).fetchall()
    assert first["lsoa11_code"].tolist() == [r[0] for r in inputs]
    assert first.geometry.notna().all() and first.geometry.is_valid.all()
    row = first.set_index("lsoa11_code").loc[L2]
    assert row["population"] == "*"
    assert gpd.read_file(paths[1])["lsoa11_code"].tolist() == [L2]
    # same inputs, same bytes (GeoPackage timestamp pinned)
    digest = hashlib.sha256(paths[0].read_bytes()).hexdigest()
    write_need_geopackages(pub, tmp_path)
    assert hashlib.sha256(paths[0].read_bytes()).hexdigest() == digest
    with sqlite3.connect(paths[0]) as db:
        assert (
            db.execute("SELECT last_change FROM gpkg_contents")
            .fetchone()[0]
            .startswith("2000-01-01")
        )


def test_lsoa_outside_boundary_file_keeps_a_row(con, tmp_path):
    con.execute(
        "UPDATE marts.patient_measures SET lsoa11_code = 'E01000001' "
        "WHERE person_id = 'U00001-E01013601-0'"
    )
    pub = _published(con, "lsoa")
    (path,) = write_need_geopackages(pub, tmp_path, pcn_codes=["U00001"])
    g = gpd.read_file(path)
    assert "E01000001" in g["lsoa11_code"].tolist()  # City of London: no LLR boundary
    assert g.set_index("lsoa11_code").geometry.loc["E01000001"] is None


def test_marts_without_person_id_fail_clearly(con):
    """An old warehouse whose marts are keyed by NHS number is refused, not joined wrongly."""
    con.execute("ALTER TABLE marts.patient_measures RENAME COLUMN person_id TO nhs_number")
    with pytest.raises(LookupError, match=r"marts.patient_measures has no person_id"):
        compute_need(con, "lsoa")


def test_missing_count_column_is_named(con):
    con.execute("ALTER TABLE marts.patient_measures DROP COLUMN ae_attendances_12m")
    with pytest.raises(LookupError, match="ae_attendances_12m"):
        compute_need(con, "lsoa")


def test_reference_loaders():
    b = load_lsoa_boundaries()
    assert len(b) == 611 and b.crs.to_epsg() == 4326
    imd = load_imd2019()
    assert imd.height == 32_844
    assert {"income_decile", "living_env_decile", "idaci_decile", "imd_quintile"} <= set(
        imd.columns
    )
    assert "Open Government Licence" in OGL_ATTRIBUTION
