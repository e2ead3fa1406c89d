"""marts.patient_measures: population, demographics, IMD, assembly and definition texts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pytest
from measures_fixtures import (
    add_events,
    add_issues,
    add_patients,
    code_for_condition,
    insert_rows,
    measures_connection,
)

from phm.measures import (
    MEASURES_TABLES,
    build_measures,
    build_patient_measures,
    check_reference_tables,
    describe,
    load_ltc_conditions,
    measure_tables,
    patient_measures_columns,
)
from phm.measures.definitions import IMD_PATH
from phm.pseudonymise import identifier_columns, person_id

ED = dt.date(2026, 11, 1)
KEY = b"test-key-for-the-measures-0123456789"


def table(con) -> dict[str, dict]:
    build_measures(con, ED, load_reference=False)
    cur = con.execute("SELECT * FROM marts.patient_measures")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def test_population_is_current_living_registrations(con) -> None:
    add_patients(con, "CURRENT")
    add_patients(con, "LEFT", registration_end=dt.date(2025, 1, 1))
    add_patients(con, "DIED", date_of_death=dt.date(2026, 3, 3))
    add_patients(con, "DIED_ON_ED", date_of_death=ED)
    add_patients(con, "NOT_YET", registration_start=ED + dt.timedelta(days=1))
    # moved practice: old registration ended, new one current -> one row, current practice
    insert_rows(
        con,
        "practices",
        [
            {
                "practice_code": "C82019",
                "practice_name": "P2",
                "pcn_code": "U99999",
                "pcn_name": "N2",
            }
        ],
    )
    add_patients(con, "MOVED", registration_end=dt.date(2020, 1, 1))
    add_patients(con, "MOVED", practice_code="C82019", registration_start=dt.date(2020, 1, 2))
    rows = table(con)
    assert set(rows) == {"CURRENT", "MOVED"}
    assert (rows["MOVED"]["practice_code"], rows["MOVED"]["pcn_code"]) == ("C82019", "U99999")
    assert rows["CURRENT"]["pcn_code"] == "U12345"


def test_age_in_whole_years_at_extract_date(con) -> None:
    add_patients(con, "BIRTHDAY_TODAY", date_of_birth=dt.date(1950, 11, 1))
    add_patients(con, "BIRTHDAY_TOMORROW", date_of_birth=dt.date(1950, 11, 2))
    add_patients(con, "BORN_TODAY", date_of_birth=ED)
    add_patients(con, "LEAP", date_of_birth=dt.date(2000, 2, 29))
    rows = table(con)
    assert rows["BIRTHDAY_TODAY"]["age"] == 76
    assert rows["BIRTHDAY_TOMORROW"]["age"] == 75
    assert rows["BORN_TODAY"]["age"] == 0
    assert rows["LEAP"]["age"] == 26


def test_leap_day_birthday_is_reached_on_1_march() -> None:
    con = measures_connection()
    add_patients(con, "LEAP", date_of_birth=dt.date(2000, 2, 29))
    for extract, age in (
        (dt.date(2027, 2, 28), 26),
        (dt.date(2027, 3, 1), 27),
        (dt.date(2028, 2, 29), 28),
    ):
        build_measures(con, extract, load_reference=False)
        assert con.execute("SELECT age FROM marts.patient_measures").fetchone() == (age,)


def test_imd_decile_and_quintile(con) -> None:
    add_patients(con, "D10", lsoa11_code="E01000002")  # IMD 2019 decile 10
    add_patients(con, "D4", lsoa11_code="E01000029")  # decile 4
    add_patients(con, "NO_LSOA", lsoa11_code=None)
    add_patients(con, "UNKNOWN", lsoa11_code="E01999999")
    rows = table(con)
    assert (rows["D10"]["imd2019_decile"], rows["D10"]["imd2019_quintile"]) == (10, 5)
    assert (rows["D4"]["imd2019_decile"], rows["D4"]["imd2019_quintile"]) == (4, 2)
    assert rows["NO_LSOA"]["imd2019_decile"] is None
    assert rows["UNKNOWN"]["imd2019_quintile"] is None


def test_quintile_is_ceil_of_half_decile(con) -> None:
    lsoas = con.execute(
        "SELECT imd_decile, min(lsoa11cd) FROM read_csv(?, all_varchar = true) GROUP BY imd_decile",
        [str(IMD_PATH)],
    ).fetchall()
    for decile, lsoa in lsoas:
        add_patients(con, f"D{decile}", lsoa11_code=lsoa)
    rows = table(con)
    got = sorted((r["imd2019_decile"], r["imd2019_quintile"]) for r in rows.values())
    assert got == [(d, (d + 1) // 2) for d in range(1, 11)]


def test_columns_and_types(con) -> None:
    add_patients(con, "A")
    build_measures(con, ED, load_reference=False)
    described = con.execute("DESCRIBE marts.patient_measures").fetchall()
    names = [r[0] for r in described]
    assert names == patient_measures_columns("nhs_number")
    types = {r[0]: r[1] for r in described}
    assert types["age"] == "INTEGER"
    assert types["efi_score"] == "DOUBLE"
    assert types["hfrs_score"] == "DECIMAL(5,1)"
    assert types["has_hypertension"] == "BOOLEAN"
    assert types["hypertension_first_date"] == "DATE"
    for c in ("ltc_count", "emergency_admissions_12m", "bed_days_12m", "efi_deficit_count"):
        assert types[c] == "INTEGER", c


def test_one_patient_through_every_measure(con) -> None:
    add_patients(con, "A", lsoa11_code="E01000002", sex="M")
    add_patients(con, "B")
    add_events(
        con,
        "A",
        (code_for_condition(con, "hypertension"), dt.date(2011, 1, 1)),
        (code_for_condition(con, "dementia"), dt.date(2022, 1, 1)),
    )
    add_issues(
        con,
        "A",
        *[
            (s + "AAAAAA", ED - dt.timedelta(days=10))
            for s in ("0212000B0", "0205051R0", "0601022B0", "0103050P0", "0407010H0")
        ],
    )
    insert_rows(
        con,
        "sus_apc",
        [
            {
                "nhs_number": "A",
                "spell_id": "S1",
                "provider_code": "RWE",
                "admission_date": ED - dt.timedelta(days=100),
                "discharge_date": ED - dt.timedelta(days=90),
                "admission_method": "21",
                "primary_diagnosis": "F00",
                "secondary_diagnoses": "W19",
            }
        ],
    )
    insert_rows(
        con,
        "gp_appointments",
        [
            {
                "nhs_number": "A",
                "appointment_date": ED - dt.timedelta(days=7),
                "status": "attended",
                "staff_role": "gp",
                "mode": "telephone",
                "practice_code": "C82044",
            }
        ],
    )
    rows = table(con)
    a, b = rows["A"], rows["B"]
    assert (a["sex"], a["imd2019_decile"]) == ("M", 10)
    assert (a["ltc_count"], a["mental_ltc_count"], a["physical_ltc_count"]) == (2, 1, 1)
    assert a["has_dementia"] and a["has_hypertension"] and not a["has_diabetes"]
    assert a["has_efi_polypharmacy"] is True
    assert a["efi_deficit_count"] >= 1  # polypharmacy plus any eFI deficits those codes carry
    assert (a["hfrs_score"], a["hfrs_category"], a["hfrs_spells_2y"]) == (
        Decimal("10.3"),
        "intermediate",
        1,
    )
    assert (a["emergency_admissions_12m"], a["bed_days_12m"]) == (1, 10)
    assert (a["gp_appointments_attended_12m"], a["days_since_last_gp_attendance"]) == (1, 7)
    # B has no records at all: zero counts, fit, no HFRS
    assert (b["ltc_count"], b["efi_deficit_count"], b["efi_category"]) == (0, 0, "fit")
    assert (b["hfrs_score"], b["hfrs_category"], b["hfrs_spells_2y"]) == (None, None, 0)
    assert b["gp_appointments_attended_12m"] == 0 and b["days_since_last_gp_attendance"] is None


def test_report_and_reference_check(con) -> None:
    add_patients(con, "A")
    report = build_measures(con, ED, load_reference=False)
    assert report.row_counts["marts.patient_measures"] == 1
    assert set(report.seconds) >= {"reference", "marts.ltc_registers", "marts.patient_measures"}
    check_reference_tables(con)


def test_missing_reference_list_is_a_clear_error() -> None:
    bare = duckdb.connect()
    bare.execute("CREATE SCHEMA reference")
    bare.execute("CREATE TABLE reference.codelists (codelist_id VARCHAR, code VARCHAR)")
    bare.execute("INSERT INTO reference.codelists VALUES ('pcd_hyp_cod', '38341003')")
    with pytest.raises(LookupError, match="pcd_dm_cod"):
        check_reference_tables(bare)


def test_missing_staging_table_is_a_clear_error() -> None:
    bare = measures_connection()
    bare.execute("DROP TABLE staging.sus_op")
    with pytest.raises(LookupError, match=r"staging\.sus_op"):
        build_measures(bare, ED, load_reference=False)


def test_extract_date_must_be_a_date(con) -> None:
    with pytest.raises(TypeError):
        build_measures(con, dt.datetime(2026, 11, 1), load_reference=False)


@pytest.mark.parametrize("name", measure_tables())
def test_every_table_has_definition_text(name: str) -> None:
    text = describe(name)
    assert len(text) > 200
    assert "docs/measures.md" in text


def test_definition_text_lists_conditions_and_deficits() -> None:
    text = describe("marts.patient_measures")
    assert "`hypertension` Hypertension (physical)" in text
    assert "pcd_hypres_cod" in text
    assert "`polypharmacy`" in text
    assert "730 days" in describe("marts.hfrs")
    assert "365 days" in describe("marts.utilisation")


def test_ltc_names_lists_the_registers_in_definition_order(con) -> None:
    conditions = {c.id: c for c in load_ltc_conditions()}
    order = [c.id for c in load_ltc_conditions()]
    add_patients(con, "TWO", "NONE")
    add_events(
        con,
        "TWO",
        (code_for_condition(con, "hypertension"), dt.date(2011, 1, 1)),
        (code_for_condition(con, "dementia"), dt.date(2022, 1, 1)),
    )
    rows = table(con)
    want = sorted(["hypertension", "dementia"], key=order.index)
    assert rows["TWO"]["ltc_names"] == ", ".join(conditions[i].name for i in want)
    assert rows["NONE"]["ltc_names"] == ""


def test_build_patient_measures_leaves_marts_keyed_by_person_id(con) -> None:
    # no Dagster: the domain function alone pseudonymises every measures table
    add_patients(con, "9990000018", "9990000026")
    add_events(con, "9990000018", (code_for_condition(con, "hypertension"), dt.date(2015, 1, 1)))
    report = build_patient_measures(con, ED, key=KEY, load_reference=False)
    assert identifier_columns(con) == []
    with_nhs = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = 'marts' AND column_name = 'nhs_number'"
        ).fetchall()
    }
    assert with_nhs == {"person_identity"}
    for name in MEASURES_TABLES:
        cols = [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]
        assert cols[0] == "person_id", name
    described = [r[0] for r in con.execute("DESCRIBE marts.patient_measures").fetchall()]
    assert described == patient_measures_columns()
    rows = dict(con.execute("SELECT person_id, ltc_names FROM marts.patient_measures").fetchall())
    hyp = next(c.name for c in load_ltc_conditions() if c.id == "hypertension")
    assert rows == {person_id("9990000018", KEY): hyp, person_id("9990000026", KEY): ""}
    assert report.row_counts["marts.patient_measures"] == 2
    assert report.row_counts["marts.person_identity"] == 2
    assert "pseudonymise" in report.seconds


def test_build_patient_measures_needs_a_key(con) -> None:
    with pytest.raises(TypeError, match="key"):
        build_patient_measures(con, ED, load_reference=False)
