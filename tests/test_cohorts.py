"""Cohorts: each built-in rule on both sides of every boundary, reasons, malformed files."""

import datetime as dt

import duckdb
import pytest

from phm.cohorts import CohortDefinitionError, build_cohorts, load_cohorts
from phm.hospital import create_spells_view

ED = dt.date(2026, 11, 1)


def days_ago(n: int) -> dt.date:
    """The date n days before the extract date (day 1 of a window is the extract date)."""
    return ED - dt.timedelta(days=n)


BASE = {
    "age": 50,
    "sex": "F",
    "practice_code": "C82001",
    "pcn_code": "U00001",
    "lsoa11_code": "E01013600",
    "imd2019_decile": 1,
    "imd2019_quintile": 1,
    "lsoa21_code": None,
    "imd_vintage": "IMD2019 on LSOA 2011",
    "deprivation_known": True,
    "ltc_count": 0,
    "mental_ltc_count": 0,
    "physical_ltc_count": 0,
    "mental_health_condition_count": 0,
    "has_mental_health_condition": False,
    "mental_health_condition_names": "",
    "ltc_names": "",
    "has_dementia": False,
    "dementia_first_date": None,
    "has_learning_disability": False,
    "learning_disability_first_date": None,
    "efi_deficit_count": 0,
    "efi_score": 0.0,
    "efi_category": "fit",
    "hfrs_score": None,
    "hfrs_category": None,
    "ae_attendances_12m": 0,
    "ae_type1_attendances_12m": 0,
    "emergency_admissions_12m": 0,
    "gp_appointments_dna_12m": 0,
    "days_since_last_gp_attendance": None,
}
TYPES = {
    "age": "INTEGER",
    "imd2019_decile": "INTEGER",
    "imd2019_quintile": "INTEGER",
    "ltc_count": "INTEGER",
    "mental_ltc_count": "INTEGER",
    "physical_ltc_count": "INTEGER",
    "deprivation_known": "BOOLEAN",
    "mental_health_condition_count": "INTEGER",
    "has_mental_health_condition": "BOOLEAN",
    "has_dementia": "BOOLEAN",
    "dementia_first_date": "DATE",
    "has_learning_disability": "BOOLEAN",
    "learning_disability_first_date": "DATE",
    "efi_deficit_count": "INTEGER",
    "efi_score": "DOUBLE",
    "hfrs_score": "DOUBLE",
    "ae_attendances_12m": "INTEGER",
    "ae_type1_attendances_12m": "INTEGER",
    "emergency_admissions_12m": "INTEGER",
    "gp_appointments_dna_12m": "INTEGER",
    "days_since_last_gp_attendance": "INTEGER",
}


