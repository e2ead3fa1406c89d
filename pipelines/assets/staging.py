"""Validation: every raw row goes to ``staging.<table>`` (valid, typed) or
``quarantine.<table>`` (as delivered, with every rule it broke); nothing is lost.

One asset pair per contract table, a blocking check per table that raw = staging +
quarantine, and a data-quality report over all of them.
"""

from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

import schemas
from phm.contract import TABLE_NAMES
from phm.files import atomic_path, atomic_write_text
from phm.validate import (
    WITHOUT_PRACTICE_COLUMNS,
    data_quality_markdown,
    data_quality_summary,
    patients_without_practice,
    validate_in_warehouse,
)
from phm.warehouse import current_extract_date, write_table
from pipelines.assets._metadata import markdown_table
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import PHMSettings


def _validation_asset(table: str):
    deps = [dg.AssetKey(["raw", table])] + [
        dg.AssetKey(["raw", ref]) for ref, _ in schemas.REFERENCES.get(table, {}).values()
    ]

    @dg.multi_asset(
        partitions_def=DELIVERY_PARTITIONS,
        name=f"validate_{table}",
        specs=[
            dg.AssetSpec(
                ["staging", table],
                deps=deps,
                group_name="staging",
                kinds={"duckdb", "pandera"},
                description=(
                    f"`staging.{table}`: the valid rows of `raw.{table}`, typed per the data "
                    "contract (codes trimmed, ICD-10 normalised)."
                ),
            ),
            dg.AssetSpec(
                ["quarantine", table],
                deps=deps,
                group_name="staging",
                kinds={"duckdb", "pandera"},
                description=(
                    f"`quarantine.{table}`: every invalid row of `raw.{table}` as delivered, "
                    "with the delivery date and the names of every rule it broke."
                ),
            ),
        ],
        can_subset=False,
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            # plausibility gate inside: an implausible share of bad rows fails the run before
            # staging is replaced and before anything downstream reads it
            result = validate_in_warehouse(con, table, current_extract_date(con))
        delivered = result.rows_delivered
        share = result.rows_quarantined / delivered if delivered else 0.0
        context.log.info(
            f"{table}: {delivered} delivered, {result.rows_accepted} accepted, "
            f"{result.rows_quarantined} quarantined"
        )
        rules = markdown_table(("rule", "rows"), sorted(result.rule_counts.items()))
        yield dg.MaterializeResult(
            asset_key=["staging", table],
            metadata={"rows": result.rows_accepted, "delivered": delivered},
        )
        yield dg.MaterializeResult(
            asset_key=["quarantine", table],
            metadata={
                "rows": result.rows_quarantined,
                "share": dg.MetadataValue.float(round(share, 6)),
                "broken_rules": rules,
            },
        )

    return _asset


def _conservation_check(table: str):
    @dg.asset_check(
        asset=dg.AssetKey(["staging", table]),
        name="rows_conserved",
        blocking=True,
        additional_deps=[dg.AssetKey(["quarantine", table]), dg.AssetKey(["raw", table])],
        description=f"Rows in raw.{table} = rows in staging.{table} + rows in quarantine.{table}.",
    )
    def _check(warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as con:
            raw, staged, quarantined = con.execute(
                f"SELECT (SELECT count(*) FROM raw.{table}), (SELECT count(*) FROM staging.{table}),"
                f" (SELECT count(*) FROM quarantine.{table})"
            ).fetchone()
            # every raw row number appears exactly once across staging and quarantine
            unmatched = con.execute(
                f"""SELECT count(*) FROM raw.{table} r FULL OUTER JOIN (
                        SELECT _row_number FROM staging.{table}
                        UNION ALL SELECT _row_number FROM quarantine.{table}) s
                    USING (_row_number) WHERE r._row_number IS NULL OR s._row_number IS NULL"""
            ).fetchone()[0]
        return dg.AssetCheckResult(
            passed=bool(raw == staged + quarantined and unmatched == 0),
            metadata={
                "raw": raw,
                "staging": staged,
                "quarantine": quarantined,
                "unmatched_row_numbers": unmatched,
            },
        )

    return _check


validation_assets = [_validation_asset(t) for t in TABLE_NAMES]
conservation_checks = [_conservation_check(t) for t in TABLE_NAMES]


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["reports", "data_quality"],
    group_name="staging",
    deps=[dg.AssetKey(["staging", t]) for t in TABLE_NAMES]
    + [dg.AssetKey(["quarantine", t]) for t in TABLE_NAMES],
    kinds={"duckdb", "markdown"},
    description=(
        "Data quality of the delivery: per table rows delivered, accepted and quarantined, "
        "counts per broken rule, completeness of key fields, the number of patients whose "
        "practice row was quarantined. No patient identifiers. Also written to "
        "exports/<extract_date>/data_quality.md; the patients without a practice are listed "
        "for the data team in HOME/exceptions/<extract_date>/patients_without_practice.csv."
    ),
)
def data_quality(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        summary = data_quality_summary(con)
        write_table(con, "reports.data_quality", summary)
        orphans = patients_without_practice(con)
    md = data_quality_markdown(summary, extract_date)
    path = settings.exports(extract_date.isoformat()) / "data_quality.md"
    atomic_write_text(path, md)
    # the exceptions list holds NHS numbers (for correcting the practice rows): it goes to the
    # pipeline's own area, never to exports; always written, so an empty file means none
    exceptions = Path(settings.home) / "exceptions" / extract_date.isoformat()
    exceptions.mkdir(parents=True, exist_ok=True)
    orphans_path = exceptions / "patients_without_practice.csv"
    with atomic_path(orphans_path, mode=0o600) as tmp:
        orphans.select(WITHOUT_PRACTICE_COLUMNS).write_csv(tmp)
    if orphans.height:
        context.log.warning(
            f"{orphans.height} accepted registration(s) name a practice whose row was "
            f"quarantined; listed in {orphans_path}"
        )
    delivered = int(summary.filter(pl.col("metric") == "rows_delivered")["value"].sum() or 0)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(md),
            "path": dg.MetadataValue.path(str(path)),
            "rows_delivered": delivered,
            "patients_without_practice": orphans.height,
        }
    )
