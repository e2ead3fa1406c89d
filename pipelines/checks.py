"""Asset checks beyond raw = staging + quarantine (pipelines/assets/staging.py) and no
identifiers outside ``marts.person_identity`` (pipelines/assets/marts.py):

- ``keys_unique`` on every marts asset (ERROR): each table it writes has unique keys
  (:data:`phm.quality.MARTS_KEYS`).
- ``cohort_sizes_plausible`` on ``reports/cohort_size_history`` (WARN): each cohort's size
  per PCN is within 0.5x-2x of the previous delivery's.
- freshness (WARN): the final exports were materialised under 26 hours ago, i.e. the last
  successful nightly run is under 26 hours old. Dagster's last-update freshness checks,
  evaluated outside runs by the ``phm_freshness`` sensor (runs in ``make ui``'s daemon once
  started in the UI, like the other sensors).

The logic is in :mod:`phm.quality`; these are thin wrappers.
"""

from __future__ import annotations

import datetime as dt
import warnings

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.disclosure import protect_value
from phm.quality import (
    COHORT_SIZE_HISTORY,
    MARTS_KEYS,
    cohort_sizes_plausible,
    marts_keys_unique,
    record_cohort_sizes,
    undeclared_marts_tables,
)
from phm.warehouse import current_extract_date
from pipelines.assets._metadata import markdown_table
from pipelines.partitions import DELIVERY_PARTITIONS

#: marts tables written by an asset of another name (the rest: asset key = table name)
TABLE_OWNER = {
    "marts.impact_people": "marts.impact_interventions",
    "marts.impact_monthly_use": "marts.impact_interventions",
    "marts.impact_balance": "marts.impact_matched_pairs",
    "marts.impact_match_summary": "marts.impact_matched_pairs",
    "marts.impact_outreach_funnel": "marts.caseload_monthly",
    "marts.model_registry": "marts.risk_model",
}

#: the assets a successful nightly run ends with; their age is the age of the last run
FINAL_ASSETS = [dg.AssetKey(["exports", "summary"]), dg.AssetKey(["exports", "pcn_exports"])]
MAX_AGE = dt.timedelta(hours=26)


def _tables_by_asset() -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for table in MARTS_KEYS:
        owners.setdefault(TABLE_OWNER.get(table, table), []).append(table)
    return owners


def _keys_check(asset: str, tables: list[str]) -> dg.AssetChecksDefinition:
    listed = ", ".join(f"`{t}` ({', '.join(MARTS_KEYS[t])})" for t in tables)

    @dg.asset_check(
        asset=dg.AssetKey(asset.split(".")),
        name="keys_unique",
        description=f"Each row's key is unique and not null: {listed}.",
    )
    def _check(warehouse: DuckDBResource) -> dg.AssetCheckResult:
        with warehouse.get_connection() as con:
            reports = marts_keys_unique(con, {t: MARTS_KEYS[t] for t in tables})
            undeclared = undeclared_marts_tables(con)
        return dg.AssetCheckResult(
            passed=all(r.passed for r in reports) and bool(reports),
            metadata={
                "duplicate_rows": markdown_table(
                    ("table", "rows with a repeated or null key"),
                    [(r.table, r.duplicate_rows) for r in reports],
                ),
                "marts_tables_without_declared_key": dg.MetadataValue.json(undeclared),
            },
        )

    return _check


KEY_CHECKS = [_keys_check(asset, tables) for asset, tables in _tables_by_asset().items()]


@dg.asset(
    key=["reports", "cohort_size_history"],
    partitions_def=DELIVERY_PARTITIONS,
    group_name="cohorts",
    deps=[dg.AssetKey(["marts", "cohort_members"]), dg.AssetKey(["marts", "patient_measures"])],
    kinds={"duckdb"},
    description=(
        f"`{COHORT_SIZE_HISTORY}` (extract_date, cohort_id, pcn_code, members): each "
        "delivery's cohort sizes per PCN, kept across deliveries (a rerun replaces its own "
        "delivery's rows), for the cohort size plausibility check."
    ),
)
def cohort_size_history(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        rows = record_cohort_sizes(con, extract_date)
        deliveries = con.execute(
            f"SELECT count(DISTINCT extract_date) FROM {COHORT_SIZE_HISTORY}"
        ).fetchone()[0]
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "extract_date": extract_date.isoformat(),
            "deliveries": int(deliveries),
        }
    )


@dg.asset_check(
    asset=cohort_size_history,
    name="cohort_sizes_plausible",
    description=(
        "Each cohort's size per PCN is within 0.5x-2x of the previous delivery's (judged where "
        "either size is at least 20). A warning: a big move may be real (a new code list, a "
        "changed definition) but deserves a look before the lists go out."
    ),
)
def cohort_sizes_check(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as con:
        report = cohort_sizes_plausible(con, current_extract_date(con))
    moved = [
        (
            f"{c.cohort_id} / {c.pcn_code}",
            f"{protect_value(c.previous)} -> {protect_value(c.current)}",
        )
        for c in report.out_of_bounds
    ]
    return dg.AssetCheckResult(
        passed=report.passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "previous_delivery": report.previous_date.isoformat()
            if report.previous_date
            else "none (first delivery)",
            "compared": report.compared,
            "out_of_bounds": markdown_table(("cohort / PCN", "previous -> current"), moved),
        },
    )


# Dagster 1.11+ marks these builders "superseded" by FreshnessPolicy (evaluated by a daemon
# feature still in preview); they work and are documented, so keep them without the warning
# every import (and `make ui`) would otherwise print.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=Warning)
    FRESHNESS_CHECKS = dg.build_last_update_freshness_checks(
        assets=FINAL_ASSETS, lower_bound_delta=MAX_AGE, severity=dg.AssetCheckSeverity.WARN
    )
    FRESHNESS_SENSOR = dg.build_sensor_for_freshness_checks(
        freshness_checks=FRESHNESS_CHECKS,
        name="phm_freshness",
        minimum_interval_seconds=3600,
        default_status=dg.DefaultSensorStatus.STOPPED,
    )

ASSETS = [cohort_size_history]
ASSET_CHECKS = [*KEY_CHECKS, cohort_sizes_check, *FRESHNESS_CHECKS]
SENSORS = [FRESHNESS_SENSOR]