class World:
    """A tiny warehouse: patients (by person id = NHS number here) and their events."""

    def __init__(self):
        self.patients: list[dict] = []
        self.ppn: list[tuple] = []
        self.appointments: list[tuple] = []
        self.events: list[tuple] = []
        self.apc: list[tuple] = []
        self.ecds: list[tuple] = []
        self.risk: list[tuple] = []

    def patient(self, pid: str, **kw) -> str:
        self.patients.append({"person_id": pid, **BASE, **kw})
        return pid

    def build(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()

        def insert(sql, rows):
            if rows:
                con.executemany(sql, rows)

        for s in ("marts", "staging", "reference"):
            con.execute(f"CREATE SCHEMA {s}")
        cols = ["person_id", *BASE]
        con.execute(
            "CREATE TABLE marts.patient_measures ("
            + ", ".join(f"{c} {TYPES.get(c, 'VARCHAR')}" for c in cols)
            + ")"
        )
        con.executemany(
            f"INSERT INTO marts.patient_measures VALUES ({', '.join('?' * len(cols))})",
            [[p[c] for c in cols] for p in self.patients],
        )
        con.execute("CREATE TABLE marts.person_identity (person_id VARCHAR, nhs_number VARCHAR)")
        con.executemany(
            "INSERT INTO marts.person_identity VALUES (?, ?)",
            [(p["person_id"], p["person_id"]) for p in self.patients],
        )
        con.execute("CREATE TABLE staging.ppn (nhs_number VARCHAR, shared_date DATE)")
        insert("INSERT INTO staging.ppn VALUES (?, ?)", self.ppn)
        con.execute(
            "CREATE TABLE staging.gp_appointments (nhs_number VARCHAR, appointment_date DATE, status VARCHAR)"
        )
        insert("INSERT INTO staging.gp_appointments VALUES (?, ?, ?)", self.appointments)
        con.execute(
            "CREATE TABLE staging.gp_events (nhs_number VARCHAR, event_date DATE, snomed_code VARCHAR)"
        )
        insert("INSERT INTO staging.gp_events VALUES (?, ?, ?)", self.events)
        con.execute(
            "CREATE TABLE staging.sus_apc (nhs_number VARCHAR, spell_id VARCHAR, "
            "admission_date DATE, discharge_date DATE, admission_method VARCHAR, "
            "discharge_method VARCHAR, discharge_destination VARCHAR)"
        )
        # (nhs, method, discharge date[, admission date, discharge method, destination])
        rows = []
        for i, r in enumerate(self.apc):
            nhs, method, dis, *rest = r
            adm, dm, dest = [*rest, None, None, None][:3]
            adm = adm or (dis - dt.timedelta(days=3) if dis else days_ago(3))
            rows.append((nhs, f"S{i}", adm, dis, method, dm, dest))
        insert("INSERT INTO staging.sus_apc VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        create_spells_view(con)
        con.execute(
            "CREATE TABLE staging.sus_ecds (nhs_number VARCHAR, arrival_datetime TIMESTAMP, "
            "department_type VARCHAR)"
        )
        insert("INSERT INTO staging.sus_ecds VALUES (?, ?, ?)", self.ecds)
        con.execute(
            "CREATE TABLE marts.risk_scores (person_id VARCHAR, risk_score DOUBLE, "
            "risk_tier VARCHAR, risk_factors VARCHAR)"
        )
        insert("INSERT INTO marts.risk_scores VALUES (?, ?, ?, ?)", self.risk)
        con.execute(
            "CREATE TABLE reference.codelists AS SELECT * FROM (VALUES "
            "('gm_did_not_attend', '1111'), ('pcd_dminvite_cod', '2222'), "
            "('ocl_opensafely_symptoms_anxiety', '3333'), ('gm_carer', '4444'), "
            "('pcd_mildfrail_cod', '925791000000100'), ('pcd_modfrail_cod', '925831000000107'), "
            "('pcd_sevfrail_cod', '925861000000102')) t(codelist_id, code)"
        )
        return con


def members(con, cohort: str) -> dict[str, str]:
    return dict(
        con.execute(
            "SELECT person_id, reasons FROM marts.cohort_members WHERE cohort_id = ? ORDER BY rank",
            [cohort],
        ).fetchall()
    )


def test_multimorbidity_core20_boundaries():
    w = World()
    mm = {
        "ltc_count": 5,
        "mental_ltc_count": 1,
        "physical_ltc_count": 4,
        "mental_health_condition_count": 1,
        "has_mental_health_condition": True,
        "mental_health_condition_names": "Depression",
        "ltc_names": "asthma, depression, diabetes, hypertension, CKD",
    }
    w.patient("in_age18", age=18, **mm)
    w.patient("out_age17", age=17, **mm)
    w.patient("in_age64", age=64, **mm)
    w.patient("out_age65", age=65, **mm)
    w.patient("out_4ltc", ltc_count=4, mental_ltc_count=1, physical_ltc_count=3)
    w.patient("out_mental_only", **{**mm, "mental_ltc_count": 5, "physical_ltc_count": 0})
    w.patient("out_physical_only", ltc_count=5, mental_ltc_count=0, physical_ltc_count=5)
    w.patient("out_quintile2", imd2019_decile=3, imd2019_quintile=2, **mm)
    w.patient("in_decile2", age=52, imd2019_decile=2, imd2019_quintile=1, **mm)
    con = w.build()
    build_cohorts(con, ED)
    got = members(con, "multimorbidity_core20")
    assert set(got) == {"in_age18", "in_age64", "in_decile2"}
    assert got["in_decile2"] == (
        "age 52; 5 long-term conditions: asthma, depression, diabetes, hypertension, CKD; "
        "mental health condition(s): Depression; IMD decile 2 (IMD2019 on LSOA 2011): Core20"
    )


def test_frailty_boundaries_and_reasons():
    w = World()
    w.patient("in_efi_mod", age=65, efi_category="moderate", efi_deficit_count=9, efi_score=0.25)
    w.patient("out_age64", age=64, efi_category="severe", efi_deficit_count=14, efi_score=14 / 36)
    w.patient("out_mild", age=80, efi_category="mild", efi_deficit_count=8, efi_score=8 / 36)
    w.patient("in_hfrs", age=90, hfrs_score=10.3, hfrs_category="intermediate")
    w.patient("in_hfrs_age75", age=75, hfrs_score=5.0, hfrs_category="intermediate")
    w.patient("out_hfrs_age74", age=74, hfrs_score=16.0, hfrs_category="high")
    w.patient("out_hfrs_low", age=90, hfrs_score=4.9, hfrs_category="low")
    con = w.build()
    build_cohorts(con, ED)
    got = members(con, "frailty")
    assert list(got) == ["in_efi_mod", "in_hfrs", "in_hfrs_age75"]  # sorted by eFI score first
    assert got["in_efi_mod"] == "age 65; frailty by eFI: moderate (9 of 36 deficits)"
    assert got["in_hfrs"] == (
        "age 90; frailty by Hospital Frailty Risk Score (age 75+): 10.3 (intermediate)"
    )


def test_ppn_non_engagers_windows():
    w = World()
    mh = {
        "mental_ltc_count": 1,
        "mental_health_condition_count": 1,
        "has_mental_health_condition": True,
        "mental_health_condition_names": "Depression",
    }

    def person(pid, ppn_days=30, attended_days=None, dna_days=100, **kw):
        w.patient(pid, **{**mh, **kw})
        if ppn_days is not None:
            w.ppn.append((pid, days_ago(ppn_days)))
        if attended_days is not None:
            w.appointments.append((pid, days_ago(attended_days), "attended"))
        if dna_days is not None:
            w.appointments.append((pid, days_ago(dna_days), "did_not_attend"))

    person("in_base")
    person("in_ppn_day365", ppn_days=364)  # the 365th day of the 12-month window
    person("out_ppn_day366", ppn_days=365)
    person("out_attended_day182", attended_days=181)  # 182nd day of the 6-month window
    person("in_attended_day183", attended_days=182)
    person("out_age17", age=17)
    no_mh = {"mental_ltc_count": 0, "mental_health_condition_count": 0}
    person("out_no_mh", **no_mh, has_mental_health_condition=False)
    person("in_mh_symptoms_only", **no_mh, has_mental_health_condition=False)
    w.events.append(("in_mh_symptoms_only", days_ago(900), "3333"))
    person("out_no_dna", dna_days=None)
    person("in_invite_only", dna_days=None)
    w.events.append(("in_invite_only", days_ago(10), "2222"))
    person("out_dna_too_old", dna_days=182)
    person("out_future_ppn", ppn_days=-3)  # after the extract date: ignored
    con = w.build()
    build_cohorts(con, ED)
    got = members(con, "ppn_non_engagers")
    assert set(got) == {
        "in_base",
        "in_ppn_day365",
        "in_attended_day183",
        "in_mh_symptoms_only",
        "in_invite_only",
    }
    assert got["in_base"] == (
        f"age 50; 1 PPN(s) received in the last 12 months, latest {days_ago(30)}; "
        "mental health condition(s) on a register: Depression; "
        "no attended appointment at the practice in the last 6 months; "
        "1 missed appointment(s) in the last 6 months"
    )
    assert "mental health codes in the record" in got["in_mh_symptoms_only"]
    assert "1 unanswered invitation(s)" in got["in_invite_only"]


def test_high_intensity_users_and_recent_discharges():
    w = World()
    w.patient("fa5", ae_attendances_12m=5)
    w.patient("fa4", ae_attendances_12m=4)
    w.patient("fa5_age17", age=17, ae_attendances_12m=5)
    w.patient("old_recent", age=75)
    w.apc.append(("old_recent", "21", days_ago(13)))  # 14th day of the window
    w.patient("old_too_long", age=80)
    w.apc.append(("old_too_long", "22", days_ago(14)))
    w.patient("young_recent", age=74)
    w.apc.append(("young_recent", "21", days_ago(2)))
    w.patient("frail_recent", age=70, efi_category="severe", efi_deficit_count=13)
    w.apc.append(("frail_recent", "24", days_ago(2)))
    w.patient("old_elective", age=85)
    w.apc.append(("old_elective", "11", days_ago(2)))
    con = w.build()
    build_cohorts(con, ED)
    assert set(members(con, "frequent_attenders")) == {"fa5"}
    assert members(con, "high_intensity_users") == {}
    got = members(con, "recent_discharges")
    assert set(got) == {"old_recent", "frail_recent"}
    assert got["old_recent"].startswith(
        f"discharged from an emergency admission on {days_ago(13)} (13 days ago) to "
        "(destination not supplied)"
    )
    assert got["frail_recent"].endswith("frailty by eFI: severe")


def test_high_risk_is_the_top_two_tiers():
    w = World()
    for pid, p, tier in [
        ("a", 0.61, "very high"),
        ("b", 0.32, "high"),
        ("c", 0.2, "rising"),
        ("d", 0.01, "low"),
    ]:
        w.patient(pid)
        w.risk.append((pid, p, tier, "3 emergency admissions in the last 12 months"))
    con = w.build()
    build_cohorts(con, ED)
    got = members(con, "high_risk")
    assert list(got) == ["a", "b"]
    assert got["b"] == (
        "predicted 12-month emergency admission risk 0.32 (high tier): "
        "3 emergency admissions in the last 12 months"
    )


def test_registers():
    w = World()
    w.patient("dem", has_dementia=True, dementia_first_date=dt.date(2020, 1, 2))
    w.patient(
        "ld", has_learning_disability=True, learning_disability_first_date=dt.date(2001, 1, 1)
    )
    w.patient("carer")
    w.events.append(("carer", dt.date(2025, 5, 5), "4444"))
    w.patient("nobody")
    con = w.build()
    counts = build_cohorts(con, ED)
    assert counts["dementia"] == counts["learning_disability"] == counts["carers"] == 1
    assert members(con, "dementia") == {"dem": "on the dementia register since 2020-01-02"}
    assert members(con, "carers") == {"carer": "recorded as a carer on 2025-05-05"}


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("id: broken\ntitle: x\ndescription: x\nsource: x\n", "criteria", "is required"),
        (
            "id: broken\ntitle: x\ndescription: x\nsource: x\ncriteria:\n  all:\n    - measure: age\n      op: gte\n      value: 3\n",
            "criteria.all[0].op",
            "unknown operator 'gte'",
        ),
        (
            "id: broken\ntitle: x\ndescription: x\nsource: x\ncriteria:\n  all:\n    - event: nope\n",
            "criteria.all[0].event",
            "unknown event 'nope'",
        ),
        (
            "id: other\ntitle: x\ndescription: x\nsource: x\ncriteria: {all: []}\n",
            "id",
            "'other' must match the file name",
        ),
        ("id: broken\ntitle: x\n  bad: [yaml\n", "(file)", "is not valid YAML"),
    ],
)
def test_malformed_cohort_file_names_file_and_field(tmp_path, text, field, problem):
    (tmp_path / "broken.yaml").write_text(text)
    with pytest.raises(CohortDefinitionError) as e:
        load_cohorts(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'broken.yaml'}: {field}: {problem}")


