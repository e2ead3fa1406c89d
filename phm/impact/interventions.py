"""Treated sets and monthly service-use panels (DuckDB SQL; nothing loops over people).

A *treated set* is a table or query with columns ``person_id``, ``intervention`` and
``index_date`` (one row per person and intervention: the earliest index date is used).
Interventions are data (``data/interventions/*.yaml``, compiled by
:mod:`phm.definitions.interventions`): :func:`treated_sql` gives the enabled ones' treated sets
(social prescribing: each person's earliest ``first_contact_date`` in
``staging.sp_referrals``).

Time is counted in calendar months. The *index month* is the calendar month holding the
index date; month 0 is the index month, month -1 the calendar month before it, and so on.
The pre-period is months -12..-1 (matching) or -w..-1 (a w-month window); the post-period
is months 0..w-1.

Censoring rule (docs/impact.md): a person is observed in a calendar month only if the
whole month lies on or before their *censor date* = the earliest of date of death, end of
their last registration (when no registration is open) and the extract date. A treated
person or comparator must be registered since the start of month -12 and observed in
month 0 to take part; after that, months past the censor date are not counted (rates are per
observed month, and a matched pair is followed only while both are observed and, for the
comparator, until the month they are themselves treated). Nobody is dropped silently: the
counts excluded by each rule are reported.

Outcomes per month: GP appointments attended (``staging.gp_appointments`` status
``attended``, any staff role except ``social_prescriber``, whose sessions are the
intervention itself, :data:`INTERVENTION_STAFF_ROLES`), A&E attendances
(``staging.sus_ecds``, any department type, by arrival date), emergency admissions
(the spells that began an emergency episode, ``emergency_admission`` of
:data:`phm.hospital.SPELLS_VIEW`, the project's one definition: a ``2B`` transfer that
continues a stay is not counted again; by admission date) and
emergency bed days (the length of stay of every emergency spell, transfers included, in days:
discharge date minus admission date, the extract date for a spell still open, counted in the
admission month).
"""

from __future__ import annotations

import datetime as dt

import duckdb

from phm.definitions.compiler import table_columns_of
from phm.definitions.interventions import load_interventions
from phm.definitions.interventions import treated_sql as compile_treated_sql
from phm.hospital import SPELLS_VIEW, create_spells_view

#: outcome id -> (label, unit per person per window)
OUTCOMES: dict[str, tuple[str, str]] = {
    "gp_attended": ("Practice appointments attended", "appointments per person"),
    "ae_attendances": ("A&E attendances", "attendances per person"),
    "emergency_admissions": ("Emergency admissions", "admissions per person"),
    "bed_days": ("Emergency bed days", "bed days per person"),
}
WINDOWS: tuple[int, ...] = (6, 12)

#: appointments with these staff roles are the intervention itself (social prescribing link
#: workers' sessions), so they are not counted as practice use: otherwise every referral would
#: "increase" GP use by its own sessions. Care coordinators and health coaches are practice
#: use like any other role (the same definition as the generator's truth, impact_truth.json).
INTERVENTION_STAFF_ROLES: tuple[str, ...] = ("social_prescriber",)
PRE_MONTHS = 12

PEOPLE_TABLE = "marts.impact_people"
MONTHLY_USE_TABLE = "marts.impact_monthly_use"
INTERVENTIONS_TABLE = "marts.impact_interventions"


def _d(value: dt.date) -> str:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise TypeError(f"expected a date, got {type(value).__name__}")
    return f"DATE '{value.isoformat()}'"


