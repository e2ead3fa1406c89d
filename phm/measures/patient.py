"""``marts.patient_measures``: one row per currently registered patient with every measure.

Population: ``staging.gp_patients`` rows with ``registration_end`` null, ``registration_start``
on or before the extract date, and no ``date_of_death`` on or before the extract date; one row
per ``nhs_number`` (the latest registration if the contract's uniqueness rule was broken).

:func:`build_patient_measures` leaves every ``marts`` table keyed by the pseudonymous
``person_id`` (HMAC-SHA256 of the NHS number under the pseudonymisation key, see
:mod:`phm.pseudonymise`); ``marts.person_identity`` is the only ``marts`` table holding NHS
numbers. :func:`build_measures` builds the same tables keyed by ``nhs_number``, for as-of
snapshots inside the warehouse (model features) and tests of the measure rules.

Age is whole years at the extract date (birthday reached when month and day are reached; a
29 February birthday is reached on 1 March in other years).

Deprivation: the decile (1 = most deprived 10% of LSOAs in England) of the configured index
(:func:`phm.imd.imd_config`: the vendored IMD 2019 on LSOA 2011 by default, or e.g. IMD 2025
on LSOA 2021), looked up by the patient's LSOA of that vintage (``lsoa11_code`` or
``lsoa21_code``); quintile = ceil(decile / 2). The columns keep their historical names
``imd2019_decile`` / ``imd2019_quintile`` (used across cohorts, geography, segmentation and
exports); ``imd_vintage`` names the index actually used. ``deprivation_known`` is false for a
patient with no LSOA or an LSOA the index does not cover ("deprivation unknown").

Mental health: ``mental_health_condition_count`` / ``has_mental_health_condition`` /
``mental_health_condition_names`` count the conditions of type mental except those the
definitions exclude (learning disability), for the cohorts; ``mental_ltc_count`` keeps
Barnett's classification.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from phm.codelists import CodelistLoadReport, write_codelists
from phm.imd import ImdConfig, imd_config, read_imd_deciles
from phm.measures._sql import MARTS, date_literal, require_tables, row_count
from phm.measures.definitions import (
    load_efi_definition,
    load_ltc_conditions,
    required_codelists,
    write_definition_tables,
)
from phm.measures.efi import EFI_TABLE, build_efi, efi_category_sql
from phm.measures.hfrs import HFRS_TABLE, build_hfrs
from phm.measures.ltc import build_ltc_registers, ltc_wide_select
from phm.measures.utilisation import UTILISATION_COUNTS, UTILISATION_TABLE, build_utilisation
from phm.pseudonymise import pseudonymise_marts

PATIENT_MEASURES_TABLE = f"{MARTS}.patient_measures"


@dataclass
class MeasuresReport:
    """What :func:`build_patient_measures` built."""

    extract_date: dt.date
    row_counts: dict[str, int] = field(default_factory=dict)
    #: wall-clock seconds per step
    seconds: dict[str, float] = field(default_factory=dict)
    #: process CPU seconds per step (all DuckDB threads), a load-independent measure of work
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    codelists: CodelistLoadReport | None = None


def load_reference_tables(
    con: duckdb.DuckDBPyConnection, *, codelist_directory: Path | None = None
) -> CodelistLoadReport:
    """Load every catalogued code list and the definition tables into ``reference``."""
    report = write_codelists(con, directory=codelist_directory)
    write_definition_tables(con)
    return report


def check_reference_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Fail clearly if a code list the measures need is absent or empty in the warehouse."""
    require_tables(con, "reference.codelists")
    have = {
        r[0]
        for r in con.execute(
            "SELECT codelist_id FROM reference.codelists GROUP BY codelist_id HAVING count(*) > 0"
        ).fetchall()
    }
    missing = [i for i in required_codelists() if i not in have]
    if missing:
        raise LookupError(
            "reference.codelists lacks code list(s) the measures need: " + ", ".join(missing)
        )