def test_unknown_measure_is_reported_at_compile_time(tmp_path):
    (tmp_path / "typo.yaml").write_text(
        "id: typo\ntitle: x\ndescription: x\nsource: x\n"
        "criteria:\n  all:\n    - measure: ltc_cnt\n      op: '>='\n      value: 2\n"
    )
    w = World()
    w.patient("p")
    with pytest.raises(
        CohortDefinitionError,
        match=r"typo\.yaml: criteria\.all\[0\]\.measure: unknown column 'ltc_cnt'",
    ):
        build_cohorts(w.build(), ED, directory=tmp_path)


def test_every_builtin_cohort_file_loads():
    ids = {c.id for c in load_cohorts()}
    assert ids == {
        "multimorbidity_core20",
        "multimorbidity_deprivation_unknown",
        "frailty",
        "ppn_non_engagers",
        "high_intensity_users",
        "recent_discharges",
        "frequent_attenders",
        "dementia",
        "learning_disability",
        "carers",
        "high_risk",
    }


def test_high_risk_says_why_it_is_empty_when_the_model_was_skipped():
    w = World()
    w.patient("p1", age=80)
    con = w.build()
    con.execute("CREATE SCHEMA reports")
    con.execute(
        "CREATE TABLE reports.risk_model_status AS SELECT 'skipped' AS status, "
        "'cannot train: too few outcomes' AS reason"
    )
    build_cohorts(con, ED)
    notes = dict(
        con.execute("SELECT cohort_id, description FROM marts.cohort_definitions").fetchall()
    )
    assert "NOT AVAILABLE FOR THIS DELIVERY" in notes["high_risk"]
    assert "too few outcomes" in notes["high_risk"]
    assert "NOT AVAILABLE" not in notes["frailty"]  # cohorts not built on risk scores
    assert members(con, "high_risk") == {}
