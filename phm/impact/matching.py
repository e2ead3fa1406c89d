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

Vectorised: the people and the monthly use of the months matched are read from DuckDB once
per intervention as numpy arrays (:func:`load_panel`, rows in person_id order); each index
month is a few vectorised filters and bincounts (:func:`month_pool`: eligibility, strata,
the before-matching balance sums) and one scatter of the pool's use into a dense matrix;
one exact numpy nearest-neighbour search per stratum (:func:`match_rows`, :func:`nearest`;
sklearn's ``NearestNeighbors`` gives the same neighbours but its per-call thread start-up
dominated with hundreds of small strata); no Python loop over people. The SQL form of the
rules (:func:`phm.impact.interventions.eligible_sql`, ``pre_use_sql``) and the frame-level
:func:`match_frame` are the reference the tests hold this path to.
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
    PEOPLE_TABLE,
    PRE_MONTHS,
    _d,
    ltc_band_sql,
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


AGE_BAND_EDGES = (18, 35, 50, 65, 75, 85)


def _month_index(col: str) -> str:
    """SQL: a date's calendar month as a whole number (year * 12 + month - 1)."""
    return f"(year({col}) * 12 + month({col}) - 1)"


def _idx(d) -> int:
    return d.year * 12 + d.month - 1


@dataclass
class Panel:
    """Everyone of ``marts.impact_people`` (rows in person_id order) with what matching needs
    at any index month, and the monthly use of the months matched, as numpy arrays: loaded
    once per intervention, so each index month is a few vectorised filters instead of
    queries joining 64-character person_ids.

    Per person: ``first``/``last``, the first and last index month (:func:`_idx`) at which
    they are eligible (registered since the start of month -12; the index month observed),
    ``t_idx`` the intervention's index month (-1: never treated), birth year and month,
    ``sex_ok`` (sex known: a stratum with an unknown sex matches nobody, as an SQL join on
    null), ``fixed`` the strata other than the age band as one code. Use: ``u_row`` (the
    person's row), ``u_idx`` (month) and ``u_out`` (one column per outcome), sorted by
    month."""

    people: pl.DataFrame
    first: np.ndarray
    last: np.ndarray
    t_idx: np.ndarray
    birth_year: np.ndarray
    birth_month: np.ndarray
    sex_ok: np.ndarray
    female: np.ndarray
    fixed: np.ndarray
    imd: np.ndarray
    ltc: np.ndarray
    u_row: np.ndarray
    u_idx: np.ndarray
    u_out: np.ndarray


