"""Impact and caseload: what social prescribing did, honestly, and what the caseload looks
like. Thin wrappers over :mod:`phm.impact.pipeline` (methods: docs/impact.md).
Interventions are data: ``data/interventions/*.yaml``.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.disclosure import protect_value
from phm.impact.pipeline import (
    build_caseload,
    build_estimates,
    build_matches,
    build_outcome_scores,
    build_panels,
    write_impact_exports,
)
from phm.warehouse import current_extract_date
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import PHMSettings

GROUP = "impact"
STAGING = [
    dg.AssetKey(["staging", t])
    for t in ("gp_patients", "practices", "gp_appointments", "sus_ecds", "sus_apc", "sp_referrals")
]


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="impact_interventions",
    group_name=GROUP,
    can_subset=False,
    specs=[
        dg.AssetSpec(
            ["marts", "impact_interventions"],
            deps=[
                *STAGING,
                dg.AssetKey(["marts", "person_identity"]),
                dg.AssetKey(["marts", "patient_measures"]),
                dg.AssetKey(["reference", "codelists"]),  # coded interventions' events
            ],
            kinds={"duckdb"},
            description=(
                "`marts.impact_interventions` (person_id, intervention, index_date, "
                "index_month): the treated set of each intervention of data/interventions/ "
                "(social prescribing: each person's earliest first contact)."
            ),
        ),
        dg.AssetSpec(
            ["marts", "impact_people"],
            kinds={"duckdb"},
            description=(
                "`marts.impact_people`: per person the censor date and the matching covariates "
                "(no date of birth)."
            ),
        ),
        dg.AssetSpec(
            ["marts", "impact_monthly_use"],
            kinds={"duckdb"},
            description=(
                "`marts.impact_monthly_use`: practice appointments attended, A&E attendances, "
                "emergency admissions and bed days per person and calendar month."
            ),
        ),
    ],
)
def impact_interventions(warehouse: DuckDBResource):
    with warehouse.get_connection() as con:
        rows = build_panels(con, current_extract_date(con))
    meta = {k: protect_value(v) for k, v in rows.items()}
    yield dg.MaterializeResult(asset_key=["marts", "impact_interventions"], metadata=meta)
    yield dg.MaterializeResult(asset_key=["marts", "impact_people"])
    yield dg.MaterializeResult(asset_key=["marts", "impact_monthly_use"])


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="impact_matched_pairs",
    group_name=GROUP,
    can_subset=False,
    specs=[
        dg.AssetSpec(
            ["marts", "impact_matched_pairs"],
            deps=[dg.AssetKey(["marts", "impact_interventions"])],
            kinds={"duckdb"},
            description=(
                "`marts.impact_matched_pairs` (intervention, person_id, comparator_person_id, "
                "index_month, match_rank, distance): risk-set matching at the index month on "
                "sex, age band, IMD quintile, LTC band and eFI category, then nearest neighbour "
                "on the monthly pre-period use, with replacement."
            ),
        ),
        dg.AssetSpec(
            ["marts", "impact_balance"],
            kinds={"duckdb"},
            description=(
                "`marts.impact_balance`: standardised mean differences of each matching "
                "covariate before and after matching."
            ),
        ),
        dg.AssetSpec(
            ["marts", "impact_match_summary"],
            kinds={"duckdb"},
            description="`marts.impact_match_summary`: treated, eligible and matched counts.",
        ),
    ],
)
def impact_matched_pairs(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
    with warehouse.get_connection() as con:
        summary = build_matches(con)
    shown = {iv: {k: protect_value(v) for k, v in s.items()} for iv, s in summary.items()}
    context.log.info(f"matching (disclosure-controlled): {shown}")
    yield dg.MaterializeResult(
        asset_key=["marts", "impact_matched_pairs"],
        metadata={"matching": dg.MetadataValue.json(shown)},
    )
    yield dg.MaterializeResult(asset_key=["marts", "impact_balance"])
    yield dg.MaterializeResult(asset_key=["marts", "impact_match_summary"])


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["marts", "impact_estimates"],
    group_name=GROUP,
    deps=[dg.AssetKey(["marts", "impact_matched_pairs"])],
    kinds={"duckdb"},
    description=(
        "`marts.impact_estimates` (intervention, outcome, window_months, method, estimate, "
        "ci_lower, ci_upper, n_treated, n_comparison, unit): the naive before/after "
        "(`before_after`) and the matched difference-in-differences (`matched_did`, "
        "bootstrap 95% interval over matched sets, fixed seed) for 6 and 12 months."
    ),
)
def impact_estimates(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        rows = build_estimates(con)
    return dg.MaterializeResult(metadata={"rows": rows})


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["marts", "impact_outcome_scores"],
    group_name=GROUP,
    deps=[
        dg.AssetKey(["marts", "impact_interventions"]),
        dg.AssetKey(["staging", "sp_outcomes"]),
    ],
    kinds={"duckdb"},
    description=(
        "`marts.impact_outcome_scores`: per PCN (and ALL) and measure, the paired change from "
        "baseline to 6 months with its 95% interval, paired t-test and Wilcoxon p-values, "
        "Cohen's d_z, the share improving by at least the published MID, and the completion "
        "rate (data/definitions/outcome_measures.yaml)."
    ),
)
def impact_outcome_scores(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        rows = build_outcome_scores(con, current_extract_date(con))
    return dg.MaterializeResult(metadata={"rows": rows})


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="caseload_monthly",
    group_name=GROUP,
    can_subset=False,
    specs=[
        dg.AssetSpec(
            ["marts", "caseload_monthly"],
            deps=[
                dg.AssetKey(["marts", "impact_interventions"]),
                dg.AssetKey(["marts", "cohort_members"]),
            ],
            kinds={"duckdb"},
            description=(
                "`marts.caseload_monthly` (pcn_code, month, dimension, category, n, "
                "denominator, value): social prescribing referrals per PCN and month by "
                "source, reason, status, contact attempts and days to first contact."
            ),
        ),
        dg.AssetSpec(
            ["marts", "impact_outreach_funnel"],
            kinds={"duckdb"},
            description=(
                "`marts.impact_outreach_funnel`: each cohort's people identified, referred, "
                "contacted and engaged, per PCN and ALL."
            ),
        ),
    ],
)
def caseload_monthly(warehouse: DuckDBResource):
    with warehouse.get_connection() as con:
        rows = build_caseload(con, current_extract_date(con))
    yield dg.MaterializeResult(asset_key=["marts", "caseload_monthly"], metadata=rows)
    yield dg.MaterializeResult(asset_key=["marts", "impact_outreach_funnel"])


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["exports", "impact_reports"],
    group_name=GROUP,
    deps=[
        dg.AssetKey(["marts", "impact_estimates"]),
        dg.AssetKey(["marts", "impact_outcome_scores"]),
        dg.AssetKey(["marts", "caseload_monthly"]),
        # written into the same PCN folders; the impact files are added to its manifest.json
        dg.AssetKey(["exports", "pcn_exports"]),
    ],
    kinds={"html", "csv"},
    description=(
        "For each PCN, under exports/<extract_date>/<pcn_code>/: impact_report.html "
        "(self-contained, no JavaScript, charts embedded) and the same figures as CSV "
        "(impact_caseload.csv, impact_outreach_funnel.csv, impact_estimates.csv, "
        "impact_outcome_scores.csv), each listed in the PCN's manifest.json. Every count "
        "disclosure-controlled; figures on fewer than 10 people not shown."
    ),
)
def impact_reports(settings: PHMSettings, warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        out = settings.exports(extract_date.isoformat())
        written = write_impact_exports(con, out, extract_date)
    return dg.MaterializeResult(
        metadata={"pcns": len(written), "folder": dg.MetadataValue.path(str(out))}
    )
