"""Known answers for the hospital and frailty rules: emergency admissions (one definition,
2A-2D, transfers), recent discharges (deaths, transfers, destinations), high intensity users
and frequent attenders, and the three arms of frailty. Small hand-made warehouses."""

import datetime as dt

from measures_fixtures import insert_rows
from test_cohorts import ED, World, days_ago, members

from phm.cohorts import build_cohorts
from phm.measures import build_hfrs, build_utilisation

MILD, MOD, SEVERE = "925791000000100", "925831000000107", "925861000000102"


# ------------------------------------------------------------------ emergency admissions


def _spell(nhs, sid, adm, dis, method, dest=None, dm=None, primary="W19"):
    return {
        "nhs_number": nhs,
        "spell_id": sid,
        "provider_code": "RWE",
        "admission_date": adm,
        "discharge_date": dis,
        "admission_method": method,
        "discharge_method": dm,
        "discharge_destination": dest,
        "primary_diagnosis": primary,
    }


def test_2a_2b_and_transfers_in_utilisation_and_hfrs(con) -> None:
    d = days_ago
    insert_rows(
        con,
        "sus_apc",
        [
            _spell("A2A", "s1", d(40), d(35), "2A", "19", "1"),
            # a 2B whose sending spell is not in the data began the episode: counted
            _spell("B2B", "s2", d(40), d(35), "2B", "19", "1"),
            # 21 -> transfer out (51) -> 2B the next day: one emergency admission
            _spell("TRF", "s3", d(50), d(45), "21", "51", "1"),
            _spell("TRF", "s4", d(44), d(30), "2B", "19", "1"),
            # v1 (no destination): a discharge then a 2B the same day is a transfer too
            _spell("V1", "s5", d(50), d(45), "22"),
            _spell("V1", "s6", d(45), d(40), "2B"),
            # a 2B a week after a discharge home is a new emergency admission
            _spell("NEW", "s7", d(60), d(55), "21", "19", "1"),
            _spell("NEW", "s8", d(48), d(40), "2B", "19", "1"),
            _spell("MAT", "s9", d(20), d(18), "31", "19", "1"),
            _spell("UNK", "s10", d(20), d(18), "99", "19", "1"),
        ],
    )
    build_utilisation(con, ED)
    em = dict(
        con.execute("SELECT nhs_number, emergency_admissions_12m FROM marts.utilisation").fetchall()
    )
    assert em == {"A2A": 1, "B2B": 1, "TRF": 1, "V1": 1, "NEW": 2, "MAT": 0, "UNK": 0}
    build_hfrs(con, ED)
    hf = dict(
        con.execute("SELECT nhs_number, hfrs_emergency_admissions_2y FROM marts.hfrs").fetchall()
    )
    assert hf == em
    # the transfer's diagnoses still feed the score (every spell is an HFRS input)
    assert con.execute(
        "SELECT hfrs_spells_2y, hfrs_codes FROM marts.hfrs WHERE nhs_number = 'TRF'"
    ).fetchone() == (2, "W19")
    out = dict(
        con.execute(
            "SELECT spell_id, transferred_out FROM staging.apc_spells "
            "WHERE spell_id IN ('s3', 's5', 's7')"
        ).fetchall()
    )
    assert out == {"s3": True, "s5": True, "s7": False}


# ------------------------------------------------------------------ recent discharges


def test_died_in_hospital_never_on_recent_discharges():
    w = World()
    # died in hospital 5 days ago; the GP record does not show it yet (still in the population)
    w.patient("died_m4", age=85)
    w.apc.append(("died_m4", "21", days_ago(5), days_ago(9), "4", "79"))
    w.patient("died_d79_only", age=85)
    w.apc.append(("died_d79_only", "21", days_ago(5), days_ago(9), None, "79"))
    # discharged home, then readmitted and died: the earlier discharge does not count
    w.patient("home_then_died", age=85)
    w.apc.append(("home_then_died", "21", days_ago(10), days_ago(13), "1", "19"))
    w.apc.append(("home_then_died", "21", days_ago(2), days_ago(6), "4", "79"))
    # discharged, then readmitted and still in hospital
    w.patient("back_in", age=85)
    w.apc.append(("back_in", "21", days_ago(10), days_ago(13), "1", "19"))
    w.apc.append(("back_in", "21", None, days_ago(2), "8", "98"))
    w.patient("home", age=85)
    w.apc.append(("home", "21", days_ago(5), days_ago(9), "1", "19"))
    con = w.build()
    build_cohorts(con, ED)
    got = members(con, "recent_discharges")
    assert set(got) == {"home"}
    assert got["home"] == (
        f"discharged from an emergency admission on {days_ago(5)} (5 days ago) to home; "
        "no death in hospital recorded; not in hospital now; age 85"
    )