def load_panel(con: duckdb.DuckDBPyConnection, intervention: str, months: list) -> Panel:
    """The :class:`Panel` of ``intervention`` for matching at ``months``. The rules are those
    of :func:`phm.impact.interventions.eligible_sql` (its tests check they agree)."""
    never = np.iinfo(np.int64).max // 2
    people = (
        con.execute(
            f"""
            SELECT p.person_id, p.sex, p.imd_quintile, p.ltc_count,
                   coalesce({_month_index("p.registration_start")} + {PRE_MONTHS}
                            + CAST(day(p.registration_start) > 1 AS INTEGER), {never}) AS first,
                   coalesce({_month_index("CAST(p.censor_date + INTERVAL 1 DAY AS DATE)")} - 1,
                            -1) AS last,
                   coalesce({_month_index("t.index_month")}, -1) AS t_idx,
                   year(p.birth_month) AS birth_year, month(p.birth_month) AS birth_month,
                   coalesce(CAST(p.imd_quintile AS VARCHAR), 'unknown') AS imd_band,
                   {ltc_band_sql("p.ltc_count")} AS ltc_band,
                   coalesce(p.efi_category, 'unknown') AS efi_band
            FROM {PEOPLE_TABLE} p
            LEFT JOIN {INTERVENTIONS_TABLE} t
              ON t.person_id = p.person_id AND t.intervention = ?
            """,
            [intervention],
        )
        .pl()
        .sort("person_id")
        .with_row_index("_row")
    )

    def arr(c: str, fill: int = 0) -> np.ndarray:
        return people[c].fill_null(fill).to_numpy().astype(np.int64)

    # the strata other than the age band as one code (any one-to-one code will do)
    fixed = np.zeros(people.height, dtype=np.int64)
    for c in ("sex", "imd_band", "ltc_band", "efi_band"):
        physical = people[c].cast(pl.Categorical).to_physical().fill_null(-1).to_numpy()
        values, code = np.unique(physical, return_inverse=True)  # 0 .. (distinct values - 1)
        fixed = fixed * len(values) + code.astype(np.int64)
    # person_id -> row joined in DuckDB: only whole numbers come back
    con.register("_impact_rows", people.select("person_id", "_row").to_arrow())
    try:
        use = con.execute(
            f"""SELECT r._row, {_month_index("u.month")} AS u_idx,
                       {", ".join(f"u.{o}" for o in OUTCOMES)}
                FROM {MONTHLY_USE_TABLE} u JOIN _impact_rows r ON r.person_id = u.person_id
                WHERE u.month >= {_d(min(months))} - INTERVAL {PRE_MONTHS} MONTH
                  AND u.month < {_d(max(months))}
                ORDER BY u_idx, r._row"""
        ).pl()
    finally:
        con.unregister("_impact_rows")
    return Panel(
        people=people.select("person_id", "sex", "imd_quintile", "ltc_count"),
        first=arr("first"),
        last=arr("last"),
        t_idx=arr("t_idx"),
        birth_year=people["birth_year"].to_numpy().astype(float),
        birth_month=people["birth_month"].to_numpy().astype(float),
        sex_ok=people["sex"].is_not_null().to_numpy(),
        female=(people["sex"] == "F").fill_null(False).to_numpy(),
        fixed=fixed,
        imd=people["imd_quintile"].to_numpy().astype(float),
        ltc=people["ltc_count"].to_numpy().astype(float),
        u_row=use["_row"].to_numpy().astype(np.int64),
        u_idx=use["u_idx"].to_numpy().astype(np.int64),
        u_out=use.select(list(OUTCOMES)).to_numpy().astype(np.int64),
    )


def _sums(x: np.ndarray) -> tuple[float, float, float]:
    """Non-null count, sum and sum of squares of whole numbers (nan: null), exactly."""
    x = x[~np.isnan(x)].astype(np.int64)
    return float(x.size), float(x.sum()), float((x * x).sum())


@dataclass
class MonthPool:
    """One index month's pool: ``rows`` (the people eligible in the strata of that month's
    treated people, ascending = person_id order), ``treated``, ``age``, ``stratum`` (one code
    per pool row), ``use`` (raw pre-period use, one row per pool row: the
    :func:`pre_vector_columns` then each outcome's 12-month total) and the before-matching
    balance sums over every candidate (all strata)."""

    rows: np.ndarray
    treated: np.ndarray
    age: np.ndarray
    stratum: np.ndarray
    use: np.ndarray
    moments: tuple[int, np.ndarray, np.ndarray, np.ndarray]


