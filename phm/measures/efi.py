"""Electronic Frailty Index (eFI).

Clegg A, Bates C, Young J, et al. Development and validation of an electronic frailty index
using routine primary care electronic health record data. Age Ageing 2016;45(3):353-360.
doi:10.1093/ageing/afw039

36 deficits (``data/definitions/efi_deficits.yaml``):

* 35 coded deficits, present when any code of the deficit's GM SDE ``efi-*`` code set is
  recorded on or before the extract date (ever, as in the eFI);
* polypharmacy, present when 5 or more distinct BNF chemical substances (first 9 characters of
  the BNF code) from BNF chapters 1-15 were issued in the 365 days ending on the extract date.

``efi_score = deficits / 36``; the category comes from the exact count (fit 0-4, mild 5-8,
moderate 9-12, severe 13-36, i.e. < 0.12, 0.12 to < 0.24, 0.24 to < 0.36, >= 0.36), never
from a rounded score.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from phm.measures._sql import MARTS, date_literal, require_tables, row_count, window_start
from phm.measures.definitions import EfiDefinition, load_efi_definition

EFI_DEFICITS_TABLE = f"{MARTS}.efi_deficits"
EFI_TABLE = f"{MARTS}.efi"


def efi_category_sql(count_expr: str, efi: EfiDefinition) -> str:
    """SQL CASE classifying a deficit count (an integer expression) into the eFI categories."""
    whens = " ".join(
        f"WHEN {count_expr} BETWEEN {lo} AND {hi} THEN '{name}'" for name, lo, hi in efi.categories
    )
    return f"CASE {whens} END"


def build_efi(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    *,
    efi: EfiDefinition | None = None,
    events_table: str = "staging.gp_events",
) -> tuple[int, int]:
    """Create ``marts.efi_deficits`` and ``marts.efi``; returns their row counts.

    ``marts.efi_deficits(nhs_number, deficit_id, deficit_name, first_date, latest_date,
    evidence_count)``: one row per deficit present. For a coded deficit, the first and latest
    qualifying code and the number of such records; for polypharmacy, the first and latest
    qualifying issue in the window and the number of distinct chemical substances.

    ``marts.efi(nhs_number, efi_deficit_count, efi_score, efi_category,
    efi_distinct_medicines_12m, efi_deficits)``: one row per patient with a deficit or a BNF
    chapter 1-15 issue in the window; ``efi_deficits`` lists the deficit ids (``;``).

    ``events_table`` as in :func:`phm.measures.ltc.build_ltc_registers`.
    """
    require_tables(
        con,
        events_table,
        "staging.gp_medications",
        "reference.codelists",
        "reference.efi_deficit_definitions",
    )
    efi = efi if efi is not None else load_efi_definition()
    poly = efi.polypharmacy
    ed = date_literal(extract_date)
    chapters = ", ".join(f"'{c}'" for c in poly.bnf_chapters)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {MARTS}")

    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _efi_codes AS
        SELECT DISTINCT c.code AS snomed_code, d.deficit_id
        FROM reference.efi_deficit_definitions d
        JOIN reference.codelists c USING (codelist_id)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _efi_poly AS
        SELECT nhs_number,
               count(DISTINCT left(upper(trim(bnf_code)), 9)) AS distinct_substances,
               min(issue_date) AS first_date,
               max(issue_date) AS latest_date
        FROM staging.gp_medications
        WHERE issue_date BETWEEN {window_start(extract_date, poly.days)} AND {ed}
          AND left(upper(trim(bnf_code)), 2) IN ({chapters})
        GROUP BY nhs_number
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {EFI_DEFICITS_TABLE} AS
        WITH present AS (
            SELECT e.nhs_number, k.deficit_id,
                   min(e.event_date) AS first_date,
                   max(e.event_date) AS latest_date,
                   count(*) AS evidence_count
            FROM {events_table} e
            JOIN _efi_codes k ON e.snomed_code = k.snomed_code
            WHERE e.event_date <= {ed}
            GROUP BY e.nhs_number, k.deficit_id
            UNION ALL
            SELECT nhs_number, '{poly.id}', first_date, latest_date, distinct_substances
            FROM _efi_poly
            WHERE distinct_substances >= {poly.min_distinct}
        )
        SELECT p.nhs_number, p.deficit_id, d.deficit_name, p.first_date, p.latest_date,
               p.evidence_count
        FROM present p JOIN reference.efi_deficit_definitions d USING (deficit_id)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {EFI_TABLE} AS
        WITH counts AS (
            SELECT nhs_number, count(*) AS n,
                   string_agg(deficit_id, ';' ORDER BY deficit_id) AS ids
            FROM {EFI_DEFICITS_TABLE}
            GROUP BY nhs_number
        ),
        joined AS (
            SELECT coalesce(c.nhs_number, p.nhs_number) AS nhs_number,
                   coalesce(c.n, 0) AS efi_deficit_count,
                   coalesce(p.distinct_substances, 0) AS efi_distinct_medicines_12m,
                   c.ids AS efi_deficits
            FROM counts c FULL OUTER JOIN _efi_poly p USING (nhs_number)
        )
        SELECT nhs_number,
               CAST(efi_deficit_count AS INTEGER) AS efi_deficit_count,
               efi_deficit_count / {efi.denominator}.0 AS efi_score,
               {efi_category_sql("efi_deficit_count", efi)} AS efi_category,
               CAST(efi_distinct_medicines_12m AS INTEGER) AS efi_distinct_medicines_12m,
               efi_deficits
        FROM joined
        """
    )
    for t in ("_efi_codes", "_efi_poly"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return row_count(con, EFI_DEFICITS_TABLE), row_count(con, EFI_TABLE)
