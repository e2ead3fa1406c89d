"""Utilisation in the last 12 months: window edges and counting rules."""

from __future__ import annotations

import datetime as dt

from measures_fixtures import insert_rows

from phm.measures import build_utilisation

ED = dt.date(2026, 11, 1)
IN_365 = ED - dt.timedelta(days=364)  # the 365th (first) day of the 12-month window
OUT_366 = ED - dt.timedelta(days=365)  # the 366th day back: outside


def rows(con) -> dict[str, dict]:
    build_utilisation(con, ED)
    cur = con.execute("SELECT * FROM marts.utilisation")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def appt(nhs: str, when: dt.date, status: str, role: str = "gp") -> dict:
    return {
        "nhs_number": nhs,
        "appointment_date": when,
        "status": status,
        "staff_role": role,
        "mode": "face_to_face",
        "practice_code": "C82044",
    }


_n = iter(range(10**9))


def ae(nhs: str, when: dt.datetime, dept: str = "01") -> dict:
    return {
        "nhs_number": nhs,
        "attendance_id": f"A{next(_n)}",
        "provider_code": "RWE",
        "arrival_datetime": when,
        "department_type": dept,
        "chief_complaint_snomed": None,
        "admitted": False,
    }


def apc(nhs: str, admitted: dt.date, discharged: dt.date | None, method: str) -> dict:
    return {
        "nhs_number": nhs,
        "spell_id": f"S{next(_n)}",
        "provider_code": "RWE",
        "admission_date": admitted,
        "discharge_date": discharged,
        "admission_method": method,
        "primary_diagnosis": "J18",
        "secondary_diagnoses": None,
    }


def op(nhs: str, when: dt.date, status: str) -> dict:
    return {
        "nhs_number": nhs,
        "appointment_id": f"O{next(_n)}",
        "appointment_date": when,
        "attendance_status": status,
        "treatment_function_code": "300",
    }


def test_gp_appointments_window_edges_and_status(con) -> None:
    insert_rows(
        con,
        "gp_appointments",
        [
            appt("A", IN_365, "attended"),
            appt("A", OUT_366, "attended"),
            appt("A", ED, "attended", role="nurse"),  # any practice staff role
            appt("A", ED - dt.timedelta(days=20), "did_not_attend"),
            appt("A", IN_365, "did_not_attend"),
            appt("A", OUT_366, "did_not_attend"),
            appt("A", ED - dt.timedelta(days=5), "cancelled_by_patient"),
            appt("A", ED + dt.timedelta(days=7), "booked"),
        ],
    )
    a = rows(con)["A"]
    assert a["gp_appointments_attended_12m"] == 2
    assert a["gp_appointments_dna_12m"] == 2
    assert a["days_since_last_gp_attendance"] == 0


def test_days_since_last_attended_gp_appointment(con) -> None:
    insert_rows(
        con,
        "gp_appointments",
        [
            appt("A", ED - dt.timedelta(days=400), "attended"),  # outside the window still counts
            appt("A", ED - dt.timedelta(days=3), "did_not_attend"),
            appt("B", ED - dt.timedelta(days=3), "did_not_attend"),
            appt("C", ED + dt.timedelta(days=2), "attended"),  # after the extract date: ignored
            appt("C", ED - dt.timedelta(days=45), "attended"),
        ],
    )
    r = rows(con)
    assert r["A"]["days_since_last_gp_attendance"] == 400
    assert r["A"]["gp_appointments_attended_12m"] == 0
    assert r["B"]["days_since_last_gp_attendance"] is None
    assert r["C"]["days_since_last_gp_attendance"] == 45
    assert r["C"]["gp_appointments_attended_12m"] == 1


def test_ae_attendances_by_arrival_date(con) -> None:
    insert_rows(
        con,
        "sus_ecds",
        [
            ae("A", dt.datetime.combine(IN_365, dt.time(0, 0))),  # first minute of the window
            ae("A", dt.datetime.combine(OUT_366, dt.time(23, 59, 59))),  # last second before it
            ae(
                "A", dt.datetime.combine(ED, dt.time(23, 59)), dept="03"
            ),  # late on the extract date
            ae("A", dt.datetime.combine(ED + dt.timedelta(days=1), dt.time(0, 1))),
        ],
    )
    a = rows(con)["A"]
    assert a["ae_attendances_12m"] == 2
    assert a["ae_type1_attendances_12m"] == 1


def test_admissions_by_method_and_bed_days(con) -> None:
    insert_rows(
        con,
        "sus_apc",
        [
            apc("A", IN_365, IN_365 + dt.timedelta(days=4), "21"),  # emergency, 4 bed days
            apc("A", ED - dt.timedelta(days=30), ED - dt.timedelta(days=30), "28"),  # day case: 0
            apc("A", ED - dt.timedelta(days=60), ED - dt.timedelta(days=58), "11"),  # elective, 2
            apc("A", ED - dt.timedelta(days=90), ED - dt.timedelta(days=89), "13"),  # elective, 1
            apc("A", ED - dt.timedelta(days=100), ED - dt.timedelta(days=97), "31"),  # maternity, 3
            apc("A", OUT_366, OUT_366 + dt.timedelta(days=10), "22"),  # admitted before window
            apc("A", ED - dt.timedelta(days=2), None, "24"),  # still in hospital: 2 days so far
            apc(
                "B", ED - dt.timedelta(days=5), ED + dt.timedelta(days=5), "12"
            ),  # capped at extract
        ],
    )
    r = rows(con)
    assert r["A"]["emergency_admissions_12m"] == 3
    assert r["A"]["elective_admissions_12m"] == 2
    assert r["A"]["bed_days_12m"] == 4 + 0 + 2 + 1 + 3 + 2
    assert r["B"]["elective_admissions_12m"] == 1
    assert r["B"]["bed_days_12m"] == 5


def test_outpatient_attendances_and_dnas(con) -> None:
    insert_rows(
        con,
        "sus_op",
        [
            op("A", IN_365, "5"),
            op("A", ED, "6"),
            op("A", OUT_366, "5"),
            op("A", ED - dt.timedelta(days=3), "7"),  # late, not seen: neither
            op("A", ED - dt.timedelta(days=3), "2"),
            op("A", ED - dt.timedelta(days=3), "4"),
            op("A", IN_365, "3"),
            op("A", OUT_366, "3"),
        ],
    )
    a = rows(con)["A"]
    assert (a["op_attendances_12m"], a["op_dna_12m"]) == (2, 1)


def test_patient_with_only_old_activity_has_zero_counts(con) -> None:
    insert_rows(con, "sus_op", [op("A", OUT_366, "5")])
    a = rows(con)["A"]
    assert a["op_attendances_12m"] == 0
    assert a["ae_attendances_12m"] == 0
    assert a["days_since_last_gp_attendance"] is None
