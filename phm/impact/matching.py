"""Risk-set matching on the pre-period trajectory.

For each treated person, at their index month, the candidates are everyone eligible then
(registered for the 12 months before, observed in the index month; see
:mod:`phm.impact.interventions`) and not treated by then: people treated later are valid
comparators until their own index month (risk-set sampling), when the pair's follow-up stops.

Exact match on sex, age band (at the index month), IMD quintile, LTC band (0, 1, 2-3, 4+)
and eFI category ("unknown" is a band of its own), then the ``k`` nearest neighbours
(Euclidean) on the monthly pre-period use vector: each outcome in each of the 12 months
before, each column divided by its standard deviation among everyone eligible that month,
so that a peak is matched by a peak. Matching is *with replacement*: a comparator may serve
several treated people (better matches; the bootstrap resamples treated people with their
matches). Ties are broken by the candidates' order (sorted by person_id), so the result is
deterministic. Treated people with no candidate in their stratum are reported, not dropped
silently.

Vectorised: one DuckDB query per index month and one exact numpy nearest-neighbour search
per stratum (:func:`nearest`; sklearn's ``NearestNeighbors`` gives the same neighbours but
its per-call thread start-up dominated with hundreds of small strata); no Python loop over
people.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl

from phm.impact.interventions import (
    INTERVENTIONS_TABLE,
    OUTCOMES,
    PRE_MONTHS,
    eligible_sql,
    pre_use_sql,
)

STRATA = ["sex", "age_band", "imd_band", "ltc_band", "efi_band"]


def pre_vector_columns() -> list[str]:
    return [f"{o}_m{k}" for o in OUTCOMES for k in range(1, PRE_MONTHS + 1)]


def balance_covariates() -> list[str]:
    return ["age", "female", "imd_quintile", "ltc_count", *(f"{o}_pre12" for o in OUTCOMES)]


@dataclass
class MatchResult:
    pairs: pl.DataFrame
    balance: pl.DataFrame
    summary: dict[str, dict[str, int]] = field(default_factory=dict)


def _candidate_moments(
    con: duckdb.DuckDBPyConnection, index_month
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Sums for the before-matching balance over every candidate in ``_impact_elig`` (all
    strata), computed in DuckDB from the sparse monthly use: (number of candidates, and per
    balance column: non-null count, sum, sum of squares)."""
    n = con.execute("SELECT count(*) FROM _impact_elig WHERE NOT treated").fetchone()[0]
    demo = con.execute(
        """SELECT count(age), sum(age), sum(age * age),
                  count(*), sum(CAST(sex = 'F' AS INTEGER)), sum(CAST(sex = 'F' AS INTEGER)),
                  count(imd_quintile), sum(imd_quintile), sum(imd_quintile * imd_quintile),
                  count(ltc_count), sum(ltc_count), sum(ltc_count * ltc_count)
           FROM _impact_elig WHERE NOT treated"""
    ).fetchone()
    demo = np.array([0.0 if v is None else float(v) for v in demo]).reshape(4, 3)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _impact_cuse AS "
        + pre_use_sql("(SELECT person_id FROM _impact_elig WHERE NOT treated)", index_month)
    )
    tot = con.execute(
        "SELECT "
        + ", ".join(f"coalesce(sum(t_{o}), 0), coalesce(sum(t_{o} * t_{o}), 0)" for o in OUTCOMES)
        + " FROM (SELECT person_id, "
        + ", ".join(f"CAST(sum({o}) AS DOUBLE) AS t_{o}" for o in OUTCOMES)
        + " FROM _impact_cuse GROUP BY person_id)"
    ).fetchone()
    monthly = dict(
        ((r[0], j), (r[1 + 2 * j], r[2 + 2 * j]))
        for r in con.execute(
            "SELECT months_before, "
            + ", ".join(
                f"CAST(sum({o}) AS DOUBLE), CAST(sum({o} * {o}) AS DOUBLE)" for o in OUTCOMES
            )
            + " FROM _impact_cuse GROUP BY months_before"
        ).fetchall()
        for j in range(len(OUTCOMES))
    )
    con.execute("DROP TABLE IF EXISTS _impact_cuse")
    w = [*demo[:, 0], *([float(n)] * len(OUTCOMES))]
    s1 = [*demo[:, 1], *(float(tot[2 * j]) for j in range(len(OUTCOMES)))]
    s2 = [*demo[:, 2], *(float(tot[2 * j + 1]) for j in range(len(OUTCOMES)))]
    for j in range(len(OUTCOMES)):
        for k in range(1, PRE_MONTHS + 1):
            a, b = monthly.get((k, j), (0.0, 0.0))
            w.append(float(n))
            s1.append(a)
            s2.append(b)
    return n, np.array(w), np.array(s1), np.array(s2)