#: the marts tables :func:`build_patient_measures` writes, in the order it writes them
MEASURES_TABLES = (
    "marts.ltc_registers",
    "marts.efi_deficits",
    "marts.efi",
    "marts.hfrs",
    "marts.utilisation",
    PATIENT_MEASURES_TABLE,
    "marts.person_identity",
)


def build_patient_measures(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    *,
    key: bytes,
    load_reference: bool = True,
    codelist_directory: Path | None = None,
    imd_path: Path | None = None,
    imd: ImdConfig | None = None,
) -> MeasuresReport:
    """Build every measures table and ``marts.patient_measures``, keyed by ``person_id``.

    :func:`build_measures`, then :func:`phm.pseudonymise.pseudonymise_marts` under ``key``
    (the pseudonymisation key, e.g. :func:`phm.pseudonymise.load_key`): afterwards every
    table of :data:`MEASURES_TABLES` has ``person_id`` as its first column and no
    ``nhs_number``, except ``marts.person_identity(person_id, nhs_number)``.
    """
    report = build_measures(
        con,
        extract_date,
        load_reference=load_reference,
        codelist_directory=codelist_directory,
        imd_path=imd_path,
        imd=imd,
    )
    t, c = time.perf_counter(), time.process_time()
    rows = pseudonymise_marts(con, key)
    report.seconds["pseudonymise"] = time.perf_counter() - t
    report.cpu_seconds["pseudonymise"] = time.process_time() - c
    report.row_counts.update({f"marts.{table}": n for table, n in rows.items()})
    report.row_counts["marts.person_identity"] = row_count(con, "marts.person_identity")
    return report


