"""Outcome scores: paired change from baseline to the 6-month follow-up, per measure.

Only referred people have scores, so there is no comparison group: these are within-person
changes and include regression to the mean and any natural recovery. For each measure
(definitions and minimal important differences in data/definitions/outcome_measures.yaml):

- ``n_baseline``: referrals with a baseline score whose follow-up is due (baseline at least
  210 days before the extract date); ``n_paired``: of those, with a follow-up score; ``completion_rate`` = n_paired / n_baseline, stated beside every figure because
  people lost to follow-up are often those doing worse;
- mean change (follow-up minus baseline) with a t-based 95% interval; paired t-test
  (``scipy.stats.ttest_rel``) and Wilcoxon signed-rank (``scipy.stats.wilcoxon``, zero
  differences dropped, the scipy default) two-sided p-values;
- standardised effect size Cohen's d_z = mean change / SD of the changes;
- share improved by at least the MID (in the better direction), where one is published.

The unit of analysis is the referral (a person referred twice counts twice); the first
baseline and the last follow-up recorded for a referral and measure are used.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import yaml
from scipy import stats

from phm.paths import REPO_ROOT

MEASURES_PATH = REPO_ROOT / "data" / "definitions" / "outcome_measures.yaml"


@dataclass(frozen=True)
class OutcomeMeasure:
    id: str
    title: str
    min: float
    max: float
    higher_is_better: bool
    mid: float | None
    mid_source: str


def load_outcome_measures(path: Path | None = None) -> list[OutcomeMeasure]:
    raw = yaml.safe_load(Path(path or MEASURES_PATH).read_text(encoding="utf-8"))
    return [
        OutcomeMeasure(
            id=k,
            title=v["title"],
            min=float(v["min"]),
            max=float(v["max"]),
            higher_is_better=bool(v["higher_is_better"]),
            mid=None if v.get("mid") is None else float(v["mid"]),
            mid_source=" ".join(str(v["mid_source"]).split()),
        )
        for k, v in raw["measures"].items()
    ]


def paired_stats(
    baseline, followup, *, higher_is_better: bool = True, mid: float | None = None
) -> dict[str, float | int | None]:
    """Paired statistics of ``followup - baseline`` (pairs with a missing value dropped)."""
    b = np.asarray(baseline, dtype=float)
    f = np.asarray(followup, dtype=float)
    ok = ~(np.isnan(b) | np.isnan(f))
    d = f[ok] - b[ok]
    n = int(d.size)
    out: dict[str, float | int | None] = {
        "n_paired": n,
        "mean_baseline": float(b[ok].mean()) if n else None,
        "mean_followup": float(f[ok].mean()) if n else None,
        "mean_change": float(d.mean()) if n else None,
        "ci_lower": None,
        "ci_upper": None,
        "sd_change": None,
        "t_test_p": None,
        "wilcoxon_p": None,
        "cohens_dz": None,
        "n_improved_mid": None,
        "share_improved_mid": None,
    }
    if n >= 2:
        sd = float(d.std(ddof=1))
        se = sd / np.sqrt(n)
        h = float(stats.t.ppf(0.975, n - 1) * se)
        out.update(ci_lower=out["mean_change"] - h, ci_upper=out["mean_change"] + h, sd_change=sd)
        if sd > 0:
            out["t_test_p"] = float(stats.ttest_rel(f[ok], b[ok]).pvalue)
            out["cohens_dz"] = float(d.mean() / sd)
        if np.any(d != 0):
            out["wilcoxon_p"] = float(stats.wilcoxon(f[ok], b[ok]).pvalue)
    if mid is not None and n:
        better = d if higher_is_better else -d
        k = int((better >= mid).sum())
        out.update(n_improved_mid=k, share_improved_mid=k / n)
    return out


def paired_scores(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per referral and measure: person_id, pcn_code, baseline, followup (null when
    missing). Needs staging.sp_outcomes, staging.sp_referrals and marts.impact_people (or
    marts.patient_measures) for the PCN."""
    return con.execute(
        """
        WITH s AS (
            SELECT referral_id, measure,
                   min(recorded_date) FILTER (WHERE timepoint = 'baseline') AS baseline_date,
                   arg_min(score, recorded_date) FILTER (WHERE timepoint = 'baseline')
                       AS baseline,
                   arg_max(score, recorded_date) FILTER (WHERE timepoint = 'followup_6m')
                       AS followup
            FROM staging.sp_outcomes GROUP BY referral_id, measure)
        SELECT s.referral_id, s.measure, i.person_id, p.pcn_code, s.baseline_date,
               CAST(s.baseline AS DOUBLE) AS baseline, CAST(s.followup AS DOUBLE) AS followup
        FROM s JOIN staging.sp_referrals r USING (referral_id)
        JOIN marts.person_identity i ON i.nhs_number = r.nhs_number
        LEFT JOIN marts.impact_people p ON p.person_id = i.person_id
        ORDER BY s.measure, s.referral_id
        """
    ).pl()


#: a follow-up is due this many days after the baseline (6 months = 182 days, plus four
#: weeks' grace for late questionnaires)
FOLLOWUP_DUE_DAYS = 210


def outcome_scores(
    scores: pl.DataFrame,
    measures: list[OutcomeMeasure] | None = None,
    by_pcn: bool = True,
    extract_date: dt.date | None = None,
    due_days: int = FOLLOWUP_DUE_DAYS,
) -> pl.DataFrame:
    """Per measure (and per PCN, plus ``pcn_code`` = ``ALL``): the paired statistics with
    the completion rate, the MID and its source.

    With ``extract_date``, only referrals whose follow-up is due (baseline recorded at least
    ``due_days`` days before the extract date) count, so that recent referrals do not lower
    the completion rate; ``n_not_yet_due`` says how many baselines were left out."""
    measures = measures or load_outcome_measures()
    not_due = pl.DataFrame(schema={"pcn_code": pl.String, "measure": pl.String})
    if extract_date is not None:
        cutoff = extract_date - dt.timedelta(days=due_days)
        is_due = pl.col("baseline_date").is_null() | (pl.col("baseline_date") <= cutoff)
        not_due = scores.filter(~is_due & pl.col("baseline").is_not_null())
        scores = scores.filter(is_due)
    groups = [("ALL", scores)]
    if by_pcn:
        groups += [
            (pcn, scores.filter(pl.col("pcn_code") == pcn))
            for pcn in sorted(scores["pcn_code"].drop_nulls().unique().to_list())
        ]
    rows = []
    for pcn, df in groups:
        for m in measures:
            x = df.filter(pl.col("measure") == m.id)
            with_base = x.filter(pl.col("baseline").is_not_null())
            st = paired_stats(
                with_base["baseline"].to_numpy(),
                with_base["followup"].fill_null(np.nan).to_numpy(),
                higher_is_better=m.higher_is_better,
                mid=m.mid,
            )
            n_base = with_base.height
            nd = not_due.filter(pl.col("measure") == m.id)
            if pcn != "ALL":
                nd = nd.filter(pl.col("pcn_code") == pcn)
            rows.append(
                {
                    "pcn_code": pcn,
                    "measure": m.id,
                    "title": m.title,
                    "higher_is_better": m.higher_is_better,
                    "n_not_yet_due": nd.height,
                    "n_baseline": n_base,
                    **st,
                    "completion_rate": st["n_paired"] / n_base if n_base else None,
                    "mid": m.mid,
                    "mid_source": m.mid_source,
                }
            )
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("n_not_yet_due", "n_baseline", "n_paired").cast(pl.Int64)
    )