def pre_period_pool(
    con: duckdb.DuckDBPyConnection, intervention: str, index_month
) -> tuple[pl.DataFrame, tuple[int, np.ndarray, np.ndarray, np.ndarray] | None]:
    """The people eligible at ``index_month`` in the strata of its treated people, with their
    strata and pre-period vector (``<outcome>_m<k>``: use k months before the index month)
    and 12-month totals; and the before-matching balance sums over every candidate (all
    strata; None when nobody is treated that month). Only the treated people's strata are
    made dense, so memory follows the treated, not the population."""
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _impact_elig AS {eligible_sql(index_month)}",
        [intervention],
    )
    strata = ", ".join(STRATA)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _impact_pool AS
            SELECT e.* FROM _impact_elig e
            SEMI JOIN (SELECT DISTINCT {strata} FROM _impact_elig WHERE treated) s
            USING ({strata})"""
    )
    moments = None
    if con.execute("SELECT count(*) FROM _impact_pool").fetchone()[0]:
        moments = _candidate_moments(con, index_month)
    elig = con.execute("SELECT * FROM _impact_pool ORDER BY person_id").pl()
    use = con.execute(pre_use_sql("_impact_pool", index_month)).pl()
    for t in ("_impact_elig", "_impact_pool"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    x = np.zeros((elig.height, len(OUTCOMES) * PRE_MONTHS))
    if use.height:
        rows = use.join(elig.select("person_id").with_row_index("_row"), on="person_id").select(
            "_row", "months_before", *OUTCOMES
        )
        r = rows["_row"].to_numpy().astype(np.int64)
        k = rows["months_before"].to_numpy().astype(np.int64) - 1
        for j, o in enumerate(OUTCOMES):
            x[r, j * PRE_MONTHS + k] = rows[o].to_numpy()
    vec = pl.DataFrame(x, schema=pre_vector_columns())
    return _add_derived(pl.concat([elig, vec], how="horizontal")), moments


def _add_derived(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(
        (pl.col("sex") == "F").cast(pl.Float64).alias("female"),
        *(
            pl.sum_horizontal([f"{o}_m{k}" for k in range(1, PRE_MONTHS + 1)]).alias(f"{o}_pre12")
            for o in OUTCOMES
        ),
    )


#: weight of each of the 3 months just before the index month (where the peak that
#: prompted the referral usually is) relative to earlier months
RECENT_WEIGHT = 10.0
#: weight of each outcome's 12-month total
TOTAL_WEIGHT = 10.0


def feature_matrix(
    pool: pl.DataFrame, recent_weight: float = RECENT_WEIGHT, total_weight: float = TOTAL_WEIGHT
) -> np.ndarray:
    """The matching features: every outcome's use in each of the 12 months before the index
    month, each column divided by its standard deviation in the pool (everyone eligible that
    month in the treated people's strata); the 3 most recent
    months weighted by ``recent_weight`` (so that a peak is matched by a peak in the same
    month) and each outcome's 12-month total, likewise standardised, by ``total_weight``
    (so that the overall level is matched too)."""
    monthly = pool.select(pre_vector_columns()).to_numpy().astype(float)
    totals = np.column_stack([pool[f"{o}_pre12"].to_numpy() for o in OUTCOMES]).astype(float)
    x = np.hstack([monthly, totals])
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    x = x / sd
    w = np.ones(x.shape[1])
    for j in range(len(OUTCOMES)):
        w[j * PRE_MONTHS : j * PRE_MONTHS + 3] = recent_weight
    w[monthly.shape[1] :] = total_weight
    return x * w


def nearest(xt: np.ndarray, xc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``xc`` (Euclidean) for each row of ``xt``: (distances,
    indices), ties broken by the lower index. Exact and deterministic; chunked over ``xt``
    so that memory stays bounded."""
    nt, nc = xt.shape[0], xc.shape[0]
    dist = np.empty((nt, k))
    idx = np.empty((nt, k), dtype=np.int64)
    step = max(1, 4_000_000 // max(nc * max(xt.shape[1], 1), 1))
    for a in range(0, nt, step):
        b = min(nt, a + step)
        d2 = ((xt[a:b, None, :] - xc[None, :, :]) ** 2).sum(axis=2)
        if k == 1:  # argmin returns the first (lowest-index) minimum, like a stable sort
            order = np.argmin(d2, axis=1)[:, None]
        else:
            order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        idx[a:b] = order
        dist[a:b] = np.sqrt(np.take_along_axis(d2, order, axis=1))
    return dist, idx


def match_frame(
    pool: pl.DataFrame, k: int = 1, strata: list[str] | None = None
) -> tuple[pl.DataFrame, int]:
    """Match the ``treated`` rows of one index month's pool to its other rows.

    Returns (pairs: person_id, comparator_person_id, match_rank, distance; number of treated
    people with no candidate in their stratum).
    """
    strata = STRATA if strata is None else strata
    pool = pool.sort("person_id")
    x_all = feature_matrix(pool)
    out = []
    unmatched = 0
    key = pool.select(strata).with_row_index("_row")
    treated_mask = pool["treated"].to_numpy()
    ids = pool["person_id"].to_numpy()
    # only the strata holding a treated person
    key = key.join(pool.filter(pl.col("treated")).select(strata).unique(), on=strata, how="semi")
    for _, grp in key.group_by(strata, maintain_order=True):
        rows = grp["_row"].to_numpy()
        t_rows = rows[treated_mask[rows]]
        c_rows = rows[~treated_mask[rows]]
        if len(t_rows) == 0:
            continue
        if len(c_rows) == 0:
            unmatched += len(t_rows)
            continue
        kk = min(k, len(c_rows))
        dist, idx = nearest(x_all[t_rows], x_all[c_rows], kk)
        out.append(
            pl.DataFrame(
                {
                    "person_id": np.repeat(ids[t_rows], kk),
                    "comparator_person_id": ids[c_rows][idx.ravel()],
                    "match_rank": np.tile(np.arange(1, kk + 1), len(t_rows)).astype(np.int32),
                    "distance": dist.ravel(),
                }
            )
        )
    schema = {
        "person_id": pl.String,
        "comparator_person_id": pl.String,
        "match_rank": pl.Int32,
        "distance": pl.Float64,
    }
    pairs = pl.concat(out) if out else pl.DataFrame(schema=schema)
    return pairs.cast(schema).sort("person_id", "match_rank"), unmatched


class _Moments:
    """Weighted sums for means and variances of the balance covariates."""

    def __init__(self, cols: list[str]):
        self.cols = cols
        self.w = np.zeros(len(cols))
        self.s = np.zeros(len(cols))
        self.s2 = np.zeros(len(cols))

    def add(self, df: pl.DataFrame, weight: np.ndarray | float = 1.0) -> None:
        if df.height == 0:
            return
        x = df.select(self.cols).to_numpy().astype(float)
        w = np.broadcast_to(np.asarray(weight, dtype=float), (x.shape[0],))[:, None]
        ok = ~np.isnan(x)
        xz = np.where(ok, x, 0.0)
        self.w += (w * ok).sum(axis=0)
        self.s += (w * xz).sum(axis=0)
        self.s2 += (w * xz * xz).sum(axis=0)

    def add_sums(self, w: np.ndarray, s: np.ndarray, s2: np.ndarray, weight: float) -> None:
        """Add precomputed per-column counts, sums and sums of squares, times ``weight``."""
        self.w += weight * w
        self.s += weight * s
        self.s2 += weight * s2

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.s / self.w
            v = self.s2 / self.w - m * m
        return m, np.maximum(v, 0.0)


def smd(mean_t, var_t, mean_c, var_c):
    """Standardised mean difference: (mean_t - mean_c) / sqrt((var_t + var_c) / 2)."""
    mean_t, var_t, mean_c, var_c = map(np.asarray, (mean_t, var_t, mean_c, var_c))
    pooled = np.sqrt((var_t + var_c) / 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(pooled > 0, (mean_t - mean_c) / np.where(pooled > 0, pooled, 1), 0.0)
    return np.where(np.isnan(mean_t) | np.isnan(mean_c), np.nan, out)


def match_intervention(
    con: duckdb.DuckDBPyConnection, intervention: str, k: int = 1
) -> MatchResult:
    """Match every treated person of ``intervention`` (rows of marts.impact_interventions)."""
    months = [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT index_month FROM {INTERVENTIONS_TABLE} WHERE intervention = ? "
            "ORDER BY 1",
            [intervention],
        ).fetchall()
    ]
    n_treated = con.execute(
        f"SELECT count(*) FROM {INTERVENTIONS_TABLE} WHERE intervention = ?", [intervention]
    ).fetchone()[0]
    cov = balance_covariates() + pre_vector_columns()
    treated_m, before_m, after_m = _Moments(cov), _Moments(cov), _Moments(cov)
    all_pairs = []
    eligible = unmatched = 0
    for m0 in months:
        pool, moments = pre_period_pool(con, intervention, m0)
        t = pool.filter(pl.col("treated"))
        c = pool.filter(~pl.col("treated"))
        if t.height == 0 or moments is None:
            continue
        eligible += t.height
        pairs, um = match_frame(pool, k=k)
        unmatched += um
        treated_m.add(t)
        n_cand, w_, s1_, s2_ = moments
        if n_cand:
            before_m.add_sums(w_, s1_, s2_, t.height / n_cand)
        if pairs.height:
            n_per = pairs.group_by("person_id").len().rename({"len": "_n"})
            comp = (
                pairs.join(n_per, on="person_id")
                .select("comparator_person_id", "_n")
                .join(c.rename({"person_id": "comparator_person_id"}), on="comparator_person_id")
            )
            after_m.add(comp, 1.0 / comp["_n"].to_numpy())
            all_pairs.append(pairs.with_columns(pl.lit(m0).alias("index_month")))
    schema = {
        "intervention": pl.String,
        "person_id": pl.String,
        "comparator_person_id": pl.String,
        "index_month": pl.Date,
        "match_rank": pl.Int32,
        "distance": pl.Float64,
    }
    if all_pairs:
        pairs = (
            pl.concat(all_pairs)
            .with_columns(pl.lit(intervention).alias("intervention"))
            .select(list(schema))
            .cast(schema)
            .sort("person_id", "match_rank")
        )
    else:
        pairs = pl.DataFrame(schema=schema)
    mt, vt = treated_m.mean_var()
    mb, vb = before_m.mean_var()
    ma, va = after_m.mean_var()
    balance = pl.DataFrame(
        {
            "intervention": [intervention] * len(cov),
            "covariate": cov,
            "mean_treated": mt,
            "mean_comparison_before": mb,
            "mean_comparison_after": ma,
            "smd_before": smd(mt, vt, mb, vb),
            "smd_after": smd(mt, vt, ma, va),
        }
    ).with_columns(pl.col(pl.Float64).fill_nan(None))
    matched = pairs["person_id"].n_unique() if pairs.height else 0
    summary = {
        intervention: {
            "treated": n_treated,
            "eligible": eligible,
            "not_eligible": n_treated - eligible,
            "matched": matched,
            "unmatched": unmatched,
            "comparators": pairs["comparator_person_id"].n_unique() if pairs.height else 0,
        }
    }
    return MatchResult(pairs=pairs, balance=balance, summary=summary)
