"""Ingest: the latest complete delivery into ``raw.<table>``, every table or none."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.contract import TABLE_NAMES, TABLES
from phm.delivery import open_delivery
from phm.ingest import load_raw
from phm.warehouse import DELIVERY_TABLE
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import PHMSettings

RAW_SPECS = [
    dg.AssetSpec(
        key=["raw", table],
        group_name="ingest",
        description=(
            f"`raw.{table}`: {TABLES[table].description} Every delivered column as text, exactly "
            "as delivered, plus `_row_number` (1-based row in the file)."
        ),
        kinds={"duckdb"},
    )
    for table in TABLE_NAMES
] + [
    dg.AssetSpec(
        key=DELIVERY_TABLE.split("."),
        group_name="ingest",
        description=(
            f"`{DELIVERY_TABLE}`: the delivery loaded into `raw` (extract date, folder, "
            "manifest), read by every later step for the extract date."
        ),
        kinds={"duckdb"},
    )
]


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS, specs=RAW_SPECS, can_subset=False, name="ingest_delivery"
)
def ingest_delivery(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
):
    """Verify the delivery against its manifest (files, row counts, sha256, required columns,
    encoding) and load all twelve tables in one transaction. A file-level fault fails the run
    with a message naming the file; the warehouse keeps its last good state."""
    delivery = open_delivery(settings.extracts_root, settings.selected_delivery or None)
    context.log.info(f"delivery {delivery.extract_date_str} from {delivery.folder}")
    with warehouse.get_connection() as con:
        counts = load_raw(con, delivery)
    for table in TABLE_NAMES:
        yield dg.MaterializeResult(
            asset_key=["raw", table],
            metadata={
                "extract_date": delivery.extract_date_str,
                "file": delivery.entries[table].file.name,
                "rows": dg.MetadataValue.int(counts[table]),
            },
        )
    yield dg.MaterializeResult(
        asset_key=DELIVERY_TABLE.split("."),
        metadata={"extract_date": delivery.extract_date_str},
    )