def test_transfer_then_discharge_home_is_one_entry_the_later_discharge():
    w = World()
    w.patient("trf", age=80)
    w.apc.append(("trf", "21", days_ago(8), days_ago(12), "1", "51"))
    w.apc.append(("trf", "2B", days_ago(3), days_ago(8), "1", "19"))
    # transferred out 4 days ago and not yet discharged from the receiving hospital
    w.patient("trf_open", age=80)
    w.apc.append(("trf_open", "21", days_ago(4), days_ago(9), "1", "51"))
    w.apc.append(("trf_open", "2B", None, days_ago(3), "8", "98"))
    w.patient("temp", age=80)
    w.apc.append(("temp", "24", days_ago(1), days_ago(4), "1", "29"))
    w.patient("care", age=80)
    w.apc.append(("care", "2D", days_ago(1), days_ago(4), "1", "55"))
    w.patient("v1", age=80)
    w.apc.append(("v1", "21", days_ago(1), days_ago(4)))
    con = w.build()
    build_cohorts(con, ED)
    got = members(con, "recent_discharges")
    assert set(got) == {"trf", "temp", "care", "v1"}
    assert got["trf"].startswith(
        f"discharged from an emergency admission on {days_ago(3)} (3 days ago) to home;"
    )
    assert f"on {days_ago(1)} (1 days ago) to a temporary residence;" in got["temp"]
    assert "to a care home;" in got["care"]
    assert "to (destination not supplied);" in got["v1"]
    n = con.execute(
        "SELECT count(*) FROM marts.cohort_members WHERE cohort_id = 'recent_discharges' "
        "AND person_id = 'trf'"
    ).fetchone()[0]
    assert n == 1


# ------------------------------------------------------------------ A&E


def _ed(w, pid, when: dt.date, dept: str, n: int = 1):
    for k in range(n):
        w.ecds.append((pid, dt.datetime.combine(when, dt.time(8 + k % 12, 0)), dept))


def test_high_intensity_users_and_frequent_attenders():
    w = World()
    month = dt.date(2026, 6, 1)
    w.patient("teen25", age=16, ae_attendances_12m=25, ae_type1_attendances_12m=25)
    for k in range(25):
        _ed(w, "teen25", month + dt.timedelta(days=k), "01")
    w.patient("six_in_june", age=40, ae_attendances_12m=6, ae_type1_attendances_12m=6)
    for k in range(6):
        _ed(w, "six_in_june", month + dt.timedelta(days=4 * k), "01")
    # six attendances across a month boundary: at most 5 in any calendar month
    w.patient("six_split", age=40, ae_attendances_12m=6, ae_type1_attendances_12m=6)
    for k in range(6):
        _ed(w, "six_split", dt.date(2026, 6, 27) + dt.timedelta(days=k), "01")
    w.patient("six_type03", age=40, ae_attendances_12m=6)
    _ed(w, "six_type03", month + dt.timedelta(days=3), "03", 6)
    w.patient("six_type02", age=40, ae_attendances_12m=6)
    _ed(w, "six_type02", month + dt.timedelta(days=3), "02", 6)
    w.patient("twenty_one", age=60, ae_attendances_12m=21, ae_type1_attendances_12m=21)
    w.patient("twenty", age=60, ae_attendances_12m=20, ae_type1_attendances_12m=20)
    for k in range(21):
        _ed(w, "twenty_one", days_ago(17 * k), "01")
        if k:
            _ed(w, "twenty", days_ago(17 * k), "01")
    # six in a calendar month more than 12 months ago: outside the window
    w.patient("old_month", age=40)
    _ed(w, "old_month", dt.date(2025, 9, 3), "01", 6)
    con = w.build()
    build_cohorts(con, ED)
    hiu = members(con, "high_intensity_users")
    assert set(hiu) == {"six_in_june", "six_type02", "twenty_one"}
    assert hiu["six_in_june"] == (
        "age 40; 6 type 01/02 ED attendances in one calendar month (2026-06)"
    )
    assert hiu["twenty_one"] == "age 60; 21 type 01/02 ED attendances in the last 12 months"
    fa = members(con, "frequent_attenders")
    assert set(fa) == {
        "six_in_june",
        "six_split",
        "six_type03",
        "six_type02",
        "twenty_one",
        "twenty",
    }
    assert "teen25" not in fa
    assert fa["six_type03"] == "age 40; 6 A&E attendances (any type) in the last 12 months"


