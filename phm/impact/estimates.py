"""Service-use impact: the naive before/after and the matched difference-in-differences.

Per person and window of w months (6 or 12), with f = the observed follow-up months
(at most w; see the censoring rule in :mod:`phm.impact.interventions`):

- *before* = use in months -w..-1 (always fully observed: eligibility needs 12 months of
  registration before the index month);
- *after* = use in months 0..f-1, scaled to the window: ``after * w / f``;
- change = after (scaled) - before, in "<unit> per person per w months".

``before_after``: the mean change of the treated people alone, with a t-based 95% interval.
It is labelled naive: people are treated when their use peaks, so part of any fall is
regression to the mean.

``matched_did``: for each matched pair, f is the follow-up both members are observed (and
the comparator not yet treated); the pair's difference is the treated change minus the
comparator change over the same calendar months. A treated person's difference is the
mean over their comparators; the estimate is the mean over treated people. 95% interval:
percentile bootstrap resampling treated people with their matched comparators (matched
sets), ``n_boot`` replicates from ``numpy.random.default_rng(seed)``, so it is
deterministic. Caveat (docs/impact.md): with matching with replacement the bootstrap
ignores comparators shared between sets, so the interval may be slightly too narrow.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
from scipy import stats

from phm.impact.interventions import (
    INTERVENTIONS_TABLE,
    MONTHLY_USE_TABLE,
    OUTCOMES,
    PEOPLE_TABLE,
    PRE_MONTHS,
    WINDOWS,
    observed_months_sql,
)

PAIRS_TABLE = "marts.impact_matched_pairs"
ESTIMATE_COLUMNS = [
    "intervention",
    "outcome",
    "window_months",
    "method",
    "estimate",
    "ci_lower",
    "ci_upper",
    "n_treated",
    "n_comparison",
    "unit",
    "mean_before_treated",
    "mean_after_treated",
    "mean_before_comparison",
    "mean_after_comparison",
]


def _windows_sql() -> str:
    return "(VALUES " + ", ".join(f"({w})" for w in WINDOWS) + ") w(w)"


def _sums(prefix: str) -> str:
    parts = []
    for o in OUTCOMES:
        parts.append(
            f"CAST(coalesce(sum(u.{o}) FILTER (WHERE u.month < m0), 0) AS DOUBLE) AS {prefix}pre_{o}"
        )
        parts.append(
            f"CAST(coalesce(sum(u.{o}) FILTER (WHERE u.month >= m0), 0) AS DOUBLE) AS {prefix}post_{o}"
        )
    return ", ".join(parts)


def treated_windows(con: duckdb.DuckDBPyConnection, intervention: str) -> pl.DataFrame:
    """Per eligible treated person and window: follow-up months ``f`` and before/after sums."""
    return con.execute(
        f"""
        WITH t AS (
            SELECT t.person_id, t.index_month AS m0, w.w,
                   least(w.w, {observed_months_sql("t.index_month", "p.censor_date")}) AS f
            FROM {INTERVENTIONS_TABLE} t JOIN {PEOPLE_TABLE} p USING (person_id)
            CROSS JOIN {_windows_sql()}
            WHERE t.intervention = ?
              AND p.registration_start <= t.index_month - INTERVAL {PRE_MONTHS} MONTH
              AND {observed_months_sql("t.index_month", "p.censor_date")} >= 1)
        SELECT t.person_id, t.w AS window_months, t.f AS follow_months, {_sums("")}
        FROM t LEFT JOIN {MONTHLY_USE_TABLE} u
          ON u.person_id = t.person_id AND u.month >= t.m0 - to_months(t.w)
         AND u.month < t.m0 + to_months(t.f)
        GROUP BY ALL ORDER BY t.person_id, t.w
        """,
        [intervention],
    ).pl()


def pair_windows(
    con: duckdb.DuckDBPyConnection, intervention: str, pairs_table: str = PAIRS_TABLE
) -> pl.DataFrame:
    """Per matched pair and window: joint follow-up ``f`` and both members' sums
    (``t_pre_<outcome>``, ``t_post_<outcome>``, ``c_pre_<outcome>``, ``c_post_<outcome>``)."""
    base = con.execute(
        f"""
        WITH pw AS (
            SELECT p.person_id, p.comparator_person_id, p.index_month AS m0, w.w,
                   least(w.w, {observed_months_sql("p.index_month", "t.censor_date")},
                         {observed_months_sql("p.index_month", "c.censor_date")},
                         coalesce(date_diff('month', p.index_month, ct.index_month), 100000))
                       AS f
            FROM {pairs_table} p CROSS JOIN {_windows_sql()}
            JOIN {PEOPLE_TABLE} t ON t.person_id = p.person_id
            JOIN {PEOPLE_TABLE} c ON c.person_id = p.comparator_person_id
            LEFT JOIN {INTERVENTIONS_TABLE} ct
              ON ct.person_id = p.comparator_person_id AND ct.intervention = p.intervention
            WHERE p.intervention = ?),
        mem AS (
            SELECT *, person_id AS pid, 't' AS role FROM pw
            UNION ALL SELECT *, comparator_person_id AS pid, 'c' AS role FROM pw)
        SELECT mem.person_id, mem.comparator_person_id, mem.w AS window_months,
               mem.f AS follow_months, mem.role, {_sums("")}
        FROM mem LEFT JOIN {MONTHLY_USE_TABLE} u
          ON u.person_id = mem.pid AND u.month >= mem.m0 - to_months(mem.w)
         AND u.month < mem.m0 + to_months(mem.f)
        GROUP BY ALL
        """,
        [intervention],
    ).pl()
    key = ["person_id", "comparator_person_id", "window_months", "follow_months"]
    val = [c for c in base.columns if c not in (*key, "role")]
    t = base.filter(pl.col("role") == "t").select(*key, *(pl.col(c).alias(f"t_{c}") for c in val))
    c = base.filter(pl.col("role") == "c").select(*key, *(pl.col(c).alias(f"c_{c}") for c in val))
    return t.join(c, on=key, how="inner").sort(key)


def scaled_change(before, after, follow, window):
    """after scaled to the window minus before (per person per window)."""
    before, after, follow = (np.asarray(a, dtype=float) for a in (before, after, follow))
    return after * window / follow - before


def mean_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean with a t-based interval (nan when fewer than two values)."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return (np.nan, np.nan, np.nan)
    m = float(x.mean())
    if x.size < 2:
        return (m, np.nan, np.nan)
    se = float(x.std(ddof=1) / np.sqrt(x.size))
    h = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * se)
    return (m, m - h, m + h)


def bootstrap_mean_ci(
    x: np.ndarray, n_boot: int = 1000, seed: int = 20261101, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean with a percentile bootstrap interval over the units of ``x``; deterministic."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // max(x.size, 1))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return (float(x.mean()), float(lo), float(hi))


def did_per_treated(pairs: pl.DataFrame, outcome: str, window: int) -> pl.DataFrame:
    """Per treated person: the DiD averaged over their comparators, and the group means."""
    w = pairs.filter(pl.col("window_months") == window)
    f = pl.col("follow_months")
    return (
        w.with_columns(
            (pl.col(f"t_post_{outcome}") * window / f).alias("t_after"),
            pl.col(f"t_pre_{outcome}").alias("t_before"),
            (pl.col(f"c_post_{outcome}") * window / f).alias("c_after"),
            pl.col(f"c_pre_{outcome}").alias("c_before"),
        )
        .with_columns(
            (
                (pl.col("t_after") - pl.col("t_before")) - (pl.col("c_after") - pl.col("c_before"))
            ).alias("did")
        )
        .group_by("person_id")
        .agg(pl.col("did", "t_before", "t_after", "c_before", "c_after").mean())
        .sort("person_id")
    )


def estimate_impact(
    con: duckdb.DuckDBPyConnection,
    intervention: str,
    pairs_table: str = PAIRS_TABLE,
    n_boot: int = 1000,
    seed: int = 20261101,
) -> pl.DataFrame:
    """``marts.impact_estimates`` rows for one intervention (both methods, every outcome and
    window)."""
    # complete windows only (docs/impact.md): scaling a short follow-up to the window would
    # multiply the index month, which holds the top of the peak of need, by w / f
    complete = pl.col("follow_months") == pl.col("window_months")
    naive = treated_windows(con, intervention).filter(complete)
    pairs = pair_windows(con, intervention, pairs_table).filter(complete)
    rows = []
    for o, (_label, unit) in OUTCOMES.items():
        for w in WINDOWS:
            nv = naive.filter(pl.col("window_months") == w)
            ch = scaled_change(nv[f"pre_{o}"], nv[f"post_{o}"], nv["follow_months"], w)
            est, lo, hi = mean_ci(ch)
            after = (nv[f"post_{o}"] * w / nv["follow_months"]).to_numpy()
            rows.append(
                {
                    "outcome": o,
                    "window_months": w,
                    "method": "before_after",
                    "estimate": est,
                    "ci_lower": lo,
                    "ci_upper": hi,
                    "n_treated": nv.height,
                    "n_comparison": 0,
                    "unit": f"{unit} per {w} months",
                    "mean_before_treated": float(nv[f"pre_{o}"].mean()) if nv.height else None,
                    "mean_after_treated": float(after.mean()) if nv.height else None,
                    "mean_before_comparison": None,
                    "mean_after_comparison": None,
                }
            )
            d = did_per_treated(pairs, o, w)
            est, lo, hi = bootstrap_mean_ci(d["did"].to_numpy(), n_boot=n_boot, seed=seed)
            n_comp = pairs.filter(pl.col("window_months") == w)["comparator_person_id"].n_unique()
            rows.append(
                {
                    "outcome": o,
                    "window_months": w,
                    "method": "matched_did",
                    "estimate": est,
                    "ci_lower": lo,
                    "ci_upper": hi,
                    "n_treated": d.height,
                    "n_comparison": n_comp,
                    "unit": f"{unit} per {w} months",
                    "mean_before_treated": d["t_before"].mean(),
                    "mean_after_treated": d["t_after"].mean(),
                    "mean_before_comparison": d["c_before"].mean(),
                    "mean_after_comparison": d["c_after"].mean(),
                }
            )
    schema = {
        "intervention": pl.String,
        "outcome": pl.String,
        "window_months": pl.Int32,
        "method": pl.String,
        "estimate": pl.Float64,
        "ci_lower": pl.Float64,
        "ci_upper": pl.Float64,
        "n_treated": pl.Int64,
        "n_comparison": pl.Int64,
        "unit": pl.String,
        "mean_before_treated": pl.Float64,
        "mean_after_treated": pl.Float64,
        "mean_before_comparison": pl.Float64,
        "mean_after_comparison": pl.Float64,
    }
    out = pl.DataFrame([{"intervention": intervention, **r} for r in rows], schema=schema)
    return out.with_columns(pl.col(pl.Float64).fill_nan(None)).select(ESTIMATE_COLUMNS)