def build_measures(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    *,
    load_reference: bool = True,
    codelist_directory: Path | None = None,
    imd_path: Path | None = None,
    imd: ImdConfig | None = None,
) -> MeasuresReport:
    """Build every measures table and ``marts.patient_measures``, keyed by ``nhs_number``.

    For use inside the warehouse only (as-of snapshots, tests of the rules): the marts of the
    pipeline come from :func:`build_patient_measures`, which pseudonymises these tables.

    With ``load_reference`` (the default) the code lists (from ``codelist_directory`` or
    :func:`phm.paths.codelist_dir`) and definition tables are (re)loaded into ``reference``
    first; otherwise the existing ``reference`` tables are used and checked.

    Creates ``marts.ltc_registers``, ``marts.efi_deficits``, ``marts.efi``, ``marts.hfrs``,
    ``marts.utilisation`` and ``marts.patient_measures`` (see :func:`patient_measures_columns`).
    """
    date_literal(extract_date)  # fail early on a datetime
    require_tables(con, "staging.gp_events")
    report = MeasuresReport(extract_date=extract_date)
    t0 = time.perf_counter()
    if load_reference:
        report.codelists = load_reference_tables(con, codelist_directory=codelist_directory)
    else:
        write_definition_tables(con)
        check_reference_tables(con)
    report.seconds["reference"] = time.perf_counter() - t0
    conditions = load_ltc_conditions()
    efi = load_efi_definition()

    def step(name: str, fn, *args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        out = fn(con, extract_date, *args, **kwargs)
        report.seconds[name] = time.perf_counter() - t
        report.cpu_seconds[name] = time.process_time() - c
        return out

    # one pass over gp_events keeps only codes some measure list contains; both the LTC and
    # the eFI joins then read that (much smaller) table
    t, c = time.perf_counter(), time.process_time()
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _measure_events AS
        SELECT nhs_number, snomed_code, event_date
        FROM staging.gp_events
        WHERE event_date <= {date_literal(extract_date)}
          AND snomed_code IN (
              SELECT c.code FROM reference.codelists c
              WHERE c.codelist_id IN (SELECT codelist_id FROM reference.ltc_condition_codelists
                                      UNION
                                      SELECT codelist_id FROM reference.efi_deficit_definitions))
        """
    )
    report.seconds["coded_events"] = time.perf_counter() - t
    report.cpu_seconds["coded_events"] = time.process_time() - c
    report.row_counts["coded_events"] = row_count(con, "_measure_events")
    report.row_counts["marts.ltc_registers"] = step(
        "marts.ltc_registers",
        build_ltc_registers,
        conditions=conditions,
        events_table="_measure_events",
    )
    n_def, n_efi = step("marts.efi", build_efi, efi=efi, events_table="_measure_events")
    con.execute("DROP TABLE IF EXISTS _measure_events")
    report.row_counts["marts.efi_deficits"] = n_def
    report.row_counts["marts.efi"] = n_efi
    report.row_counts["marts.hfrs"] = step("marts.hfrs", build_hfrs)
    report.row_counts["marts.utilisation"] = step("marts.utilisation", build_utilisation)
    report.row_counts[PATIENT_MEASURES_TABLE] = step(
        PATIENT_MEASURES_TABLE, build_patient_table, imd_path=imd_path, imd=imd
    )
    return report


def resolve_imd(imd: ImdConfig | None = None, imd_path: Path | None = None) -> ImdConfig:
    """``imd`` if given; else an IMD 2019 / LSOA 2011 file at ``imd_path``; else the
    configured index (:func:`phm.imd.imd_config`)."""
    if imd is not None:
        return imd
    if imd_path is not None:
        return ImdConfig(path=Path(imd_path))
    return imd_config()


def build_patient_table(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    *,
    imd_path: Path | None = None,
    imd: ImdConfig | None = None,
) -> int:
    """Assemble ``marts.patient_measures`` from the measure tables (which must exist).

    ``imd``: the deprivation index (default :func:`resolve_imd`)."""
    require_tables(
        con,
        "staging.gp_patients",
        "staging.practices",
        "marts.ltc_registers",
        EFI_TABLE,
        HFRS_TABLE,
        UTILISATION_TABLE,
    )
    conditions = load_ltc_conditions()
    efi = load_efi_definition()
    ed = date_literal(extract_date)
    imd = resolve_imd(imd, imd_path)
    con.register("_imd_frame", read_imd_deciles(imd))
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _imd AS "
        "SELECT lsoa_code, CAST(imd_decile AS INTEGER) AS imd_decile FROM _imd_frame"
    )
    con.unregister("_imd_frame")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _ltc_wide AS {ltc_wide_select(conditions)}")

    ltc_cols = []
    for c in conditions:
        ltc_cols += [
            f"coalesce(l.has_{c.id}, false) AS has_{c.id}",
            f"l.{c.id}_first_date",
            f"l.{c.id}_latest_date",
        ]
    util_cols = [f"CAST(coalesce(u.{c}, 0) AS INTEGER) AS {c}" for c in UTILISATION_COUNTS]
    # the names on the register, in definition order; the names are bound, not spliced in
    ltc_names = ", ".join(
        f"CASE WHEN l.has_{c.id} THEN $ltc_names[{i}] END" for i, c in enumerate(conditions, 1)
    )
    mh_names = ", ".join(
        f"CASE WHEN l.has_{c.id} THEN $ltc_names[{i}] END"
        for i, c in enumerate(conditions, 1)
        if c.mental_health_condition
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {PATIENT_MEASURES_TABLE} AS
        WITH population AS (
            SELECT p.nhs_number, p.date_of_birth, p.sex, p.practice_code, p.lsoa11_code,
                   p.lsoa21_code
            FROM staging.gp_patients p
            WHERE p.registration_end IS NULL
              AND p.registration_start <= {ed}
              AND (p.date_of_death IS NULL OR p.date_of_death > {ed})
            QUALIFY row_number() OVER (
                PARTITION BY p.nhs_number ORDER BY p.registration_start DESC, p.practice_code
            ) = 1
        )
        SELECT p.nhs_number,
               CAST(date_part('year', {ed}) - date_part('year', p.date_of_birth)
                    - CASE WHEN strftime({ed}, '%m%d') < strftime(p.date_of_birth, '%m%d')
                           THEN 1 ELSE 0 END AS INTEGER) AS age,
               p.sex,
               p.practice_code,
               pr.pcn_code,
               p.lsoa11_code,
               p.lsoa21_code,
               i.imd_decile AS imd2019_decile,
               CAST(ceil(i.imd_decile / 2) AS INTEGER) AS imd2019_quintile,
               $imd_vintage AS imd_vintage,
               i.imd_decile IS NOT NULL AS deprivation_known,
               CAST(coalesce(l.ltc_count, 0) AS INTEGER) AS ltc_count,
               CAST(coalesce(l.mental_ltc_count, 0) AS INTEGER) AS mental_ltc_count,
               CAST(coalesce(l.physical_ltc_count, 0) AS INTEGER) AS physical_ltc_count,
               CAST(coalesce(l.mental_health_condition_count, 0) AS INTEGER)
                   AS mental_health_condition_count,
               coalesce(l.mental_health_condition_count, 0) > 0 AS has_mental_health_condition,
               concat_ws(', ', {mh_names or "NULL"}) AS mental_health_condition_names,
               {", ".join(ltc_cols)},
               coalesce(e.efi_deficit_count, 0) AS efi_deficit_count,
               coalesce(e.efi_score, 0.0) AS efi_score,
               {efi_category_sql("coalesce(e.efi_deficit_count, 0)", efi)} AS efi_category,
               coalesce(e.efi_distinct_medicines_12m, 0) AS efi_distinct_medicines_12m,
               coalesce(e.efi_distinct_medicines_12m, 0) >= {efi.polypharmacy.min_distinct}
                   AS has_efi_polypharmacy,
               e.efi_deficits,
               coalesce(h.hfrs_spells_2y, 0) AS hfrs_spells_2y,
               h.hfrs_score,
               h.hfrs_category,
               h.hfrs_codes,
               {", ".join(util_cols)},
               u.days_since_last_gp_attendance,
               concat_ws(', ', {ltc_names}) AS ltc_names
        FROM population p
        LEFT JOIN staging.practices pr USING (practice_code)
        LEFT JOIN _imd i ON i.lsoa_code = p.{imd.lsoa_column}
        LEFT JOIN _ltc_wide l USING (nhs_number)
        LEFT JOIN {EFI_TABLE} e USING (nhs_number)
        LEFT JOIN {HFRS_TABLE} h USING (nhs_number)
        LEFT JOIN {UTILISATION_TABLE} u USING (nhs_number)
        """,
        {"ltc_names": [c.name for c in conditions], "imd_vintage": imd.label},
    )
    for t in ("_imd", "_ltc_wide"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return row_count(con, PATIENT_MEASURES_TABLE)


def patient_measures_columns(key: str = "person_id") -> list[str]:
    """The columns of ``marts.patient_measures``, in order (derived from the definitions).

    ``key`` is the first column: ``person_id`` (:func:`build_patient_measures`) or
    ``nhs_number`` (:func:`build_measures`)."""
    cols = [
        key,
        "age",
        "sex",
        "practice_code",
        "pcn_code",
        "lsoa11_code",
        "lsoa21_code",
        "imd2019_decile",
        "imd2019_quintile",
        "imd_vintage",
        "deprivation_known",
        "ltc_count",
        "mental_ltc_count",
        "physical_ltc_count",
        "mental_health_condition_count",
        "has_mental_health_condition",
        "mental_health_condition_names",
    ]
    for c in load_ltc_conditions():
        cols += [f"has_{c.id}", f"{c.id}_first_date", f"{c.id}_latest_date"]
    cols += [
        "efi_deficit_count",
        "efi_score",
        "efi_category",
        "efi_distinct_medicines_12m",
        "has_efi_polypharmacy",
        "efi_deficits",
        "hfrs_spells_2y",
        "hfrs_score",
        "hfrs_category",
        "hfrs_codes",
        *UTILISATION_COUNTS,
        "days_since_last_gp_attendance",
        "ltc_names",
    ]
    return cols
