"""Cohorts: who each PCN should contact, and why (definitions in data/cohorts/)."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.cohorts import build_cohorts, load_cohorts
from phm.disclosure import protect_value
from phm.warehouse import current_extract_date
from pipelines.assets._metadata import markdown_table
from pipelines.partitions import DELIVERY_PARTITIONS


def _cohort_list() -> str:
    return "\n".join(f"- `{c.id}`: {c.title}. {c.description}" for c in load_cohorts())


_DEPS = [
    dg.AssetKey(["marts", "patient_measures"]),
    dg.AssetKey(["reference", "codelists"]),
    dg.AssetKey(["marts", "risk_scores"]),
    dg.AssetKey(["marts", "segments"]),
    dg.AssetKey(["staging", "apc_spells"]),  # hospital events of the rules (phm.hospital)
]


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="cohort_members",
    group_name="cohorts",
    can_subset=False,
    specs=[
        dg.AssetSpec(
            ["marts", "cohort_members"],
            deps=_DEPS,
            kinds={"duckdb"},
            description=(
                "`marts.cohort_members` (cohort_id, person_id, rank, reasons): the members of "
                "every cohort defined in data/cohorts/*.yaml, most in need first, each with the "
                "reasons they qualified.\n\n" + _cohort_list()
            ),
        ),
        dg.AssetSpec(
            ["marts", "cohort_definitions"],
            kinds={"duckdb"},
            description=(
                "`marts.cohort_definitions`: each cohort of data/cohorts/*.yaml (id, title, "
                "description, source, file, sort order and the extra columns of its list)."
            ),
        ),
    ],
)
def cohort_members(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
    """Cohort members and definitions (``phm.cohorts.build_cohorts``)."""
    with warehouse.get_connection() as con:
        counts = build_cohorts(con, current_extract_date(con))
    # cohort sizes are published counts: through the disclosure-control function
    sizes = {cid: protect_value(n) for cid, n in counts.items()}
    context.log.info(f"cohort sizes (disclosure-controlled): {sizes}")
    yield dg.MaterializeResult(
        asset_key=["marts", "cohort_members"],
        metadata={"cohort_sizes": markdown_table(("cohort", "members"), sizes)},
    )
    yield dg.MaterializeResult(
        asset_key=["marts", "cohort_definitions"], metadata={"cohorts": len(counts)}
    )