def treated_sql(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> str:
    """Every enabled intervention's treated set, compiled from ``data/interventions/``."""
    definitions = load_interventions()
    return compile_treated_sql(definitions, extract_date, table_columns_of(con))


def build_interventions(
    con: duckdb.DuckDBPyConnection, treated_sql: str, extract_date: dt.date
) -> int:
    """``marts.impact_interventions``: one row per person and intervention with the index
    date (earliest) and index month; index dates after the extract date are ignored."""
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {INTERVENTIONS_TABLE} AS
        SELECT person_id, intervention, min(index_date) AS index_date,
               CAST(date_trunc('month', min(index_date)) AS DATE) AS index_month
        FROM ({treated_sql}) t
        WHERE index_date IS NOT NULL AND index_date <= {_d(extract_date)}
        GROUP BY person_id, intervention
        ORDER BY intervention, person_id
        """
    )
    return con.execute(f"SELECT count(*) FROM {INTERVENTIONS_TABLE}").fetchone()[0]


def build_people(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> int:
    """``marts.impact_people``: everyone ever registered, with what matching needs.

    Columns: person_id, sex, birth_month (the date of birth is not kept: age at an index
    month counts the birthday as reached on the first of the birth month), registration_start
    (earliest; registrations are
    assumed continuous), censor_date, pcn_code (latest registration), imd_quintile,
    ltc_count and efi_category (from ``marts.patient_measures``, i.e. as at the extract
    date; null for people no longer registered, matched as "unknown").
    """
    ed = _d(extract_date)
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {PEOPLE_TABLE} AS
        WITH reg AS (
            SELECT i.person_id,
                   arg_max(p.sex, p.registration_start) AS sex,
                   arg_max(p.date_of_birth, p.registration_start) AS date_of_birth,
                   arg_max(p.practice_code, p.registration_start) AS practice_code,
                   min(p.registration_start) AS registration_start,
                   CASE WHEN bool_or(p.registration_end IS NULL) THEN NULL
                        ELSE max(p.registration_end) END AS last_end,
                   min(p.date_of_death) AS date_of_death
            FROM staging.gp_patients p JOIN marts.person_identity i USING (nhs_number)
            GROUP BY i.person_id)
        SELECT r.person_id, r.sex,
               CAST(date_trunc('month', r.date_of_birth) AS DATE) AS birth_month,
               r.registration_start,
               least(coalesce(r.date_of_death, {ed}), coalesce(r.last_end, {ed}), {ed})
                   AS censor_date,
               coalesce(pm.pcn_code, pr.pcn_code) AS pcn_code,
               pm.imd2019_quintile AS imd_quintile,
               pm.ltc_count,
               pm.efi_category
        FROM reg r
        LEFT JOIN marts.patient_measures pm USING (person_id)
        LEFT JOIN (SELECT practice_code, min(pcn_code) AS pcn_code
                   FROM staging.practices GROUP BY practice_code) pr
          ON pr.practice_code = r.practice_code
        ORDER BY r.person_id
        """
    )
    return con.execute(f"SELECT count(*) FROM {PEOPLE_TABLE}").fetchone()[0]


