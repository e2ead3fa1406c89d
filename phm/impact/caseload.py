"""Caseload reporting: social prescribing referrals per PCN and month, and the outreach
funnel of each proactive cohort.

A referral's PCN is that of the person's latest registration (``marts.impact_people``);
its month is the calendar month of ``referral_date``. Counted per month of referral:

- ``referrals``: referrals made;
- ``source`` and ``reason`` (a referral may have several reasons, so reason shares add up
  to more than 1): count and share of the month's referrals;
- ``status``: the referral's status at the extract date, as reported to PCN leads:
  ``seen_and_discharged`` (``discharged``), ``active``, ``booked`` (``waiting`` with a booked
  social prescriber appointment on or after the referral date: the first session is
  arranged), ``waiting`` (no session booked), ``declined``, ``unable_to_contact``;
- ``contact_attempts``: distribution (0, 1, 2, 3, 4, 5, 6+) and mean (``value``);
- ``days_to_first_contact``: mean and median days from referral to first contact of the
  referrals contacted (``n`` = those referrals).

Outreach funnel, per cohort and PCN (people, not referrals): ``identified`` = members of
the cohort (``marts.cohort_members``, as at the extract date); ``referred`` = those with a
social prescribing referral dated in the ``within_days`` days ending on the extract date;
``contacted`` = of those, a referral with a first contact; ``engaged`` = a referral now
``active`` or ``discharged`` (seen). Joined by person_id.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl

STATUS_ORDER = [
    "seen_and_discharged",
    "active",
    "booked",
    "waiting",
    "declined",
    "unable_to_contact",
]
FUNNEL_STAGES = ["identified", "referred", "contacted", "engaged"]


def _referrals_cte() -> str:
    return """
        ref AS (
            SELECT r.referral_id, i.person_id, coalesce(p.pcn_code, 'unknown') AS pcn_code,
                   CAST(date_trunc('month', r.referral_date) AS DATE) AS month,
                   r.referral_date, r.source, r.reasons, r.contact_attempts,
                   r.first_contact_date,
                   CASE WHEN r.status = 'discharged' THEN 'seen_and_discharged'
                        WHEN r.status = 'waiting' AND EXISTS (
                            SELECT 1 FROM staging.gp_appointments a
                            WHERE a.nhs_number = r.nhs_number AND a.status = 'booked'
                              AND a.staff_role = 'social_prescriber'
                              AND a.appointment_date >= r.referral_date) THEN 'booked'
                        ELSE r.status END AS status
            FROM staging.sp_referrals r
            JOIN marts.person_identity i USING (nhs_number)
            LEFT JOIN marts.impact_people p ON p.person_id = i.person_id)
    """


def caseload_monthly(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Long table: pcn_code, month, dimension, category, n, denominator, value."""
    return con.execute(
        f"""
        WITH {_referrals_cte()},
        tot AS (SELECT pcn_code, month, count(*) AS denominator FROM ref GROUP BY ALL),
        counts AS (
            SELECT pcn_code, month, 'referrals' AS dimension, 'all' AS category,
                   count(*) AS n, NULL::DOUBLE AS value FROM ref GROUP BY ALL
            UNION ALL
            SELECT pcn_code, month, 'source', source, count(*), NULL FROM ref GROUP BY ALL
            UNION ALL
            SELECT pcn_code, month, 'reason', trim(reason), count(DISTINCT referral_id), NULL
            FROM (SELECT *, unnest(string_split(reasons, ';')) AS reason FROM ref)
            WHERE trim(reason) <> '' GROUP BY ALL
            UNION ALL
            SELECT pcn_code, month, 'status', status, count(*), NULL FROM ref GROUP BY ALL
            UNION ALL
            SELECT pcn_code, month, 'contact_attempts',
                   CASE WHEN contact_attempts >= 6 THEN '6+'
                        ELSE CAST(contact_attempts AS VARCHAR) END, count(*), NULL
            FROM ref GROUP BY ALL
            UNION ALL
            SELECT pcn_code, month, 'contact_attempts', 'mean', count(*),
                   avg(contact_attempts) FROM ref GROUP BY ALL
            UNION ALL
            SELECT pcn_code, month, 'days_to_first_contact', 'mean', count(*),
                   avg(date_diff('day', referral_date, first_contact_date))
            FROM ref WHERE first_contact_date IS NOT NULL GROUP BY ALL
            UNION ALL
            SELECT pcn_code, month, 'days_to_first_contact', 'median', count(*),
                   CAST(median(date_diff('day', referral_date, first_contact_date)) AS DOUBLE)
            FROM ref WHERE first_contact_date IS NOT NULL GROUP BY ALL)
        SELECT c.pcn_code, c.month, c.dimension, c.category, CAST(c.n AS BIGINT) AS n,
               CAST(t.denominator AS BIGINT) AS denominator, c.value
        FROM counts c JOIN tot t USING (pcn_code, month)
        ORDER BY c.pcn_code, c.month, c.dimension, c.category
        """
    ).pl()


def outreach_funnel(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    within_days: int = 365,
    cohorts: list[str] | None = None,
) -> pl.DataFrame:
    """Per cohort and PCN (and ``ALL``): identified, referred, contacted, engaged (people)."""
    ed = f"DATE '{extract_date.isoformat()}'"
    where, params = "", []
    if cohorts:
        where, params = "WHERE list_contains(?, m.cohort_id)", [list(cohorts)]
    return con.execute(
        f"""
        WITH {_referrals_cte()},
        recent AS (
            SELECT person_id,
                   bool_or(first_contact_date IS NOT NULL) AS contacted,
                   bool_or(status IN ('active', 'seen_and_discharged')) AS engaged
            FROM ref
            WHERE referral_date <= {ed}
              AND referral_date > {ed} - INTERVAL {int(within_days)} DAY
            GROUP BY person_id),
        mem AS (
            SELECT m.cohort_id, coalesce(p.pcn_code, 'unknown') AS pcn_code, m.person_id,
                   r.person_id IS NOT NULL AS referred,
                   coalesce(r.contacted, false) AS contacted,
                   coalesce(r.engaged, false) AS engaged
            FROM (SELECT DISTINCT cohort_id, person_id FROM marts.cohort_members) m
            LEFT JOIN marts.impact_people p USING (person_id)
            LEFT JOIN recent r USING (person_id)
            {where})
        SELECT cohort_id, coalesce(pcn_code, 'ALL') AS pcn_code,
               CAST(count(*) AS BIGINT) AS identified,
               CAST(count(*) FILTER (WHERE referred) AS BIGINT) AS referred,
               CAST(count(*) FILTER (WHERE referred AND contacted) AS BIGINT) AS contacted,
               CAST(count(*) FILTER (WHERE referred AND engaged) AS BIGINT) AS engaged
        FROM mem
        GROUP BY GROUPING SETS ((cohort_id, pcn_code), (cohort_id))
        ORDER BY cohort_id, pcn_code = 'ALL' DESC, pcn_code
        """,
        params,
    ).pl()
