"""Clinical measures: long-term conditions, eFI, HFRS, utilisation, one row per patient."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.contract import TABLE_NAMES
from phm.measures import (
    build_patient_measures,
    describe,
    load_ltc_conditions,
    load_reference_tables,
)
from phm.pseudonymise import load_key, pseudonymise_marts
from phm.warehouse import current_extract_date


def _ltc_names_sql() -> str:
    parts = ", ".join(
        f"CASE WHEN has_{c.id} THEN '{c.name.replace(chr(39), chr(39) * 2)}' END"
        for c in load_ltc_conditions()
    )
    return f"concat_ws(', ', {parts})"


@dg.asset(
    key=["reference", "codelists"],
    group_name="measures",
    kinds={"duckdb"},
    description=(
        "`reference.codelists`: every SNOMED CT code list of data/definitions/codelists.csv, read "
        "from the vendored folder (or PHM_CODELIST_DIR), with provenance, version and licence in "
        "`reference.codelist_catalogue`. Damaged ids (failing the Verhoeff check digit) are "
        "dropped and listed in `reference.codelist_issues`."
    ),
)
def codelists(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        report = load_reference_tables(con)
    return dg.MaterializeResult(
        metadata={
            "code_lists": len(report.lists),
            "codes_loaded": report.codes_loaded,
            "ids_repaired": report.repaired,
            "ids_dropped": report.dropped,
            "dropped_by_reason": dg.MetadataValue.json(report.dropped_by_reason()),
        }
    )


@dg.asset(
    key=["marts", "patient_measures"],
    group_name="measures",
    deps=[dg.AssetKey(["staging", t]) for t in TABLE_NAMES]
    + [dg.AssetKey(["reference", "codelists"])],
    kinds={"duckdb"},
    description=describe("marts.patient_measures")
    + "\n\nKeyed by `person_id` (HMAC-SHA256 of the NHS number); NHS numbers are only in "
    "`marts.person_identity`. `ltc_names` lists the conditions on the register.",
)
def patient_measures(
    context: dg.AssetExecutionContext, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    key = load_key()
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        report = build_patient_measures(con, extract_date, load_reference=False)
        con.execute("ALTER TABLE marts.patient_measures ADD COLUMN ltc_names VARCHAR")
        con.execute(f"UPDATE marts.patient_measures SET ltc_names = {_ltc_names_sql()}")
        rows = pseudonymise_marts(con, key)
    for step, seconds in report.seconds.items():
        context.log.info(f"{step}: {seconds:.1f}s")
    meta = {
        "rows": rows["patient_measures"],
        "extract_date": extract_date.isoformat(),
        "seconds": dg.MetadataValue.md(
            "\n".join(
                ["| step | seconds |", "|---|---:|"]
                + [f"| {k} | {v:.1f} |" for k, v in report.seconds.items()]
            )
        ),
    }
    return dg.MaterializeResult(metadata=meta)
