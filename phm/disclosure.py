"""Statistical disclosure control: every published count and rate passes through here.

Policy (docs/security.md, "Disclosure control"):

* **Primary rule** (NHS Digital, now NHS England, for sub-national HES and ECDS outputs):
  zero stays zero; counts 1..7 are suppressed (``*``); every other count is rounded half up
  to the nearest 5 (:func:`protect_count`, :func:`protect_value`). OpenSAFELY studies use
  the same "redact 7 or fewer, round to 5".
* **Rates from protected counts**: every published percentage, rate and confidence limit is
  computed from the rounded numerator and rounded denominator, never from the exact ones
  (as the HES methodology does for percentages), so it reveals nothing the published counts
  do not; a rate resting on a suppressed count, or on fewer than ``min_rate_events``
  (protected) events, is not shown (:func:`protect_rate`; OHID Fingertips: fewer than 10).
  Directly standardised rates are computed from per-age-band counts each rounded to 5.
* **Secondary (complementary) suppression** (:func:`protect_table`, the one function every
  published table goes through): when rows add up (ALL > PCN > practice; the areas of a PCN
  to its population; segments and risk tiers), no equation ``parent = sum(children)`` is left
  with exactly one suppressed cell, and an audit (interval propagation over all equations,
  as an attacker differencing rows would do) hides more cells until no suppressed or rounded
  count has a single value consistent with everything published. Rounding alone is not
  enough: four children of 12 (shown 10) under a parent of 48 (shown 50) are all recovered.
* **Across tables** (:func:`protect_linked_tables`): tables that add up across each other are
  protected as ONE system of cells and equations (the same rule and audit over every equation
  at once), since tables sharing totals can be differenced against each other (ONS). Protected
  together: the four need tables (LSOA, MSOA, IMD decile, IMD quintile: partitions of the same
  patients per PCN, an MSOA or decile the sum of its LSOAs, a quintile of its deciles, one PCN
  total for all four; :func:`geo.need.protect_need_counts`); a PCN's impact caseload months
  with their 12-month totals (:mod:`phm.impact.report`). The population pyramid's age band x
  sex x segment cells go through :func:`protect_table` with margins over all three keys.
  Both front ends build a :class:`CellSystem` (cells published here, published elsewhere, or
  hidden; equations; tie-break rank) and suppress each count column on it.

Configure with ``PHM_SDC_SUPPRESS_MAX`` (default 7), ``PHM_SDC_ROUND_TO`` (default 5) and
``PHM_SDC_MIN_RATE_EVENTS`` (default 10).

Sources: NHS Digital, "Disclosure control methodology for Hospital Episode Statistics (HES)
and Emergency Care Data Set (ECDS)" (2018; suppress 1-7, round to 5, percentages from the
rounded numerator and denominator; replaced manual secondary suppression "checking that other
values within the data cannot be used to recalculate the original small numbers"); the HES
Analysis Guide; OpenSAFELY output checking (redaction of counts <= 7, rounding to 5); ONS,
"Statistical disclosure control" methodology and "Comparison of post-tabular statistical
disclosure control methods" (threshold and rounding; disclosure by differencing of tables
that share totals).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

SUPPRESSED = "*"


@dataclass(frozen=True)
class DisclosurePolicy:
    suppress_max: int = 7
    round_to: int = 5
    min_rate_events: int = 10

    @classmethod
    def from_env(cls) -> DisclosurePolicy:
        return cls(
            suppress_max=int(os.environ.get("PHM_SDC_SUPPRESS_MAX", 7)),
            round_to=int(os.environ.get("PHM_SDC_ROUND_TO", 5)),
            min_rate_events=int(os.environ.get("PHM_SDC_MIN_RATE_EVENTS", 10)),
        )


def _rounded(expr: pl.Expr, base: int) -> pl.Expr:
    # round half up to the nearest `base` (polars' round is half-to-even on floats)
    if base <= 1:
        return expr.cast(pl.Int64)
    return ((expr.cast(pl.Int64) + base // 2) // base * base).cast(pl.Int64)


def protect_count(expr: pl.Expr, policy: DisclosurePolicy | None = None) -> pl.Expr:
    """A published count as text: ``*`` for 1..suppress_max, else rounded; null stays null."""
    p = policy or DisclosurePolicy.from_env()
    out = (
        pl.when(expr.is_null())
        .then(pl.lit(None, pl.String))
        .when((expr >= 1) & (expr <= p.suppress_max))
        .then(pl.lit(SUPPRESSED))
        .otherwise(_rounded(expr, p.round_to).cast(pl.String))
    )
    return _keep_name(out, expr)


def _keep_name(out: pl.Expr, source: pl.Expr) -> pl.Expr:
    try:
        return out.alias(source.meta.output_name())
    except pl.exceptions.ComputeError:
        return out


def protect_rate(rate: pl.Expr, events: pl.Expr, policy: DisclosurePolicy | None = None) -> pl.Expr:
    """A rate (or its interval bound), null where it rests on fewer than min_rate_events."""
    p = policy or DisclosurePolicy.from_env()
    return _keep_name(pl.when(events >= p.min_rate_events).then(rate).otherwise(pl.lit(None)), rate)


def protect_value(n: int | None, policy: DisclosurePolicy | None = None) -> str | None:
    """One count, e.g. for Dagster metadata."""
    return pl.select(protect_count(pl.lit(n, pl.Int64), policy)).item()


# --------------------------------------------------------------------------------------
# tables: rounding, primary and secondary suppression, audited against differencing

#: internal marker of an aggregate key (never in the output)
_AGG = "\x00aggregate"
_NULL = "\x00null"
#: upper bound of a suppressed cell for the audit (no real count comes near)
_INF = 2**40


def rounded_value(n: int, policy: DisclosurePolicy | None = None) -> int:
    """``n`` rounded half up to the policy's base (no suppression): for computations only."""
    p = policy or DisclosurePolicy.from_env()
    return n if p.round_to <= 1 else (int(n) + p.round_to // 2) // p.round_to * p.round_to


def round_counts(expr: pl.Expr, policy: DisclosurePolicy | None = None) -> pl.Expr:
    """Counts rounded half up to the policy's base, without suppression (e.g. the per-age-band
    counts a directly standardised rate is computed from); null stays null."""
    p = policy or DisclosurePolicy.from_env()
    return _keep_name(_rounded(expr, p.round_to), expr)


def _keys_frame(df: pl.DataFrame, keys: Sequence[str], total: Mapping[str, object]) -> pl.DataFrame:
    """Key columns as text, aggregates (``total[col]``) as :data:`_AGG`, other nulls as
    :data:`_NULL`."""
    exprs = []
    for k in keys:
        t = total.get(k, "ALL")
        c = pl.col(k).cast(pl.String)
        is_agg = c.is_null() if t is None else (c == str(t)).fill_null(False)
        exprs.append(pl.when(is_agg).then(pl.lit(_AGG)).otherwise(c.fill_null(_NULL)).alias(k))
    return df.select(exprs)


def _depth(keys: pl.DataFrame, chain: Sequence[str]) -> np.ndarray:
    """Number of leading non-aggregate keys of each row along one hierarchy chain."""
    d = np.zeros(keys.height, dtype=np.int64)
    alive = np.ones(keys.height, dtype=bool)
    for k in chain:
        alive &= (keys[k] != _AGG).to_numpy()
        d += alive
    return d


@dataclass(frozen=True)
class CellSystem:
    """Cells linked by equations ``x[eq_parent[e]] = sum(x[mem_row[i]] for mem_eq[i] == e)``.

    * ``real``: published by this call (may be suppressed here);
    * ``known``: published elsewhere (a reader knows its protected value: rounded, or
      suppressed when 1..suppress_max);
    * neither: a hidden cell (not published anywhere; a reader only knows it is >= 0);
    * ``rank``: deterministic tie-break order of the cells (lower first)."""

    real: np.ndarray
    known: np.ndarray
    eq_parent: np.ndarray
    mem_eq: np.ndarray
    mem_row: np.ndarray
    rank: np.ndarray

    @property
    def n_eq(self) -> int:
        return len(self.eq_parent)


class _Cube:
    """The cells of one table plus the aggregate cells it implies, and the equations
    ``parent = sum(children)`` linking them (one per parent per hierarchy)."""

    def __init__(
        self,
        df: pl.DataFrame,
        count_cols: Sequence[str],
        dims: Sequence[Sequence[str]],
        by: Sequence[str],
        total: Mapping[str, object],
    ) -> None:
        keys = [*by, *(k for chain in dims for k in chain)]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a key column is named twice: {keys}")
        frame = _keys_frame(df, keys, total).with_columns(
            df[c].fill_null(0).cast(pl.Int64) for c in count_cols
        )
        frame = frame.select(*keys, *count_cols).with_row_index("_row")
        if frame.select(keys).is_duplicated().any():
            raise ValueError(f"rows are not unique on {keys}")
        frame = frame.with_columns(pl.lit(True).alias("_real"))
        # add the aggregate cells the table implies but does not hold (published elsewhere
        # or derivable): deepest level first, one hierarchy after the other
        for chain in dims:
            for level in range(len(chain), 0, -1):
                k = frame.select(keys)
                at = frame.filter(pl.Series(_depth(k, chain) == level))
                if at.is_empty():
                    continue
                up = [pl.lit(_AGG).alias(c) for c in chain[level - 1 :]]
                parents = (
                    at.with_columns(up)
                    .group_by(keys)
                    .agg(pl.col(c).sum() for c in count_cols)
                    .join(frame.select(keys), on=keys, how="anti", nulls_equal=True)
                )
                if parents.height:
                    parents = parents.sort(keys).with_columns(
                        pl.lit(None, pl.UInt32).alias("_row"), pl.lit(False).alias("_real")
                    )
                    frame = pl.concat([frame, parents.select(frame.columns)])
        self.frame = frame.with_row_index("_cell")
        self.keys = keys
        self.real = self.frame["_real"].to_numpy()
        # deterministic order for tie-breaks: by key
        order = self.frame.select(keys).with_row_index("_i").sort(keys)["_i"].to_numpy()
        self.rank = np.empty(len(order), dtype=np.int64)
        self.rank[order] = np.arange(len(order))
        # equations
        eq_parent, mem_eq, mem_row = [], [], []
        kf = self.frame.select("_cell", *keys)
        n_eq = 0
        for chain in dims:
            depth = _depth(kf, chain)
            for level in range(1, len(chain) + 1):
                child = kf.filter(pl.Series(depth == level))
                if child.is_empty():
                    continue
                up = [pl.lit(_AGG).alias(c) for c in chain[level - 1 :]]
                link = child.with_columns(up).join(
                    kf.rename({"_cell": "_parent"}), on=keys, how="inner", nulls_equal=True
                )
                parents = link["_parent"].unique().sort()
                eq_of = {int(p): n_eq + i for i, p in enumerate(parents)}
                eq_parent += [int(p) for p in parents]
                mem_eq += [eq_of[int(p)] for p in link["_parent"]]
                mem_row += link["_cell"].to_list()
                n_eq += len(parents)
        self.eq_parent = np.asarray(eq_parent, dtype=np.int64)
        self.mem_eq = np.asarray(mem_eq, dtype=np.int64)
        self.mem_row = np.asarray(mem_row, dtype=np.int64)
        self.n_eq = n_eq

    def system(self) -> CellSystem:
        """The cube as a cell system: its aggregate cells are published elsewhere."""
        return CellSystem(
            self.real, ~self.real, self.eq_parent, self.mem_eq, self.mem_row, self.rank
        )


def feasible_bounds(
    lo: np.ndarray,
    hi: np.ndarray,
    eq_parent: np.ndarray,
    mem_eq: np.ndarray,
    mem_row: np.ndarray,
    max_rounds: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Tighten integer bounds ``lo <= x <= hi`` of cells linked by equations
    ``x[eq_parent[e]] = sum(x[mem_row[i]] for i with mem_eq[i] == e)`` to a fixpoint
    (interval constraint propagation: what an attacker differencing rows and totals learns).
    """
    lo, hi = lo.astype(np.int64).copy(), hi.astype(np.int64).copy()
    n_eq = len(eq_parent)
    if n_eq == 0:
        return lo, hi
    for _ in range(max_rounds):
        slo = np.zeros(n_eq, dtype=np.int64)
        shi = np.zeros(n_eq, dtype=np.int64)
        np.add.at(slo, mem_eq, lo[mem_row])
        np.add.at(shi, mem_eq, np.minimum(hi[mem_row], _INF))
        nlo, nhi = lo.copy(), hi.copy()
        np.maximum.at(nlo, eq_parent, slo)
        np.minimum.at(nhi, eq_parent, shi)
        p = eq_parent[mem_eq]
        np.maximum.at(nlo, mem_row, lo[p] - (shi[mem_eq] - np.minimum(hi[mem_row], _INF)))
        np.minimum.at(nhi, mem_row, hi[p] - (slo[mem_eq] - lo[mem_row]))
        nhi = np.minimum(nhi, _INF)
        if np.array_equal(nlo, lo) and np.array_equal(nhi, hi):
            break
        lo, hi = nlo, nhi
    return lo, hi


def published_bounds(
    x: np.ndarray,
    suppressed: np.ndarray,
    policy: DisclosurePolicy,
    hidden: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What a reader knows of each exact count from its published value: 0 is exact; a
    rounded count R lies in [R - base/2, R + base/2) and above ``suppress_max``; a
    suppressed primary cell (1..suppress_max) in [1, suppress_max]; a cell suppressed only
    to protect another in [1, unbounded); a ``hidden`` cell (published nowhere) in
    [0, unbounded)."""
    x = np.asarray(x, dtype=np.int64)
    b = max(policy.round_to, 1)
    r = (x + b // 2) // b * b if b > 1 else x
    lo = np.where(x == 0, 0, np.maximum(r - b // 2, policy.suppress_max + 1))
    hi = np.where(x == 0, 0, r + (b - 1) // 2)
    primary = (x >= 1) & (x <= policy.suppress_max)
    lo = np.where(primary, 1, lo)
    hi = np.where(primary, policy.suppress_max, hi)
    lo = np.where(suppressed & ~primary, 1, lo)
    hi = np.where(suppressed & ~primary, _INF, hi)
    if hidden is not None:
        lo = np.where(hidden, 0, lo)
        hi = np.where(hidden, _INF, hi)
    return lo.astype(np.int64), hi.astype(np.int64)


def _suppress_column(system: CellSystem, x: np.ndarray, p: DisclosurePolicy) -> np.ndarray:
    """Primary and secondary suppression of one count column (``x``: the exact value of
    every cell of ``system``); True where suppressed (read it on the ``real`` cells).

    Equations are fixed one at a time (in equation order, so deterministically) and the
    audit is re-run after each round, so few extra cells are hidden."""
    cube = system
    x = np.asarray(x, dtype=np.int64)
    real = system.real
    hidden = ~(system.real | system.known)
    # a hidden cell counts as not shown (an equation holding it and one suppressed cell
    # does not reveal that cell by itself; the audit checks the rest)
    supp = hidden | ((x >= 1) & (x <= p.suppress_max))
    # cells that may be suppressed to protect others: published here and not zero
    candidate = real & (x > 0)
    n_eq = cube.n_eq
    m_eq = np.concatenate([cube.mem_eq, np.arange(n_eq)])
    m_cell = np.concatenate([cube.mem_row, cube.eq_parent])
    m_parent = np.concatenate([np.zeros(len(cube.mem_eq), np.int64), np.ones(n_eq, np.int64)])
    # per equation, its cells in order of preference: children before the parent, smallest
    # count first, ties by key
    order = np.lexsort((cube.rank[m_cell], x[m_cell], m_parent, m_eq))
    starts = np.searchsorted(m_eq[order], np.arange(n_eq + 1))
    ordered = m_cell[order]
    eq_cells = [ordered[starts[e] : starts[e + 1]] for e in range(n_eq)]
    by_cell = np.argsort(m_cell, kind="stable")
    cell_starts = np.searchsorted(m_cell[by_cell], np.arange(len(x) + 1))

    def eqs_of(c: int) -> np.ndarray:
        return m_eq[by_cell[cell_starts[c] : cell_starts[c + 1]]]

    def hide(c: int, n_supp: np.ndarray) -> None:
        supp[c] = True
        np.add.at(n_supp, eqs_of(c), 1)

    def first(cells: np.ndarray, ok: np.ndarray, n_supp: np.ndarray | None = None) -> int | None:
        good = cells[ok[cells]]
        if not len(good):
            return None
        if n_supp is not None:
            # prefer a cell that also completes another equation with one suppressed cell
            helps = np.array([int((n_supp[eqs_of(int(c))] == 1).sum()) for c in good])
            good = good[np.argsort(-helps, kind="stable")]
        return int(good[0])

    for _ in range(len(x) + 1):
        before = supp.copy()
        n_supp = np.zeros(n_eq, dtype=np.int64)
        np.add.at(n_supp, m_eq, supp[m_cell].astype(np.int64))
        # rule: no equation with exactly one suppressed cell
        for e in np.flatnonzero(n_supp == 1):
            if n_supp[e] == 1:
                c = first(eq_cells[e], candidate & ~supp, n_supp)
                if c is not None:
                    hide(c, n_supp)
        # audit: no published non-zero cell whose exact value follows from the rest
        lo, hi = feasible_bounds(
            *published_bounds(x, supp, p, hidden), cube.eq_parent, cube.mem_eq, cube.mem_row
        )
        exact = real & (x > 0) & (lo == hi)
        if p.round_to <= 1:
            exact &= supp  # unrounded visible counts are exact by design
        touched = np.zeros(n_eq, dtype=bool)
        for c in np.flatnonzero(exact):
            for e in eqs_of(int(c)):
                if touched[e]:
                    continue
                touched[e] = True
                # a visible recovered cell is hidden itself; else one more cell goes
                pick = first(eq_cells[e], exact & ~supp) if not supp[c] else None
                if pick is None:
                    pick = first(eq_cells[e], candidate & ~supp, n_supp)
                if pick is not None:
                    hide(pick, n_supp)
        if np.array_equal(before, supp):
            break
    return supp


def protect_table(
    df: pl.DataFrame,
    count_cols: Sequence[str],
    hierarchy: Sequence[str] = (),
    *,
    margins: Sequence[str] = (),
    by: Sequence[str] = (),
    total: object | Mapping[str, object] = "ALL",
    policy: DisclosurePolicy | None = None,
    as_text: bool = True,
) -> pl.DataFrame:
    """The published version of a table of counts: the one function for every published
    table. Returns ``df`` with each of ``count_cols`` replaced by its protected value.

    * ``hierarchy``: key columns from the top down (e.g. ``["pcn_code", "practice_code"]``);
      a row whose key is ``total`` (``"ALL"``; pass a dict for a per-column value, ``None``
      meaning null) is the sum of the rows below it (ALL > PCN > practice).
    * ``margins``: key columns the rows also add up over although the total is not in this
      table (e.g. the areas of one PCN add up to the PCN's population, published elsewhere);
      those totals are taken as published.
    * ``by``: key columns splitting the table into independent parts (e.g. a cohort).

    Rules: zero stays zero; 1..suppress_max suppressed (primary); every other count rounded
    half up to ``round_to``. Secondary (complementary) suppression: in every equation
    ``parent = sum(children)`` either no cell or at least two are suppressed — the extra cell
    is the smallest non-zero visible child, ties by key order (the parent when no child can
    go); then an audit bounds every cell from all published values (interval propagation
    over every equation, a suppressed cell taken as 1..suppress_max) and suppresses more
    until no suppressed or rounded cell has a single feasible value. Repeated to a fixpoint;
    deterministic.

    ``as_text=True``: ``*`` for suppressed, the rounded count as text, null stays null.
    ``as_text=False``: the rounded count as Int64, null where suppressed (or null) — the
    protected counts every published rate is computed from.
    """
    p = policy or DisclosurePolicy.from_env()
    count_cols = list(count_cols)
    totals = dict(total) if isinstance(total, Mapping) else {k: total for k in hierarchy}
    for k in [*margins, *by]:
        totals.setdefault(k, _AGG)  # these columns hold no aggregate rows
    dims = [list(hierarchy)] if hierarchy else []
    dims += [[m] for m in margins]
    if not count_cols or df.is_empty():
        out = df
        supp = {c: np.zeros(df.height, bool) for c in count_cols}
    else:
        cube = _Cube(df, count_cols, dims, list(by), totals)
        rows = cube.frame.filter("_real").sort("_row")
        real_cells = rows["_cell"].to_numpy()
        system = cube.system()
        supp = {
            c: _suppress_column(system, cube.frame[c].to_numpy(), p)[real_cells] for c in count_cols
        }
        out = df
    return out.with_columns(_shown(df[c], supp[c], p, as_text) for c in count_cols)


def _shown(val: pl.Series, supp: np.ndarray, p: DisclosurePolicy, as_text: bool) -> pl.Series:
    """The published version of one count column given where it is suppressed."""
    s = pl.Series("s", supp, dtype=pl.Boolean)
    rounded = pl.select(_rounded(pl.lit(val), p.round_to)).to_series()
    if as_text:
        shown = (
            pl.DataFrame({"v": val, "r": rounded, "s": s})
            .select(
                pl.when(pl.col("v").is_null())
                .then(pl.lit(None, pl.String))
                .when(pl.col("s"))
                .then(pl.lit(SUPPRESSED))
                .otherwise(pl.col("r").cast(pl.String))
            )
            .to_series()
        )
    else:
        shown = (
            pl.DataFrame({"r": rounded, "s": s})
            .select(pl.when(pl.col("s")).then(None).otherwise(pl.col("r")))
            .to_series()
        )
    return shown.alias(val.name)


#: columns of the ``links`` frame of :func:`protect_linked_tables`
LINK_COLUMNS = ("equation", "table", "row", "parent")


def protect_linked_tables(
    tables: Mapping[str, pl.DataFrame],
    count_cols: Sequence[str],
    links: pl.DataFrame,
    *,
    elsewhere: Mapping[str, pl.DataFrame] | None = None,
    policy: DisclosurePolicy | None = None,
    as_text: bool = True,
) -> dict[str, pl.DataFrame]:
    """The published versions of several tables whose cells add up ACROSS tables, protected
    jointly (one system of cells and equations), so that no suppressed or rounded count can
    be recovered by differencing one table against another (ONS: tables that share totals).

    * ``tables``: name -> table published now; each holds every column of ``count_cols``.
    * ``elsewhere``: name -> cells published elsewhere (e.g. PCN totals): a reader knows
      their protected value; they are never suppressed here.
    * ``links``: the equations, one row per cell of each: ``equation`` (any integer id),
      ``table`` (a name of ``tables`` or ``elsewhere``), ``row`` (0-based row of that
      table), ``parent`` (True for the one cell that is the sum of the others).

    Same rules as :func:`protect_table` (primary suppression and rounding; at least two
    suppressed cells in every equation with one; an audit by interval propagation over
    every equation until no suppressed or rounded count has a single feasible value), per
    count column. Ties go by table order (``tables``, then ``elsewhere``) and row order, so
    the same (sorted) tables give the same output. Returns name -> published table (count
    columns as text, or Int64 with null where suppressed when ``as_text=False``)."""
    p = policy or DisclosurePolicy.from_env()
    count_cols = list(count_cols)
    elsewhere = dict(elsewhere or {})
    names = [*tables, *elsewhere]
    if len(set(names)) != len(names):
        raise ValueError("a table name is both published here and elsewhere")
    frames = [*tables.values(), *elsewhere.values()]
    for name, df in zip(names, frames, strict=True):
        missing = [c for c in count_cols if c not in df.columns]
        if missing:
            raise ValueError(f"table {name!r} lacks count column(s) {missing}")
    sizes = np.array([df.height for df in frames], dtype=np.int64)
    offset = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offset[-1])
    real = np.zeros(n, dtype=bool)
    real[: int(offset[len(tables)])] = True
    system = _link_system(links, names, offset, real)
    supp = {}
    for c in count_cols:
        x = np.concatenate(
            [df[c].fill_null(0).cast(pl.Int64).to_numpy() for df in frames] or [np.zeros(0)]
        )
        supp[c] = _suppress_column(system, x, p) if n else np.zeros(0, bool)
    out = {}
    for i, (name, df) in enumerate(tables.items()):
        a, b = int(offset[i]), int(offset[i + 1])
        out[name] = df.with_columns(_shown(df[c], supp[c][a:b], p, as_text) for c in count_cols)
    return out


def _link_system(
    links: pl.DataFrame, names: Sequence[str], offset: np.ndarray, real: np.ndarray
) -> CellSystem:
    missing = [c for c in LINK_COLUMNS if c not in links.columns]
    if missing:
        raise ValueError(f"links lack column(s) {missing}")
    unknown = set(links["table"].unique().to_list()) - set(names)
    if unknown:
        raise ValueError(f"links name unknown table(s) {sorted(map(str, unknown))}")
    table_no = links["table"].replace_strict({t: i for i, t in enumerate(names)}).to_numpy()
    row = links["row"].cast(pl.Int64).to_numpy()
    size = np.diff(offset)
    if len(row) and ((row < 0) | (row >= size[table_no])).any():
        raise ValueError("links name a row outside its table")
    cell = offset[table_no] + row
    eq_ids, eq = np.unique(links["equation"].to_numpy(), return_inverse=True)
    is_parent = links["parent"].cast(pl.Boolean).to_numpy()
    n_parents = np.bincount(eq[is_parent], minlength=len(eq_ids))
    if (n_parents != 1).any():
        raise ValueError("every equation needs exactly one parent cell")
    eq_parent = np.empty(len(eq_ids), dtype=np.int64)
    eq_parent[eq[is_parent]] = cell[is_parent]
    n = len(real)
    return CellSystem(
        real=real,
        known=~real,
        eq_parent=eq_parent,
        mem_eq=eq[~is_parent].astype(np.int64),
        mem_row=cell[~is_parent].astype(np.int64),
        rank=np.arange(n, dtype=np.int64),
    )
