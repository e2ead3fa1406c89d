"""History across deliveries: per-delivery aggregates and the PCN trend charts."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from geo.need import published_table
from phm.history import (
    HISTORY_TABLES,
    history_markdown,
    history_metadata,
    record_delivery_history,
    write_trend_charts,
)
from phm.warehouse import current_extract_date
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import PHMSettings

RISK_MODEL = dg.AssetKey(["marts", "risk_model"])


def _model_metrics(context: dg.AssetExecutionContext) -> dict[str, float]:
    """The risk model's validation metrics, if it was trained in this run (its materialisation
    metadata); otherwise none (a model of another run belongs to another delivery)."""
    event = context.instance.get_latest_materialization_event(RISK_MODEL)
    if event is None or event.run_id != context.run_id:
        return {}
    metadata = event.asset_materialization.metadata if event.asset_materialization else {}
    out = {}
    for name, key in (("auroc", "validation_auroc"), ("brier", "validation_brier")):
        if key in metadata and isinstance(metadata[key].value, int | float):
            out[name] = float(metadata[key].value)
    return out


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="delivery_history",
    group_name="reports",
    can_subset=False,
    specs=[
        dg.AssetSpec(
            ["reports", "delivery_history"],
            deps=[
                dg.AssetKey(["reports", "cohort_size_history"]),
                dg.AssetKey(["reports", "data_quality"]),
                dg.AssetKey(published_table("imd_quintile").split(".")),
                RISK_MODEL,
                # the trend charts go into the PCN folders the exports create
                dg.AssetKey(["exports", "pcn_exports"]),
            ],
            kinds={"duckdb", "png"},
            description=(
                "Per-delivery aggregates kept across deliveries (a rerun replaces its own delivery's "
                "rows): `reports.cohort_size_history` (cohort sizes per PCN), "
                "`reports.history_data_quality` (rows delivered / accepted / quarantined per table), "
                "`reports.history_measures` (registered, % 5+ LTCs, % frail 65+, emergency admissions "
                "per 1,000 by PCN and IMD quintile, as published), `reports.history_model` (risk model "
                "status, validation AUROC and Brier). Writes exports/<extract_date>/<pcn_code>/"
                "trends.png. The numeric metadata (disclosure-controlled) is plotted across "
                "materialisations in the asset's Plots tab."
            ),
        ),
        *[
            dg.AssetSpec(
                table.split("."),
                kinds={"duckdb"},
                description=f"`{table}`: per-delivery history (see reports/delivery_history).",
            )
            for table in HISTORY_TABLES
            if table != "reports.cohort_size_history"  # declared by its own asset
        ],
    ],
)
def delivery_history(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
):
    result = _delivery_history(context, settings, warehouse)
    yield dg.MaterializeResult(asset_key=["reports", "delivery_history"], metadata=result.metadata)
    for table in HISTORY_TABLES:
        if table != "reports.cohort_size_history":
            yield dg.MaterializeResult(asset_key=table.split("."))


def _delivery_history(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        rows = record_delivery_history(con, extract_date, _model_metrics(context))
        charts = write_trend_charts(con, settings.exports(extract_date.isoformat()), extract_date)
        figures = history_metadata(con, extract_date)
        table = history_markdown(con)
        deliveries = con.execute(
            f"SELECT count(DISTINCT extract_date) FROM {HISTORY_TABLES[-1]}"
        ).fetchone()[0]
    context.log.info(f"history recorded for {extract_date}; {len(charts)} trend charts")
    metadata: dict[str, object] = {
        "extract_date": extract_date.isoformat(),
        "deliveries": dg.MetadataValue.int(int(deliveries)),
        "trend_charts": dg.MetadataValue.int(len(charts)),
        "history": dg.MetadataValue.md(table),
        "rows_written": dg.MetadataValue.json(rows),
    }
    for name, value in figures.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            metadata[name] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            metadata[name] = dg.MetadataValue.float(value)
        else:
            metadata[name] = str(value)
    return dg.MaterializeResult(metadata=metadata)
