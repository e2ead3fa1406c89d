"""Long-term condition registers.

Conditions: Barnett K, Mercer SW, Norbury M, Watt G, Wyke S, Guthrie B. Epidemiology of
multimorbidity and implications for health care, research, and medical education: a
cross-sectional study. Lancet 2012;380:37-43 (the conditions of the Cambridge Multimorbidity
Score, Payne et al. CMAJ 2020;192:E107-14), each classed mental or physical. The conditions,
their code lists and rules are data: ``data/definitions/ltc_conditions.yaml``.

Rule, per patient and condition, using only codes and issues dated on or before the extract
date:

* ``first_date`` / ``latest_date`` = first / latest diagnosis code;
* the *code rule* holds when there is a diagnosis code and no resolved code dated strictly
  after the latest one (QOF: "resolved code recorded after the most recent diagnosis"), and,
  if the condition has a window, its latest (or first) diagnosis code is within the window;
* the *medication rule* (where defined) holds with ``min_issues`` or more issues whose BNF code
  starts with one of the prefixes in the window, and with none of the condition's
  ``exclude_bnf_prefixes`` (e.g. tricyclic antidepressants, BNF 4.3.1 ``040301``, for the
  depression arm: low-dose use for pain); it is combined with the code rule by
  ``and`` ("currently treated") or ``or`` (an alternative arm, e.g. Barnett's depression);
* ``is_on_register`` is the combination.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from phm.measures._sql import MARTS, date_literal, require_tables, row_count, window_start
from phm.measures.definitions import LtcCondition, load_ltc_conditions

LTC_TABLE = f"{MARTS}.ltc_registers"


def build_ltc_registers(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    *,
    conditions: list[LtcCondition] | None = None,
    events_table: str = "staging.gp_events",
) -> int:
    """Create ``marts.ltc_registers``; returns its row count.

    Columns: ``nhs_number, condition_id, condition_name, condition_type, first_date,
    latest_date, latest_resolved_date, medication_issues, meets_code_rule,
    meets_medication_rule, is_on_register``. One row per patient and condition with a
    diagnosis code, or qualifying issues for a medication rule; ``medication_issues`` and
    ``meets_medication_rule`` are null for conditions without a medication rule.

    Reads ``staging.gp_events`` (or ``events_table``, a table with its ``nhs_number,
    snomed_code, event_date`` columns, e.g. a pre-filtered copy), ``staging.gp_medications``,
    ``reference.codelists``, ``reference.ltc_conditions`` and
    ``reference.ltc_condition_codelists``.
    """
    require_tables(
        con,
        events_table,
        "staging.gp_medications",
        "reference.codelists",
        "reference.ltc_conditions",
        "reference.ltc_condition_codelists",
    )
    conditions = conditions if conditions is not None else load_ltc_conditions()
    ed = date_literal(extract_date)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {MARTS}")

    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ltc_codes AS
        SELECT DISTINCT c.code AS snomed_code, m.condition_id, m.role
        FROM reference.ltc_condition_codelists m
        JOIN reference.codelists c USING (codelist_id)
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ltc_coded AS
        SELECT e.nhs_number, k.condition_id,
               min(e.event_date) FILTER (WHERE k.role = 'diagnosis') AS first_date,
               max(e.event_date) FILTER (WHERE k.role = 'diagnosis') AS latest_date,
               max(e.event_date) FILTER (WHERE k.role = 'resolved') AS latest_resolved_date
        FROM {events_table} e
        JOIN _ltc_codes k ON e.snomed_code = k.snomed_code
        WHERE e.event_date <= {ed}
        GROUP BY e.nhs_number, k.condition_id
        """
    )

    # medication arms: one hash join per BNF prefix length, issues in each rule's window;
    # issues under an excluded prefix of the same condition are anti-joined away
    excludes = [
        (c.id, x) for c in conditions if c.medication for x in c.medication.exclude_bnf_prefixes
    ]
    if excludes:
        values = ", ".join(f"('{cid}', '{x}')" for cid, x in excludes)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _ltc_med_excl AS SELECT * FROM "
            f"(VALUES {values}) AS t(condition_id, bnf_prefix)"
        )
    else:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _ltc_med_excl (condition_id VARCHAR, bnf_prefix VARCHAR)"
        )
    rules = [
        (c.id, p, c.medication.days)
        for c in conditions
        if c.medication
        for p in c.medication.bnf_prefixes
    ]
    if rules:
        max_days = max(days for _, _, days in rules)
        values = ", ".join(f"('{cid}', '{p}', {len(p)}, {days})" for cid, p, days in rules)
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _ltc_med_rules AS
            SELECT * FROM (VALUES {values}) AS t(condition_id, bnf_prefix, prefix_len, days)
            """
        )
        lengths = sorted({len(p) for _, p, _ in rules})
        by_length = {n: sorted({p for _, p, _ in rules if len(p) == n}) for n in lengths}
        prefilter = " OR ".join(
            f"left(upper(trim(bnf_code)), {n}) IN ({', '.join(map(repr, ps))})"
            for n, ps in by_length.items()
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _ltc_meds_window AS
            SELECT nhs_number, issue_date, upper(trim(bnf_code)) AS bnf_code
            FROM staging.gp_medications
            WHERE issue_date BETWEEN {window_start(extract_date, max_days)} AND {ed}
              AND ({prefilter})
            """
        )
        unions = " UNION ALL ".join(
            f"""SELECT m.nhs_number, r.condition_id
                FROM _ltc_meds_window m
                JOIN (SELECT * FROM _ltc_med_rules WHERE prefix_len = {n}) r
                  ON left(m.bnf_code, {n}) = r.bnf_prefix
                WHERE m.issue_date >= {ed} - (r.days - 1)
                  AND NOT EXISTS (SELECT 1 FROM _ltc_med_excl x
                                  WHERE x.condition_id = r.condition_id
                                    AND starts_with(m.bnf_code, x.bnf_prefix))"""
            for n in lengths
        )
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _ltc_meds AS
            SELECT nhs_number, condition_id, count(*) AS medication_issues
            FROM ({unions})
            GROUP BY nhs_number, condition_id
            """
        )
    else:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _ltc_meds "
            "(nhs_number VARCHAR, condition_id VARCHAR, medication_issues BIGINT)"
        )

    con.execute(
        f"""
        CREATE OR REPLACE TABLE {LTC_TABLE} AS
        WITH keys AS (
            SELECT nhs_number, condition_id FROM _ltc_coded WHERE latest_date IS NOT NULL
            UNION
            SELECT m.nhs_number, m.condition_id
            FROM _ltc_meds m JOIN reference.ltc_conditions d USING (condition_id)
            WHERE d.medication_combine = 'or' AND m.medication_issues >= d.medication_min_issues
        ),
        joined AS (
            SELECT k.nhs_number, k.condition_id, c.first_date, c.latest_date,
                   c.latest_resolved_date, m.medication_issues
            FROM keys k
            LEFT JOIN _ltc_coded c USING (nhs_number, condition_id)
            LEFT JOIN _ltc_meds m USING (nhs_number, condition_id)
        ),
        rules AS (
            SELECT j.*, d.condition_name, d.condition_type, d.medication_combine,
                   d.medication_min_issues,
                   coalesce(
                       j.latest_date IS NOT NULL
                       AND (j.latest_resolved_date IS NULL OR j.latest_resolved_date <= j.latest_date)
                       AND (d.window_on IS NULL
                            OR (CASE d.window_on WHEN 'latest' THEN j.latest_date ELSE j.first_date END)
                               >= {ed} - (d.window_days - 1)),
                       false) AS meets_code_rule,
                   CASE WHEN d.medication_combine IS NULL THEN NULL
                        ELSE coalesce(j.medication_issues, 0) >= d.medication_min_issues
                   END AS meets_medication_rule
            FROM joined j JOIN reference.ltc_conditions d USING (condition_id)
        )
        SELECT nhs_number, condition_id, condition_name, condition_type,
               first_date, latest_date, latest_resolved_date,
               CASE WHEN medication_combine IS NULL THEN NULL
                    ELSE coalesce(medication_issues, 0) END AS medication_issues,
               meets_code_rule, meets_medication_rule,
               CASE medication_combine
                    WHEN 'and' THEN meets_code_rule AND meets_medication_rule
                    WHEN 'or' THEN meets_code_rule OR meets_medication_rule
                    ELSE meets_code_rule
               END AS is_on_register
        FROM rules
        """
    )
    for t in (
        "_ltc_codes",
        "_ltc_coded",
        "_ltc_meds",
        "_ltc_med_rules",
        "_ltc_med_excl",
        "_ltc_meds_window",
    ):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return row_count(con, LTC_TABLE)


def ltc_wide_select(conditions: list[LtcCondition], source: str = LTC_TABLE) -> str:
    """SQL: one row per patient on at least one register, a flag and dates per condition.

    Columns ``nhs_number, ltc_count, mental_ltc_count, physical_ltc_count,
    mental_health_condition_count`` (the cohorts' mental health conditions: type mental except
    the conditions the definitions exclude, e.g. learning disability) and per condition
    ``has_<id>, <id>_first_date, <id>_latest_date`` (dates of the first and latest diagnosis
    code; null when not on the register). Uses PIVOT with an explicit condition list, so every
    condition gets its columns even when nobody is on its register.
    """
    ids = ", ".join(f"'{c.id}'" for c in conditions)
    mh_ids = ", ".join(f"'{c.id}'" for c in conditions if c.mental_health_condition) or "NULL"
    cols = []
    for c in conditions:
        cols += [
            f"coalesce(w.{c.id}_n, 0) > 0 AS has_{c.id}",
            f"w.{c.id}_first_date",
            f"w.{c.id}_latest_date",
        ]
    return f"""
        WITH on_register AS (
            SELECT nhs_number, condition_id, condition_type, first_date, latest_date
            FROM {source}
            WHERE is_on_register
        ),
        counts AS (
            SELECT nhs_number,
                   count(*) AS ltc_count,
                   count(*) FILTER (WHERE condition_type = 'mental') AS mental_ltc_count,
                   count(*) FILTER (WHERE condition_type = 'physical') AS physical_ltc_count,
                   count(*) FILTER (WHERE condition_id IN ({mh_ids}))
                       AS mental_health_condition_count
            FROM on_register
            GROUP BY nhs_number
        ),
        wide AS (
            PIVOT (SELECT nhs_number, condition_id, first_date, latest_date FROM on_register)
            ON condition_id IN ({ids})
            USING count(*) AS n, min(first_date) AS first_date, max(latest_date) AS latest_date
            GROUP BY nhs_number
        )
        SELECT c.nhs_number, c.ltc_count, c.mental_ltc_count, c.physical_ltc_count,
               c.mental_health_condition_count, {", ".join(cols)}
        FROM counts c JOIN wide w USING (nhs_number)
    """