# ------------------------------------------------------------------ frailty


def test_frailty_arms():
    w = World()
    w.patient("hfrs70_fit", age=70, hfrs_score=10.0, hfrs_category="intermediate")
    w.patient("severe_code80_fit", age=80)
    w.events.append(("severe_code80_fit", days_ago(100), SEVERE))
    w.patient("mild_after_severe", age=80)
    w.events.append(("mild_after_severe", days_ago(400), SEVERE))
    w.events.append(("mild_after_severe", days_ago(30), MILD))
    w.patient("moderate_after_mild", age=66)
    w.events.append(("moderate_after_mild", days_ago(400), MILD))
    w.events.append(("moderate_after_mild", days_ago(30), MOD))
    w.patient("same_day_mild_severe", age=70)
    w.events.append(("same_day_mild_severe", days_ago(30), MILD))
    w.events.append(("same_day_mild_severe", days_ago(30), SEVERE))
    w.patient("severe_code_age64", age=64)
    w.events.append(("severe_code_age64", days_ago(30), SEVERE))
    # mild by code but moderate by eFI: in, by the eFI arm only
    w.patient("mild_code_efi_mod", age=70, efi_category="moderate", efi_deficit_count=10)
    w.events.append(("mild_code_efi_mod", days_ago(30), MILD))
    con = w.build()
    build_cohorts(con, ED)
    got = members(con, "frailty")
    assert set(got) == {
        "severe_code80_fit",
        "moderate_after_mild",
        "same_day_mild_severe",
        "mild_code_efi_mod",
    }
    assert got["severe_code80_fit"] == (
        f"age 80; frailty by clinician code: severe frailty coded on {days_ago(100)}"
    )
    assert got["same_day_mild_severe"].endswith("severe frailty coded on " + str(days_ago(30)))
    assert got["mild_code_efi_mod"] == "age 70; frailty by eFI: moderate (10 of 36 deficits)"
    # recent discharges' frailty arm follows
    for pid in ("severe_code80_fit", "hfrs70_fit", "moderate_after_mild"):
        w.apc.append((pid, "21", days_ago(2)))
    con = w.build()
    build_cohorts(con, ED)
    rd = members(con, "recent_discharges")
    assert set(rd) == {"severe_code80_fit", "moderate_after_mild"}
    assert rd["moderate_after_mild"].endswith(
        f"frailty by clinician code: moderate frailty coded on {days_ago(30)}"
    )


def test_a_death_in_hospital_removes_the_person_from_every_list():
    """The GP record can lag behind a death in hospital: the person is still in
    patient_measures, but no cohort may list them (frailty, dementia, high risk, ...)."""
    w = World()
    w.patient("died_frail", age=80, efi_category="severe", efi_deficit_count=14)
    w.apc.append(("died_frail", "21", days_ago(40), days_ago(45), "4", "79"))
    w.patient("alive_frail", age=80, efi_category="severe", efi_deficit_count=14)
    w.apc.append(("alive_frail", "21", days_ago(40), days_ago(45), "1", "19"))
    con = w.build()
    build_cohorts(con, ED)
    listed = {
        r[0] for r in con.execute("SELECT DISTINCT person_id FROM marts.cohort_members").fetchall()
    }
    assert "alive_frail" in listed
    assert "died_frail" not in listed
    assert set(members(con, "frailty")) == {"alive_frail"}