def build_monthly_use(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> int:
    """``marts.impact_monthly_use``: person_id, month (first day) and the four outcome counts,
    one row per person and calendar month with any use, up to the extract date."""
    ed = _d(extract_date)
    create_spells_view(con)
    roles = ", ".join(f"'{r}'" for r in INTERVENTION_STAFF_ROLES)
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {MONTHLY_USE_TABLE} AS
        WITH ev AS (
            SELECT nhs_number, CAST(date_trunc('month', appointment_date) AS DATE) AS month,
                   1 AS gp, 0 AS ae, 0 AS em, 0 AS bd
            FROM staging.gp_appointments
            WHERE status = 'attended' AND appointment_date <= {ed}
              AND coalesce(staff_role, '') NOT IN ({roles})
            UNION ALL
            SELECT nhs_number, CAST(date_trunc('month', arrival_datetime) AS DATE), 0, 1, 0, 0
            FROM staging.sus_ecds WHERE CAST(arrival_datetime AS DATE) <= {ed}
            UNION ALL
            SELECT nhs_number, CAST(date_trunc('month', admission_date) AS DATE), 0, 0,
                   CASE WHEN emergency_admission THEN 1 ELSE 0 END,
                   greatest(date_diff('day', admission_date,
                                      least(coalesce(discharge_date, {ed}), {ed})), 0)
            FROM {SPELLS_VIEW}
            WHERE emergency_method AND admission_date <= {ed})
        -- summed per NHS number (short keys), then keyed by person_id (one to one)
        SELECT i.person_id, u.month, u.gp_attended, u.ae_attendances,
               u.emergency_admissions, u.bed_days
        FROM (SELECT nhs_number, month,
                     CAST(sum(gp) AS INTEGER) AS gp_attended,
                     CAST(sum(ae) AS INTEGER) AS ae_attendances,
                     CAST(sum(em) AS INTEGER) AS emergency_admissions,
                     CAST(sum(bd) AS INTEGER) AS bed_days
              FROM ev GROUP BY nhs_number, month) u
        JOIN marts.person_identity i USING (nhs_number)
        ORDER BY i.person_id, u.month
        """
    )
    return con.execute(f"SELECT count(*) FROM {MONTHLY_USE_TABLE}").fetchone()[0]


def observed_months_sql(index_month: str, censor_date: str) -> str:
    """SQL: how many whole calendar months from the index month on are observed."""
    return (
        f"greatest(date_diff('month', {index_month}, "
        f"CAST(date_trunc('month', {censor_date} + INTERVAL 1 DAY) AS DATE)), 0)"
    )


def age_band_sql(age: str) -> str:
    return (
        f"CASE WHEN {age} < 18 THEN '0-17' WHEN {age} < 35 THEN '18-34' "
        f"WHEN {age} < 50 THEN '35-49' WHEN {age} < 65 THEN '50-64' "
        f"WHEN {age} < 75 THEN '65-74' WHEN {age} < 85 THEN '75-84' ELSE '85+' END"
    )


def ltc_band_sql(ltc: str) -> str:
    return (
        f"CASE WHEN {ltc} IS NULL THEN 'unknown' WHEN {ltc} = 0 THEN '0' "
        f"WHEN {ltc} = 1 THEN '1' WHEN {ltc} <= 3 THEN '2-3' ELSE '4+' END"
    )


def eligible_sql(index_month: dt.date) -> str:
    """SQL for everyone eligible at ``index_month``: treated people whose index month it is
    (``treated`` true) and candidates not treated by then (treated later or never), with
    the matching strata (age at the index month). Its one parameter (``?``) is the
    intervention: bind it, never paste it into the text. Matching applies the same rules
    to numpy arrays (:func:`phm.impact.matching.load_panel`); this is their reference form
    (tests/test_impact_matching.py)."""
    m0 = _d(index_month)
    age = (
        f"(date_part('year', {m0}) - date_part('year', p.birth_month)"
        f" - CASE WHEN date_part('month', {m0}) < date_part('month', p.birth_month)"
        " THEN 1 ELSE 0 END)"
    )
    return f"""
        SELECT p.person_id, coalesce(t.index_month = {m0}, false) AS treated,
               p.sex, CAST({age} AS INTEGER) AS age,
               {age_band_sql(age)} AS age_band,
               p.imd_quintile, coalesce(CAST(p.imd_quintile AS VARCHAR), 'unknown') AS imd_band,
               p.ltc_count, {ltc_band_sql("p.ltc_count")} AS ltc_band,
               coalesce(p.efi_category, 'unknown') AS efi_band
        FROM {PEOPLE_TABLE} p
        LEFT JOIN {INTERVENTIONS_TABLE} t
          ON t.person_id = p.person_id AND t.intervention = ?
        WHERE p.registration_start <= {m0} - INTERVAL {PRE_MONTHS} MONTH
          AND {observed_months_sql(m0, "p.censor_date")} >= 1
          AND (t.index_month IS NULL OR t.index_month >= {m0})
        ORDER BY p.person_id
    """


def pre_use_sql(people_table: str, index_month: dt.date) -> str:
    """SQL: the monthly use of the people in ``people_table`` in the 12 months before
    ``index_month``, long: person_id, ``months_before`` (1..12) and the outcome counts."""
    m0 = _d(index_month)
    return f"""
        SELECT u.person_id, CAST(date_diff('month', u.month, {m0}) AS INTEGER) AS months_before,
               {", ".join(f"u.{o}" for o in OUTCOMES)}
        FROM {MONTHLY_USE_TABLE} u SEMI JOIN {people_table} e ON e.person_id = u.person_id
        WHERE u.month >= {m0} - INTERVAL {PRE_MONTHS} MONTH AND u.month < {m0}
    """
