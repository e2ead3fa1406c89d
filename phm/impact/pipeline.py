"""The impact stage end to end, for the Dagster assets (which only call these functions).

Tables written (all keyed by person_id, none holds an NHS number or date of birth):

- ``marts.impact_interventions``: person_id, intervention, index_date, index_month;
- ``marts.impact_people``, ``marts.impact_monthly_use``: the panel inputs;
- ``marts.impact_matched_pairs``: intervention, person_id (treated), comparator_person_id,
  index_month, match_rank, distance;
- ``marts.impact_balance``: standardised mean differences before and after matching;
- ``marts.impact_match_summary``: treated, eligible, matched, unmatched per intervention;
- ``marts.impact_estimates``: intervention, outcome, window_months, method, estimate,
  ci_lower, ci_upper, n_treated, n_comparison, unit (+ group means);
- ``marts.impact_outcome_scores``: paired outcome-score statistics per PCN and measure;
- ``marts.caseload_monthly``, ``marts.impact_outreach_funnel``: caseload reporting.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import polars as pl

from phm.disclosure import DisclosurePolicy
from phm.impact.caseload import caseload_monthly, outreach_funnel
from phm.impact.estimates import PAIRS_TABLE, estimate_impact
from phm.impact.interventions import (
    build_interventions,
    build_monthly_use,
    build_people,
    treated_sql,
)
from phm.impact.matching import match_intervention
from phm.impact.outcomes import outcome_scores, paired_scores
from phm.impact.report import write_pcn_reports
from phm.warehouse import write_table


def build_panels(
    con: duckdb.DuckDBPyConnection, extract_date: dt.date, treated: str | None = None
) -> dict[str, int]:
    """The treated sets (``treated``: a query, default the enabled definitions of
    ``data/interventions/``) and the panel inputs."""
    return {
        "marts.impact_interventions": build_interventions(
            con, treated or treated_sql(con, extract_date), extract_date
        ),
        "marts.impact_people": build_people(con, extract_date),
        "marts.impact_monthly_use": build_monthly_use(con, extract_date),
    }


def build_matches(con: duckdb.DuckDBPyConnection, k: int = 1) -> dict[str, dict[str, int]]:
    ivs = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT intervention FROM marts.impact_interventions ORDER BY 1"
        ).fetchall()
    ]
    pairs, balance, summary = [], [], {}
    for iv in ivs:
        r = match_intervention(con, iv, k=k)
        pairs.append(r.pairs)
        balance.append(r.balance)
        summary.update(r.summary)
    empty_pairs = pl.DataFrame(
        schema={
            "intervention": pl.String,
            "person_id": pl.String,
            "comparator_person_id": pl.String,
            "index_month": pl.Date,
            "match_rank": pl.Int32,
            "distance": pl.Float64,
        }
    )
    write_table(con, PAIRS_TABLE, pl.concat(pairs) if pairs else empty_pairs)
    if balance:
        write_table(con, "marts.impact_balance", pl.concat(balance))
    write_table(
        con,
        "marts.impact_match_summary",
        pl.DataFrame(
            [{"intervention": k, **v} for k, v in sorted(summary.items())],
            schema={
                "intervention": pl.String,
                "treated": pl.Int64,
                "eligible": pl.Int64,
                "not_eligible": pl.Int64,
                "matched": pl.Int64,
                "unmatched": pl.Int64,
                "comparators": pl.Int64,
            },
        ),
    )
    return summary


def build_estimates(
    con: duckdb.DuckDBPyConnection, n_boot: int = 1000, seed: int = 20261101
) -> int:
    ivs = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT intervention FROM marts.impact_interventions ORDER BY 1"
        ).fetchall()
    ]
    frames = [estimate_impact(con, iv, n_boot=n_boot, seed=seed) for iv in ivs]
    df = pl.concat(frames) if frames else estimate_impact(con, "__none__", n_boot=1)
    return write_table(con, "marts.impact_estimates", df)


def build_outcome_scores(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> int:
    return write_table(
        con,
        "marts.impact_outcome_scores",
        outcome_scores(paired_scores(con), extract_date=extract_date),
    )


def build_caseload(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> dict[str, int]:
    return {
        "marts.caseload_monthly": write_table(con, "marts.caseload_monthly", caseload_monthly(con)),
        "marts.impact_outreach_funnel": write_table(
            con, "marts.impact_outreach_funnel", outreach_funnel(con, extract_date)
        ),
    }


def write_impact_exports(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    extract_date: dt.date,
    policy: DisclosurePolicy | None = None,
    pcn_codes: list[str] | None = None,
) -> dict[str, list[str]]:
    """Each PCN's (or each of ``pcn_codes``') impact_report.html and CSVs under
    ``out_dir/<pcn_code>/``."""
    pcns = dict(
        con.execute(
            "SELECT pcn_code, min(pcn_name) FROM staging.practices GROUP BY pcn_code ORDER BY 1"
        ).fetchall()
    )
    if pcn_codes is not None:
        pcns = {k: v for k, v in pcns.items() if k in set(pcn_codes)}
    summary = {
        r["intervention"]: {k: v for k, v in r.items() if k != "intervention"}
        for r in con.execute("SELECT * FROM marts.impact_match_summary ORDER BY 1").pl().to_dicts()
    }
    return write_pcn_reports(
        out_dir,
        extract_date,
        pcns=pcns,
        caseload=con.execute("SELECT * FROM marts.caseload_monthly").pl(),
        funnel=con.execute("SELECT * FROM marts.impact_outreach_funnel").pl(),
        estimates=con.execute("SELECT * FROM marts.impact_estimates").pl(),
        outcome_scores=con.execute("SELECT * FROM marts.impact_outcome_scores").pl(),
        match_summary=summary,
        policy=policy,
    )
