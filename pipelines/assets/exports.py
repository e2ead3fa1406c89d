"""Exports: per-PCN cohort lists and risk registers; a disclosure-controlled summary."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.exports import export_pcns, write_summary
from phm.warehouse import current_extract_date
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import PHMSettings


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["exports", "pcn_exports"],
    group_name="exports",
    deps=[dg.AssetKey(["marts", "cohort_members"]), dg.AssetKey(["marts", "patient_measures"])],
    kinds={"csv", "xlsx"},
    description=(
        "For each PCN, under exports/<extract_date>/<pcn_code>/: cohorts/<cohort_id>.csv, "
        "cohorts.xlsx, risk_register.csv and manifest.json, holding only patients registered "
        "with that PCN's practices. For direct care: these files carry NHS numbers."
    ),
)
def pcn_exports(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        out = settings.exports(extract_date.isoformat())
        written = export_pcns(con, out, extract_date)
    context.log.info(f"wrote exports for {len(written)} PCNs under {out}")
    return dg.MaterializeResult(
        metadata={"pcns": len(written), "folder": dg.MetadataValue.path(str(out))}
    )


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["exports", "summary"],
    group_name="exports",
    deps=[dg.AssetKey(["marts", "cohort_members"])],
    kinds={"csv"},
    description=(
        "exports/<extract_date>/summary.csv: cohort sizes per PCN and practice for publication, "
        "every count through the disclosure-control function (1-7 shown as *, others rounded "
        "to the nearest 5, by default)."
    ),
)
def summary(settings: PHMSettings, warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        path = write_summary(con, settings.exports(extract_date.isoformat()))
    return dg.MaterializeResult(metadata={"path": dg.MetadataValue.path(str(path))})
