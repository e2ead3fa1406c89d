"""Clinical measures: long-term conditions, eFI, HFRS, utilisation, one row per patient.

Two multi-assets, one spec per table they write: the reference tables (code lists and the
clinical definitions) and the measures marts (keyed by ``person_id``, NHS numbers only in
``marts.person_identity``), with a blocking check that no other marts table holds NHS numbers.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.contract import TABLE_NAMES
from phm.hospital import SPELLS_VIEW
from phm.measures import (
    MEASURES_TABLES,
    build_patient_measures,
    describe,
    load_reference_tables,
)
from phm.pseudonymise import PERSON_TABLES, identifier_columns, load_key
from phm.warehouse import current_extract_date
from pipelines.assets._metadata import markdown_table
from pipelines.partitions import DELIVERY_PARTITIONS

CODELISTS = dg.AssetKey(["reference", "codelists"])

#: every table :func:`phm.measures.load_reference_tables` writes, with what it holds
REFERENCE_TABLES = {
    "codelists": (
        "`reference.codelists`: every SNOMED CT code list of data/definitions/codelists.csv, "
        "read from the vendored folder (or PHM_CODELIST_DIR). Damaged ids (failing the "
        "Verhoeff check digit) are dropped and listed in `reference.codelist_issues`."
    ),
    "codelist_catalogue": (
        "`reference.codelist_catalogue`: each code list's provenance, version and licence."
    ),
    "codelist_issues": (
        "`reference.codelist_issues`: code list rows dropped or repaired on loading, and why."
    ),
    "ltc_conditions": (
        "`reference.ltc_conditions`: the long-term conditions of "
        "data/definitions/ltc_conditions.yaml (type, look-back window, medication rule, source)."
    ),
    "ltc_condition_codelists": (
        "`reference.ltc_condition_codelists`: the diagnosis and resolved code lists of each "
        "long-term condition."
    ),
    "efi_deficit_definitions": (
        "`reference.efi_deficit_definitions`: the 36 eFI deficits and their code lists."
    ),
    "hfrs_weights": "`reference.hfrs_weights`: the Hospital Frailty Risk Score ICD-10 weights.",
}


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="codelists",
    group_name="measures",
    can_subset=False,
    specs=[
        dg.AssetSpec(["reference", table], description=text, kinds={"duckdb"})
        for table, text in REFERENCE_TABLES.items()
    ],
)
def codelists(warehouse: DuckDBResource):
    """Load the code lists and the clinical definition tables into ``reference``."""
    with warehouse.get_connection() as con:
        report = load_reference_tables(con)
        rows = {
            t: con.execute(f"SELECT count(*) FROM reference.{t}").fetchone()[0]
            for t in REFERENCE_TABLES
        }
    for table, n in rows.items():
        metadata: dict = {"rows": dg.MetadataValue.int(n)}
        if table == "codelists":
            metadata |= {
                "code_lists": len(report.lists),
                "codes_loaded": report.codes_loaded,
                "ids_repaired": report.repaired,
                "ids_dropped": report.dropped,
                "dropped_by_reason": dg.MetadataValue.json(report.dropped_by_reason()),
            }
        yield dg.MaterializeResult(asset_key=["reference", table], metadata=metadata)


_KEYED = (
    "\n\nKeyed by `person_id` (HMAC-SHA256 of the NHS number); NHS numbers are only in "
    "`marts.person_identity`."
)
_ALL_REFERENCE = [dg.AssetKey(["reference", t]) for t in REFERENCE_TABLES]
_STAGING = [dg.AssetKey(["staging", t]) for t in TABLE_NAMES]
IDENTITY_TABLE = "marts.person_identity"
PATIENTS = "marts.patient_measures"
IDENTITY = dg.AssetKey(["marts", "person_identity"])


def _measure_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(table.split("."))


SPELLS = dg.AssetKey(SPELLS_VIEW.split("."))


def _measure_spec(table: str) -> dg.AssetSpec:
    """One table of :data:`phm.measures.MEASURES_TABLES`: built from staging and the
    reference tables, keyed through ``marts.person_identity``; ``marts.patient_measures``
    also reads the other measure tables."""
    if table == IDENTITY_TABLE:
        return dg.AssetSpec(
            IDENTITY,
            deps=[dg.AssetKey(["staging", t]) for t in PERSON_TABLES],
            kinds={"duckdb"},
            description=(
                "`marts.person_identity(person_id, nhs_number)`: one row per NHS number in "
                "the staging tables, `person_id` = HMAC-SHA256 of the NHS number under the "
                "pseudonymisation key. The only marts table holding NHS numbers (for the "
                "direct-care exports)."
            ),
        )
    deps = [*_STAGING, *_ALL_REFERENCE, IDENTITY]
    description = describe(table) + _KEYED
    if table == PATIENTS:
        deps += [_measure_key(t) for t in MEASURES_TABLES if t not in (table, IDENTITY_TABLE)]
        description += " `ltc_names` lists the conditions on the register."
    return dg.AssetSpec(_measure_key(table), deps=deps, kinds={"duckdb"}, description=description)


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="patient_measures",
    group_name="measures",
    can_subset=False,
    specs=[
        *[_measure_spec(t) for t in MEASURES_TABLES],
        dg.AssetSpec(
            SPELLS,
            deps=[dg.AssetKey(["staging", "sus_apc"])],
            kinds={"duckdb"},
            description=(
                "`staging.apc_spells` (a view over `staging.sus_apc`): the one definition of an "
                "emergency admission, a transfer, a discharge and a death in hospital "
                "(`phm.hospital`), read by utilisation, HFRS, the risk outcome, the impact "
                "stage and the cohort rules."
            ),
        ),
    ],
)
def patient_measures(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
    """Long-term condition registers, eFI, HFRS, utilisation and the patient measures,
    pseudonymised (``phm.measures.build_patient_measures``)."""
    key = load_key()
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        report = build_patient_measures(con, extract_date, key=key, load_reference=False)
    for step, seconds in report.seconds.items():
        context.log.info(f"{step}: {seconds:.1f}s")
    # results in lineage order: the identity table, the measure tables, the patient table
    for table in sorted(MEASURES_TABLES, key=lambda t: (t != IDENTITY_TABLE, t == PATIENTS)):
        metadata: dict = {
            "rows": dg.MetadataValue.int(report.row_counts[table]),
            "extract_date": extract_date.isoformat(),
        }
        if table == PATIENTS:
            metadata["seconds"] = markdown_table(("step", "seconds"), report.seconds)
        yield dg.MaterializeResult(asset_key=_measure_key(table), metadata=metadata)
    yield dg.MaterializeResult(asset_key=SPELLS)


@dg.asset_check(
    asset=dg.AssetKey(["marts", "patient_measures"]),
    name="no_identifiers_in_marts",
    blocking=True,
    additional_deps=[_measure_key(t) for t in MEASURES_TABLES if t != PATIENTS],
    description=(
        "No `marts` table except `marts.person_identity` has an `nhs_number` column "
        "(`phm.pseudonymise.identifier_columns`)."
    ),
)
def no_identifiers_in_marts(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as con:
        offending = identifier_columns(con)
    return dg.AssetCheckResult(
        passed=not offending,
        metadata={"tables_with_nhs_number": dg.MetadataValue.json(offending)},
    )