def month_pool(panel: Panel, index_month) -> MonthPool | None:
    """The pool of ``index_month``; None when nobody in it is treated. Only the treated
    people's strata are made dense, so memory follows the treated, not the population."""
    m = _idx(index_month)
    elig = (panel.first <= m) & (panel.last >= m) & ((panel.t_idx < 0) | (panel.t_idx >= m))
    treated_all = elig & (panel.t_idx == m)
    # age at the index month (the birthday counted as reached on the first of the month)
    age = index_month.year - panel.birth_year - (index_month.month < panel.birth_month)
    band = np.searchsorted(np.array(AGE_BAND_EDGES), age, side="right")
    band[np.isnan(age)] = len(AGE_BAND_EDGES)  # SQL: a null age falls to the last band
    stratum = panel.fixed * 8 + band
    in_treated_strata = np.isin(stratum, np.unique(stratum[treated_all & panel.sex_ok]))
    rows = np.flatnonzero(elig & panel.sex_ok & in_treated_strata)
    if rows.size == 0:
        return None
    cand = elig & ~treated_all
    n_out, n_m = len(OUTCOMES), PRE_MONTHS
    a, b = np.searchsorted(panel.u_idx, [m - n_m, m])
    u_row, u_out = panel.u_row[a:b], panel.u_out[a:b]
    k = m - panel.u_idx[a:b] - 1  # months before, from 0
    # before-matching balance sums over every candidate: whole numbers, summed exactly
    c = cand[u_row]
    cu_row, cu_out, ck = u_row[c], u_out[c], k[c]
    n = int(cand.sum())
    ages = age[cand]
    demo = [
        _sums(ages),
        (float(n), float(panel.female[cand].sum()), float(panel.female[cand].sum())),
        _sums(panel.imd[cand]),
        _sums(panel.ltc[cand]),
    ]
    w = [d[0] for d in demo] + [float(n)] * n_out
    s1 = [d[1] for d in demo]
    s2 = [d[2] for d in demo]
    per_person = [
        np.bincount(cu_row, weights=cu_out[:, j], minlength=len(cand)) for j in range(n_out)
    ]
    s1 += [float(t.sum()) for t in per_person]
    s2 += [float((t * t).sum()) for t in per_person]
    for j in range(n_out):
        o = cu_out[:, j]
        s1 += list(np.bincount(ck, weights=o, minlength=n_m).astype(float))
        s2 += list(np.bincount(ck, weights=o * o, minlength=n_m).astype(float))
        w += [float(n)] * n_m
    moments = (n, np.array(w), np.array(s1), np.array(s2))
    # the pool's dense pre-period use
    row_of = np.full(len(cand), -1, dtype=np.int64)
    row_of[rows] = np.arange(rows.size)
    r = row_of[u_row]
    keep = r >= 0
    r, kk, out = r[keep], k[keep], u_out[keep]
    x = np.zeros((rows.size, n_out * n_m + n_out))
    for j in range(n_out):
        x[r, j * n_m + kk] = out[:, j]
        # whole numbers: the total is exact whatever the order of summation
        x[:, n_out * n_m + j] = x[:, j * n_m : (j + 1) * n_m].sum(axis=1)
    return MonthPool(
        rows=rows,
        treated=treated_all[rows],
        age=age[rows],
        stratum=stratum[rows],
        use=x,
        moments=moments,
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
    x *= w
    return x


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
    empty = np.empty(0, dtype=np.int64)
    if key.height == 0:
        return pl.DataFrame(schema=PAIR_SCHEMA), 0, empty, empty
    # the rows of each stratum, in row order, in one pass (no per-stratum frame)
    grouped = (
        key.with_row_index("_row")
        .group_by(key.columns, maintain_order=True)
        .agg("_row")
        .with_row_index("_g")
        .explode("_row")
    )
    all_rows = grouped["_row"].to_numpy().astype(np.int64)
    starts = np.flatnonzero(np.diff(grouped["_g"].to_numpy(), prepend=-1))
    n_t = np.add.reduceat(treated[all_rows].astype(np.int64), starts)
    ends = np.append(starts[1:], len(all_rows))
    t_out, c_out, rank_out, dist_out = [], [], [], []
    unmatched = 0
    for i in np.flatnonzero(n_t):  # only the strata holding a treated person
        rows = all_rows[starts[i] : ends[i]]
        t_rows = rows[treated[rows]]
        c_rows = rows[~treated[rows]]
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


def _balance_frame(panel: Panel, month: MonthPool, rows: np.ndarray) -> pl.DataFrame:
    """The balance covariates (:func:`balance_covariates` and :func:`pre_vector_columns`)
    of the pool's ``rows`` (nan: unknown)."""
    n_m = len(OUTCOMES) * PRE_MONTHS
    use = month.use[rows]
    people = month.rows[rows]
    return pl.concat(
        [
            pl.DataFrame(
                {
                    "age": month.age[rows],
                    "female": panel.female[people].astype(float),
                    "imd_quintile": panel.imd[people],
                    "ltc_count": panel.ltc[people],
                }
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


def _frame_sums(
    df: pl.DataFrame, cols: list[str], weight: np.ndarray | float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``df``: weighted non-null count, sum and sum of squares (nan: null)."""
    x = df.select(cols).to_numpy().astype(float)
    w = np.broadcast_to(np.asarray(weight, dtype=float), (x.shape[0],))[:, None]
    ok = ~np.isnan(x)
    xz = np.where(ok, x, 0.0)
    return (w * ok).sum(axis=0), (w * xz).sum(axis=0), (w * xz * xz).sum(axis=0)


@dataclass
class MonthMatch:
    """What one index month adds to an intervention's matching: the pairs as rows of the
    :class:`Panel` (treated ``t_people``, comparator ``c_people``, ``rank``, ``distance``,
    sorted by person_id and rank), the counts, and the balance sums of the treated people
    (``treated_sums``), of every candidate before matching (``before``: weight and sums)
    and of the comparators after (``after_sums``; None: no pair)."""

    t_people: np.ndarray
    c_people: np.ndarray
    rank: np.ndarray
    distance: np.ndarray
    eligible: int
    unmatched: int
    treated_sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    before: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None
    after_sums: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def match_month(panel: Panel, index_month, k: int = 1) -> MonthMatch | None:
    """Match the people of ``panel`` treated at ``index_month`` (None: nobody in its pool).
    Pure: the same panel and month give the same bits in any process."""
    month = month_pool(panel, index_month)
    if month is None:
        return None
    cov = balance_covariates() + pre_vector_columns()
    t_rows = np.flatnonzero(month.treated)
    pairs, um, pt_rows, pc_rows = match_rows(
        scaled_features(month.use),
        pl.Series("person_id", month.rows),  # ids: the panel rows (ascending = person_id)
        month.treated,
        pl.DataFrame({"stratum": month.stratum}),
        k,
    )
    treated_sums = _frame_sums(_balance_frame(panel, month, t_rows), cov) if len(t_rows) else None
    n_cand, w_, s1_, s2_ = month.moments
    before = (len(t_rows) / n_cand, w_, s1_, s2_) if n_cand else None
    after_sums = None
    if pairs.height:
        # each comparator weighted 1 / (number of matches of its treated person)
        n_per = np.bincount(pt_rows, minlength=len(month.treated))[pt_rows]
        after_sums = _frame_sums(_balance_frame(panel, month, pc_rows), cov, 1.0 / n_per)
    return MonthMatch(
        t_people=month.rows[pt_rows],
        c_people=month.rows[pc_rows],
        rank=pairs["match_rank"].to_numpy(),
        distance=pairs["distance"].to_numpy(),
        eligible=len(t_rows),
        unmatched=um,
        treated_sums=treated_sums,
        before=before,
        after_sums=after_sums,
    )


def match_intervention(
    con: duckdb.DuckDBPyConnection, intervention: str, k: int = 1, workers: int | None = None
) -> MatchResult:
    """Match every treated person of ``intervention`` (rows of marts.impact_interventions).

    ``workers`` > 1 matches the index months in that many worker processes (see
    :func:`phm.impact.pool.match_months`); the result is the same to the bit as ``workers=1``
    (in this process): the months are gathered and summed in month order. Default:
    :func:`phm.workers.worker_count` (``PHM_WORKERS``) for a large panel."""
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
    panel = load_panel(con, intervention, months) if months else None
    from phm.impact.pool import match_months  # the pool imports this module

    results = match_months(panel, months, k, workers) if months else []
    ids = panel.people["person_id"] if months else None
    for m0, r in zip(months, results, strict=True):  # in month order, as in one process
        if r is None:
            continue
        eligible += r.eligible
        unmatched += r.unmatched
        if r.treated_sums is not None:
            treated_m.add_sums(*r.treated_sums, 1.0)
        if r.before is not None:
            before_m.add_sums(*r.before[1:], r.before[0])
        if r.after_sums is not None:
            after_m.add_sums(*r.after_sums, 1.0)
            all_pairs.append(
                pl.DataFrame(
                    {
                        "person_id": ids.gather(r.t_people),
                        "comparator_person_id": ids.gather(r.c_people),
                        "match_rank": r.rank,
                        "distance": r.distance,
                    }
                )
                .cast(PAIR_SCHEMA)
                .with_columns(pl.lit(m0).alias("index_month"))
            )
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
