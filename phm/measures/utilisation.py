"""Service use in the last 12 months.

"The last 12 months" is the 365 days ending on the extract date, inclusive
(``extract_date - 364 .. extract_date``), as the data contract defines it.

* GP practice appointments (``staging.gp_appointments``, every staff role) with
  ``appointment_date`` in the window: ``status = 'attended'`` and ``'did_not_attend'``;
* ``days_since_last_gp_attendance``: extract date minus the latest attended appointment on or
  before the extract date (no window; null if none);
* A&E attendances (``staging.sus_ecds``) by the date of ``arrival_datetime``: all department
  types, and type ``01`` (major emergency departments);
* admissions (``staging.sus_apc``, read through :data:`phm.hospital.SPELLS_VIEW`) by
  ``admission_date``: emergency = the view's ``emergency_admission`` (the project's one
  definition: admission method 21-25, 2A-2D or 28, except a ``2B`` transfer that continues a
  stay, which is the same episode as the spell that began it), elective = 11-13 (maternity
  31-32, other 81-83 and not known 99 are in neither);
* bed days: for spells admitted in the window, ``discharge_date - admission_date`` in days (a
  same-day spell is 0), counting to the extract date for a spell still open or discharged
  after it;
* outpatient appointments (``staging.sus_op``) in the window: attended = ``attendance_status``
  5 or 6, did not attend = 3.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from phm.contract import ELECTIVE_ADMISSION_METHODS
from phm.hospital import SPELLS_VIEW, create_spells_view
from phm.measures._sql import (
    DAYS_12_MONTHS,
    MARTS,
    date_literal,
    require_tables,
    row_count,
    window_start,
)

UTILISATION_TABLE = f"{MARTS}.utilisation"

#: the count columns, all integers >= 0
UTILISATION_COUNTS = (
    "gp_appointments_attended_12m",
    "gp_appointments_dna_12m",
    "ae_attendances_12m",
    "ae_type1_attendances_12m",
    "emergency_admissions_12m",
    "elective_admissions_12m",
    "bed_days_12m",
    "op_attendances_12m",
    "op_dna_12m",
)


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def build_utilisation(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> int:
    """Create ``marts.utilisation``; returns its row count.

    Columns: ``nhs_number``, the :data:`UTILISATION_COUNTS` and
    ``days_since_last_gp_attendance``. One row per patient with any appointment, attendance or
    spell in the inputs (counts may be 0 when all of them are outside the window).
    """
    require_tables(
        con, "staging.gp_appointments", "staging.sus_ecds", "staging.sus_apc", "staging.sus_op"
    )
    create_spells_view(con)
    ed = date_literal(extract_date)
    w0 = window_start(extract_date, DAYS_12_MONTHS)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {MARTS}")
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {UTILISATION_TABLE} AS
        WITH gp AS (
            SELECT nhs_number,
                   count(*) FILTER (WHERE status = 'attended'
                                    AND appointment_date BETWEEN {w0} AND {ed}) AS gp_att,
                   count(*) FILTER (WHERE status = 'did_not_attend'
                                    AND appointment_date BETWEEN {w0} AND {ed}) AS gp_dna,
                   max(appointment_date) FILTER (WHERE status = 'attended'
                                                 AND appointment_date <= {ed}) AS last_att
            FROM staging.gp_appointments
            GROUP BY nhs_number
        ),
        ae AS (
            SELECT nhs_number,
                   count(*) FILTER (WHERE CAST(arrival_datetime AS DATE) BETWEEN {w0} AND {ed}) AS ae,
                   count(*) FILTER (WHERE CAST(arrival_datetime AS DATE) BETWEEN {w0} AND {ed}
                                    AND department_type = '01') AS ae1
            FROM staging.sus_ecds
            GROUP BY nhs_number
        ),
        apc AS (
            SELECT nhs_number,
                   count(*) FILTER (WHERE admission_date BETWEEN {w0} AND {ed}
                                    AND emergency_admission) AS em,
                   count(*) FILTER (WHERE admission_date BETWEEN {w0} AND {ed}
                                    AND upper(trim(admission_method))
                                        IN ({_in(ELECTIVE_ADMISSION_METHODS)})) AS el,
                   coalesce(sum(date_diff('day', admission_date,
                                          least(coalesce(discharge_date, {ed}), {ed})))
                            FILTER (WHERE admission_date BETWEEN {w0} AND {ed}), 0) AS bed_days
            FROM {SPELLS_VIEW}
            GROUP BY nhs_number
        ),
        op AS (
            SELECT nhs_number,
                   count(*) FILTER (WHERE appointment_date BETWEEN {w0} AND {ed}
                                    AND attendance_status IN ('5', '6')) AS op_att,
                   count(*) FILTER (WHERE appointment_date BETWEEN {w0} AND {ed}
                                    AND attendance_status = '3') AS op_dna
            FROM staging.sus_op
            GROUP BY nhs_number
        ),
        keys AS (
            SELECT nhs_number FROM gp UNION SELECT nhs_number FROM ae
            UNION SELECT nhs_number FROM apc UNION SELECT nhs_number FROM op
        )
        SELECT k.nhs_number,
               CAST(coalesce(gp.gp_att, 0) AS INTEGER) AS gp_appointments_attended_12m,
               CAST(coalesce(gp.gp_dna, 0) AS INTEGER) AS gp_appointments_dna_12m,
               CAST(coalesce(ae.ae, 0) AS INTEGER) AS ae_attendances_12m,
               CAST(coalesce(ae.ae1, 0) AS INTEGER) AS ae_type1_attendances_12m,
               CAST(coalesce(apc.em, 0) AS INTEGER) AS emergency_admissions_12m,
               CAST(coalesce(apc.el, 0) AS INTEGER) AS elective_admissions_12m,
               CAST(coalesce(apc.bed_days, 0) AS INTEGER) AS bed_days_12m,
               CAST(coalesce(op.op_att, 0) AS INTEGER) AS op_attendances_12m,
               CAST(coalesce(op.op_dna, 0) AS INTEGER) AS op_dna_12m,
               CAST(date_diff('day', gp.last_att, {ed}) AS INTEGER) AS days_since_last_gp_attendance
        FROM keys k
        LEFT JOIN gp USING (nhs_number)
        LEFT JOIN ae USING (nhs_number)
        LEFT JOIN apc USING (nhs_number)
        LEFT JOIN op USING (nhs_number)
        """
    )
    return row_count(con, UTILISATION_TABLE)
