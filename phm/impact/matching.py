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

Vectorised: the monthly use of the months matched is copied once, sorted by month
(:func:`_create_use_window`), so each index month's few DuckDB queries read only its own 12
months; the pool's pre-period use is scattered straight into one dense numpy matrix (no wide
frame); one exact numpy nearest-neighbour search per stratum (:func:`nearest`; sklearn's
``NearestNeighbors`` gives the same neighbours but its per-call thread start-up dominated with
hundreds of small strata); no Python loop over people.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl

from phm.impact.interventions import (
    INTERVENTIONS_TABLE,
    MONTHLY_USE_TABLE,
    OUTCOMES,
    PRE_MONTHS,
    _d,
    eligible_sql,
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


USE_WINDOW_TABLE = "_impact_use"


def _create_use_window(con: duckdb.DuckDBPyConnection, months: list) -> None:
    """``_impact_use``: the monthly use of the 12 months before any of ``months``, sorted
    by month, so that each index month's query reads only its own 12 months (DuckDB skips
    the other row groups by their month range) instead of the whole panel."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {USE_WINDOW_TABLE} AS
            SELECT * FROM {MONTHLY_USE_TABLE}
            WHERE month >= {_d(min(months))} - INTERVAL {PRE_MONTHS} MONTH
              AND month < {_d(max(months))}
            ORDER BY month, person_id"""
    )


