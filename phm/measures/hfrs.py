"""Hospital Frailty Risk Score (HFRS).

Gilbert T, Neuburger J, Kraindler J, et al. Development and validation of a Hospital Frailty
Risk Score focusing on older people in acute care settings using electronic hospital records:
an observational study. Lancet 2018;391(10132):1775-1782. doi:10.1016/S0140-6736(18)30668-8

The 109 ICD-10 categories and weights are data: ``data/reference/hfrs/hfrs_gilbert2018.csv``.

Rule (population version, as of the extract date):

* spells: ``staging.sus_apc`` rows (read through :data:`phm.hospital.SPELLS_VIEW`) with
  ``admission_date`` in the 730 days ending on the extract date, inclusive
  (``extract_date - 729 .. extract_date``), of every admission method: Gilbert et al. score
  the diagnoses of all admissions in the two years before an index emergency admission;
  ``hfrs_emergency_admissions_2y`` counts those spells that were emergency admissions by the
  project's one definition (:mod:`phm.hospital`: 21-25, 2A-2D, 28; a ``2B`` transfer that
  continues a stay is the same episode), for the population the score was developed on;
* diagnoses: the primary and every secondary diagnosis of those spells, upper-cased, with any
  character other than a letter or digit removed, truncated to 3 characters;
* each 3-character category counts once per patient, however many spells or positions it
  appears in; the score is the sum of the weights of the categories present, summed as exact
  decimals (``DECIMAL``), so the category boundaries 5 and 15 are compared exactly;
* ``hfrs_category``: low (< 5), intermediate (5 to 15 inclusive), high (> 15).
"""

from __future__ import annotations

import datetime as dt

import duckdb

from phm.hospital import SPELLS_VIEW, create_spells_view
from phm.measures._sql import (
    DAYS_2_YEARS,
    MARTS,
    date_literal,
    require_tables,
    row_count,
    window_start,
)

HFRS_TABLE = f"{MARTS}.hfrs"

HFRS_CATEGORY_SQL = (
    "CASE WHEN {s} < 5 THEN 'low' WHEN {s} <= 15 THEN 'intermediate' ELSE 'high' END"
)


def build_hfrs(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> int:
    """Create ``marts.hfrs``; returns its row count.

    Columns: ``nhs_number, hfrs_spells_2y, hfrs_emergency_admissions_2y, hfrs_score DECIMAL(5,1), hfrs_category,
    hfrs_codes`` (the contributing categories, ``;``-separated). One row per patient with at
    least one spell in the window (a patient whose spells carry no HFRS code scores 0.0, low).
    """
    require_tables(con, "staging.sus_apc", "reference.hfrs_weights")
    create_spells_view(con)
    ed = date_literal(extract_date)
    start = window_start(extract_date, DAYS_2_YEARS)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {MARTS}")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _hfrs_spells AS
        SELECT nhs_number, spell_id, emergency_admission, primary_diagnosis, secondary_diagnoses
        FROM {SPELLS_VIEW}
        WHERE admission_date BETWEEN {start} AND {ed}
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _hfrs_dx AS
        WITH codes AS (
            SELECT nhs_number, primary_diagnosis AS code FROM _hfrs_spells
            UNION ALL
            SELECT nhs_number, unnest(string_split(secondary_diagnoses, ';')) AS code
            FROM _hfrs_spells WHERE secondary_diagnoses IS NOT NULL
        )
        SELECT DISTINCT nhs_number,
               left(upper(regexp_replace(code, '[^A-Za-z0-9]', '', 'g')), 3) AS icd3
        FROM codes
        WHERE code IS NOT NULL
        """
    )
    score = "CAST(coalesce(sum(w.weight), 0) AS DECIMAL(5,1))"
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {HFRS_TABLE} AS
        WITH spells AS (
            SELECT nhs_number, count(*) AS hfrs_spells_2y,
                   count(*) FILTER (WHERE emergency_admission) AS hfrs_emergency_admissions_2y
            FROM _hfrs_spells GROUP BY nhs_number
        ),
        scored AS (
            SELECT d.nhs_number, {score} AS hfrs_score,
                   string_agg(w.icd10_code, ';' ORDER BY w.icd10_code) AS hfrs_codes
            FROM _hfrs_dx d JOIN reference.hfrs_weights w ON d.icd3 = w.icd10_code
            GROUP BY d.nhs_number
        )
        SELECT s.nhs_number,
               CAST(s.hfrs_spells_2y AS INTEGER) AS hfrs_spells_2y,
               CAST(s.hfrs_emergency_admissions_2y AS INTEGER) AS hfrs_emergency_admissions_2y,
               coalesce(c.hfrs_score, CAST(0 AS DECIMAL(5,1))) AS hfrs_score,
               {HFRS_CATEGORY_SQL.format(s="coalesce(c.hfrs_score, 0)")} AS hfrs_category,
               c.hfrs_codes
        FROM spells s LEFT JOIN scored c USING (nhs_number)
        """
    )
    for t in ("_hfrs_spells", "_hfrs_dx"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return row_count(con, HFRS_TABLE)
