"""Cohorts: who each PCN should contact, and why (definitions in data/cohorts/)."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.cohorts import build_cohorts, load_cohorts
from phm.disclosure import protect_value
from phm.warehouse import current_extract_date


def _cohort_list() -> str:
    return "\n".join(f"- `{c.id}`: {c.title}. {c.description}" for c in load_cohorts())


@dg.asset(
    key=["marts", "cohort_members"],
    group_name="cohorts",
    deps=[
        dg.AssetKey(["marts", "patient_measures"]),
        dg.AssetKey(["reference", "codelists"]),
        dg.AssetKey(["marts", "risk_scores"]),
        dg.AssetKey(["marts", "segments"]),
    ],
    kinds={"duckdb"},
    description=(
        "`marts.cohort_members` (cohort_id, person_id, rank, reasons): the members of every "
        "cohort defined in data/cohorts/*.yaml, most in need first, each with the reasons "
        "they qualified. `marts.cohort_definitions` describes the cohorts.\n\n" + _cohort_list()
    ),
)
def cohort_members(
    context: dg.AssetExecutionContext, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        counts = build_cohorts(con, current_extract_date(con))
    # cohort sizes are published counts: through the disclosure-control function
    sizes = {cid: protect_value(n) for cid, n in counts.items()}
    context.log.info(f"cohort sizes (disclosure-controlled): {sizes}")
    table = "\n".join(
        ["| cohort | members |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in sizes.items()]
    )
    return dg.MaterializeResult(metadata={"cohort_sizes": dg.MetadataValue.md(table)})