def _candidate_moments(
    con: duckdb.DuckDBPyConnection,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Sums for the before-matching balance over every candidate in ``_impact_elig`` (all
    strata), computed in DuckDB from the sparse monthly use in ``_impact_euse``: (number of
    candidates, and per balance column: non-null count, sum, sum of squares). Every sum is
    of whole numbers, so it is exact whatever the order of summation."""
    n = con.execute("SELECT count(*) FROM _impact_elig WHERE NOT treated").fetchone()[0]
    demo = con.execute(
        """SELECT count(age), sum(age), sum(age * age),
                  count(*), sum(CAST(sex = 'F' AS INTEGER)), sum(CAST(sex = 'F' AS INTEGER)),
                  count(imd_quintile), sum(imd_quintile), sum(imd_quintile * imd_quintile),
                  count(ltc_count), sum(ltc_count), sum(ltc_count * ltc_count)
           FROM _impact_elig WHERE NOT treated"""
    ).fetchone()
    demo = np.array([0.0 if v is None else float(v) for v in demo]).reshape(4, 3)
    tot = con.execute(
        "SELECT "
        + ", ".join(f"coalesce(sum(t_{o}), 0), coalesce(sum(t_{o} * t_{o}), 0)" for o in OUTCOMES)
        + " FROM (SELECT person_id, "
        + ", ".join(f"CAST(sum({o}) AS DOUBLE) AS t_{o}" for o in OUTCOMES)
        + " FROM _impact_euse WHERE NOT treated GROUP BY person_id)"
    ).fetchone()
    monthly = dict(
        ((r[0], j), (r[1 + 2 * j], r[2 + 2 * j]))
        for r in con.execute(
            "SELECT months_before, "
            + ", ".join(
                f"CAST(sum({o}) AS DOUBLE), CAST(sum({o} * {o}) AS DOUBLE)" for o in OUTCOMES
            )
            + " FROM _impact_euse WHERE NOT treated GROUP BY months_before"
        ).fetchall()
        for j in range(len(OUTCOMES))
    )
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


@dataclass
class MonthPool:
    """One index month's pool: ``people`` (sorted by person_id: person_id, treated, sex, age,
    imd_quintile, ltc_count and the strata), ``use`` (raw pre-period use, one row per person
    of ``people``: the :func:`pre_vector_columns` then each outcome's 12-month total) and the
    before-matching balance sums over every candidate (all strata)."""

    people: pl.DataFrame
    use: np.ndarray
    moments: tuple[int, np.ndarray, np.ndarray, np.ndarray]


def month_pool(con: duckdb.DuckDBPyConnection, intervention: str, index_month) -> MonthPool | None:
    """The people eligible at ``index_month`` in the strata of its treated people, with their
    raw pre-period use as a dense matrix; None when nobody is treated that month. Only the
    treated people's strata are made dense, so memory follows the treated, not the
    population. Reads the monthly use from ``_impact_use`` (:func:`_create_use_window`)."""
    m0 = _d(index_month)
    strata = ", ".join(STRATA)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _impact_elig AS {eligible_sql(index_month)}",
        [intervention],
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _impact_pool AS
            SELECT e.*, CAST(row_number() OVER (ORDER BY e.person_id) - 1 AS BIGINT) AS _row
            FROM _impact_elig e
            SEMI JOIN (SELECT DISTINCT {strata} FROM _impact_elig WHERE treated) s
            USING ({strata})"""
    )
    try:
        if not con.execute("SELECT count(*) FROM _impact_pool").fetchone()[0]:
            return None
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _impact_euse AS
                SELECT u.person_id, e.treated,
                       CAST(date_diff('month', u.month, {m0}) AS INTEGER) AS months_before,
                       {", ".join(f"u.{o}" for o in OUTCOMES)}
                FROM {USE_WINDOW_TABLE} u JOIN _impact_elig e ON e.person_id = u.person_id
                WHERE u.month >= {m0} - INTERVAL {PRE_MONTHS} MONTH AND u.month < {m0}"""
        )
        moments = _candidate_moments(con)
        people = con.execute(
            f"SELECT person_id, treated, sex, age, imd_quintile, ltc_count, {strata} "
            "FROM _impact_pool ORDER BY _row"
        ).pl()
        use = con.execute(
            f"""SELECT p._row, u.months_before, {", ".join(f"u.{o}" for o in OUTCOMES)}
                FROM _impact_euse u JOIN _impact_pool p ON p.person_id = u.person_id"""
        ).pl()
    finally:
        for t in ("_impact_elig", "_impact_pool", "_impact_euse"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    n_out, n_m = len(OUTCOMES), PRE_MONTHS
    x = np.zeros((people.height, n_out * n_m + n_out))
    r = use["_row"].to_numpy().astype(np.int64)
    k = use["months_before"].to_numpy().astype(np.int64) - 1
    for j, o in enumerate(OUTCOMES):
        x[r, j * n_m + k] = use[o].to_numpy()
        # whole numbers: the total is exact whatever the order of summation
        x[:, n_out * n_m + j] = x[:, j * n_m : (j + 1) * n_m].sum(axis=1)
    return MonthPool(people=people, use=x, moments=moments)


def pool_frame(month: MonthPool) -> pl.DataFrame:
    """The pool as one frame (people, :func:`pre_vector_columns`, ``female`` and
    ``<outcome>_pre12``), the input of :func:`match_frame`."""
    n_m = len(OUTCOMES) * PRE_MONTHS
    vec = pl.DataFrame(month.use[:, :n_m], schema=pre_vector_columns())
    return _add_derived(pl.concat([month.people, vec], how="horizontal"))


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
    """The matching features of a pool frame (:func:`scaled_features` of its pre-period
    vector and 12-month totals)."""
    monthly = pool.select(pre_vector_columns()).to_numpy().astype(float)
    totals = np.column_stack([pool[f"{o}_pre12"].to_numpy() for o in OUTCOMES]).astype(float)
    return scaled_features(np.hstack([monthly, totals]), recent_weight, total_weight)


def scaled_features(
    use: np.ndarray, recent_weight: float = RECENT_WEIGHT, total_weight: float = TOTAL_WEIGHT
) -> np.ndarray:
    """The matching features from the raw use (rows: the pool; columns: every outcome's use
    in each of the 12 months before the index month, then each outcome's 12-month total):
    each column divided by its standard deviation in the pool (everyone eligible that
    month in the treated people's strata); the 3 most recent months weighted by
    ``recent_weight`` (so that a peak is matched by a peak in the same month) and the
    totals by ``total_weight`` (so that the overall level is matched too).

    The standard deviations are summed row by row (``std(axis=0)`` of a C-ordered array),
    so the features, and the distances, are the same bits whichever way the pool was
    built."""
    x = np.ascontiguousarray(use, dtype=float)
    n_m = len(OUTCOMES) * PRE_MONTHS
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    x = x / sd
    w = np.ones(x.shape[1])
    for j in range(len(OUTCOMES)):
        w[j * PRE_MONTHS : j * PRE_MONTHS + 3] = recent_weight
    w[n_m:] = total_weight
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


PAIR_SCHEMA = {
    "person_id": pl.String,
    "comparator_person_id": pl.String,
    "match_rank": pl.Int32,
    "distance": pl.Float64,
}


def match_frame(
    pool: pl.DataFrame, k: int = 1, strata: list[str] | None = None
) -> tuple[pl.DataFrame, int]:
    """Match the ``treated`` rows of one index month's pool to its other rows.

    Returns (pairs: person_id, comparator_person_id, match_rank, distance; number of treated
    people with no candidate in their stratum).
    """
    pool = pool.sort("person_id")
    pairs, unmatched, _, _ = match_rows(
        feature_matrix(pool),
        pool["person_id"],
        pool["treated"].to_numpy(),
        pool.select(STRATA if strata is None else strata),
        k,
    )
    return pairs, unmatched


def match_rows(
    x: np.ndarray, ids: pl.Series, treated: np.ndarray, key: pl.DataFrame, k: int = 1
) -> tuple[pl.DataFrame, int, np.ndarray, np.ndarray]:
    """Match the treated rows (``treated``) to the other rows of the same stratum (``key``:
    the strata columns, row for row with ``x``, the features, and ``ids``, the person_ids in
    ascending order): one :func:`nearest` per stratum holding a treated person.

    Returns (pairs sorted by person_id and match_rank, number of treated people with no
    candidate in their stratum, and per pair the row of the treated person and of the
    comparator)."""
    strata = key.columns
    key = key.with_row_index("_row")
    # only the strata holding a treated person
    key = key.join(key.filter(pl.Series(treated)).select(strata).unique(), on=strata, how="semi")
    t_out, c_out, rank_out, dist_out = [], [], [], []
    unmatched = 0
    for _, grp in key.group_by(strata, maintain_order=True):
        rows = grp["_row"].to_numpy()
        t_rows = rows[treated[rows]]
        c_rows = rows[~treated[rows]]
        if len(t_rows) == 0:
            continue
        if len(c_rows) == 0:
            unmatched += len(t_rows)
            continue
        kk = min(k, len(c_rows))
        dist, idx = nearest(x[t_rows], x[c_rows], kk)
        t_out.append(np.repeat(t_rows, kk))
        c_out.append(c_rows[idx.ravel()])
        rank_out.append(np.tile(np.arange(1, kk + 1, dtype=np.int32), len(t_rows)))
        dist_out.append(dist.ravel())
    if not t_out:
        empty = np.empty(0, dtype=np.int64)
        return pl.DataFrame(schema=PAIR_SCHEMA), unmatched, empty, empty
    t_rows, c_rows = np.concatenate(t_out), np.concatenate(c_out)
    # the rows are in person_id order, so sorting by (row, rank) sorts by person_id
    order = np.lexsort((np.concatenate(rank_out), t_rows))
    t_rows, c_rows = t_rows[order], c_rows[order]
    pairs = pl.DataFrame(
        {
            "person_id": ids.gather(t_rows),
            "comparator_person_id": ids.gather(c_rows),
            "match_rank": np.concatenate(rank_out)[order],
            "distance": np.concatenate(dist_out)[order],
        }
    ).cast(PAIR_SCHEMA)
    return pairs, unmatched, t_rows, c_rows


def _balance_frame(month: MonthPool, rows: np.ndarray) -> pl.DataFrame:
    """The balance covariates (:func:`balance_covariates` and :func:`pre_vector_columns`)
    of the pool's ``rows``."""
    n_m = len(OUTCOMES) * PRE_MONTHS
    use = month.use[rows]
    return pl.concat(
        [
            month.people[rows].select(
                "age",
                (pl.col("sex") == "F").cast(pl.Float64).alias("female"),
                "imd_quintile",
                "ltc_count",
            ),
            pl.DataFrame(use[:, n_m:], schema=[f"{o}_pre12" for o in OUTCOMES]),
            pl.DataFrame(use[:, :n_m], schema=pre_vector_columns()),
        ],
        how="horizontal",
    )


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
    if months:
        _create_use_window(con, months)
    try:
        for m0 in months:
            month = month_pool(con, intervention, m0)
            if month is None:
                continue
            treated = month.people["treated"].to_numpy()
            t_rows = np.flatnonzero(treated)
            eligible += len(t_rows)
            pairs, um, pt_rows, pc_rows = match_rows(
                scaled_features(month.use),
                month.people["person_id"],
                treated,
                month.people.select(STRATA),
                k,
            )
            unmatched += um
            treated_m.add(_balance_frame(month, t_rows))
            n_cand, w_, s1_, s2_ = month.moments
            if n_cand:
                before_m.add_sums(w_, s1_, s2_, len(t_rows) / n_cand)
            if pairs.height:
                # each comparator weighted 1 / (number of matches of its treated person)
                n_per = np.bincount(pt_rows, minlength=len(treated))[pt_rows]
                after_m.add(_balance_frame(month, pc_rows), 1.0 / n_per)
                all_pairs.append(pairs.with_columns(pl.lit(m0).alias("index_month")))
    finally:
        con.execute(f"DROP TABLE IF EXISTS {USE_WINDOW_TABLE}")
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
