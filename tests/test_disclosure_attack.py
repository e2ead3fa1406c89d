"""Disclosure control against an attacker: protect_table directly, then the published need
tables and summary built from a small hand-made warehouse.

The attacker knows the policy (1-7 suppressed, others rounded half up to 5, rates from the
rounded counts) and every equation linking the published cells (PCN rows add up to ALL,
practices to their PCN, the areas of a PCN to its population); for every published cell
they minimise and maximise its exact value by integer programming (scipy's HiGHS). A cell
that was rounded or suppressed must never come out with a single feasible value. A second
attacker searches all (numerator, denominator) pairs consistent with a published
(count, count, rate, limits) row.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import duckdb
import numpy as np
import polars as pl
import pytest
from record_stub import add_empty_record
from scipy.optimize import Bounds, LinearConstraint, milp

from geo.need import (
    LEVELS,
    build_need_tables,
    count_columns,
    protect_need_counts,
    published_table,
)
from geo.rates import wilson_limits
from phm.disclosure import (
    SUPPRESSED,
    DisclosurePolicy,
    feasible_bounds,
    protect_table,
    rounded_value,
)
from phm.exports import cohort_summary

POLICY = DisclosurePolicy(suppress_max=7, round_to=5, min_rate_events=10)
BIG = 10**7


# ------------------------------------------------------------------------------ attacker


def attack(cells: pl.DataFrame, equations: list[tuple[int, list[int]]]) -> pl.DataFrame:
    """Feasible [min, max] of every cell's exact value given the published values.

    ``cells``: ``shown`` (published text: ``*``, a rounded count, or ``"?"`` for a total
    published elsewhere, taken from ``exact`` rounded) and ``exact``; a ``*`` is taken as
    1..7 when the exact value is (the attacker is told which cells are primary) and as
    1..unbounded otherwise. ``equations``: (parent index, child indices)."""
    n = cells.height
    lo, hi = np.zeros(n), np.zeros(n)
    for i, (shown, exact) in enumerate(cells.select("shown", "exact").iter_rows()):
        if shown == "?":
            shown = SUPPRESSED if 1 <= exact <= 7 else str(rounded_value(exact, POLICY))
        if shown == SUPPRESSED:
            lo[i], hi[i] = 1, (7 if 1 <= exact <= 7 else BIG)
        elif int(shown) == 0:
            lo[i] = hi[i] = 0
        else:
            lo[i], hi[i] = max(int(shown) - 2, 8), int(shown) + 2
    a = np.zeros((len(equations), n))
    for k, (parent, children) in enumerate(equations):
        a[k, parent] = -1
        a[k, children] = 1
    cons = [LinearConstraint(a, 0, 0)] if equations else []
    out_lo, out_hi = np.zeros(n), np.zeros(n)
    for i in range(n):
        c = np.zeros(n)
        c[i] = 1
        for sign, target in ((1, out_lo), (-1, out_hi)):
            res = milp(sign * c, constraints=cons, integrality=np.ones(n), bounds=Bounds(lo, hi))
            assert res.success, res.message
            target[i] = round(sign * res.fun)
    return cells.with_columns(pl.Series("min", out_lo), pl.Series("max", out_hi))


def assert_nothing_recovered(result: pl.DataFrame) -> int:
    """Every published cell that was rounded or suppressed keeps more than one feasible
    value (and the true value among them). Returns the number of cells checked."""
    assert ((result["min"] <= result["exact"]) & (result["exact"] <= result["max"])).all()
    protected = result.filter(
        (pl.col("shown") != "?") & (pl.col("exact") > 0) & (pl.col("shown") != "0")
    )
    recovered = protected.filter(pl.col("min") == pl.col("max"))
    assert recovered.is_empty(), recovered
    return protected.height


def hierarchy_cells(
    raw: pl.DataFrame, pub: pl.DataFrame, col: str, keys: list[str], parent_of
) -> tuple[pl.DataFrame, list[tuple[int, list[int]]]]:
    """Cells of one published column and the equations ``parent_of`` implies: a function of
    a key tuple returning its parent's key tuple (or None)."""
    cells = pl.DataFrame(
        {
            "key": [tuple(r) for r in raw.select(keys).iter_rows()],
            "exact": raw[col].cast(pl.Int64),
            "shown": pub[col].cast(pl.String),
        }
    )
    index = {tuple(k): i for i, k in enumerate(cells["key"].to_list())}
    children: dict[int, list[int]] = {}
    extra = []
    for i, k in enumerate(cells["key"].to_list()):
        pk = parent_of(tuple(k))
        if pk is None:
            continue
        if pk not in index:  # a total published elsewhere
            index[pk] = len(index)
            extra.append(pk)
        children.setdefault(index[pk], []).append(i)
    if extra:
        sums = {pk: int(sum(cells["exact"][j] for j in children[index[pk]])) for pk in extra}
        cells = pl.concat(
            [
                cells,
                pl.DataFrame(
                    {
                        "key": extra,
                        "exact": [sums[pk] for pk in extra],
                        "shown": ["?"] * len(extra),
                    },
                    schema=cells.schema,
                ),
            ]
        )
    return cells, sorted(children.items())


# ------------------------------------------------------------------------------ unit level


def _random_practices(seed: int) -> pl.DataFrame:
    """ALL > 4 PCNs > 2-5 practices, two cohorts of small and middling counts."""
    rng = np.random.default_rng(seed)
    rows = []
    for cohort in ("a", "b"):
        for j in range(4):
            for k in range(int(rng.integers(2, 6))):
                n = int(rng.choice([0, 1, 3, 6, 9, 12, 14, 23, 37, 48, 52]))
                rows.append({"cohort": cohort, "pcn": f"P{j}", "practice": f"P{j}-{k}", "n": n})
    prac = pl.DataFrame(rows)
    pcn = (
        prac.group_by("cohort", "pcn")
        .agg(pl.col("n").sum())
        .with_columns(pl.lit(None, pl.String).alias("practice"))
    )
    top = (
        prac.group_by("cohort")
        .agg(pl.col("n").sum())
        .with_columns(pl.lit("ALL").alias("pcn"), pl.lit(None, pl.String).alias("practice"))
    )
    return pl.concat([t.select("cohort", "pcn", "practice", "n") for t in (top, pcn, prac)]).sort(
        "cohort", "pcn", "practice", nulls_last=False
    )


def _summary_parent(k):
    cohort, pcn, practice = k
    if practice is not None:
        return (cohort, pcn, None)
    if pcn != "ALL":
        return (cohort, "ALL", None)
    return None


@pytest.mark.parametrize("seed", range(6))
def test_protect_table_on_random_hierarchies(seed):
    raw = _random_practices(seed)
    pub = protect_table(
        raw,
        ["n"],
        ["pcn", "practice"],
        by=["cohort"],
        total={"pcn": "ALL", "practice": None},
        policy=POLICY,
    )
    assert pub.select("cohort", "pcn", "practice").equals(raw.select("cohort", "pcn", "practice"))
    shown = pub["n"].to_list()
    exact = raw["n"].to_list()
    for s, x in zip(shown, exact, strict=True):
        if x == 0:
            assert s == "0"
        elif x <= 7:
            assert s == SUPPRESSED  # primary
        elif s != SUPPRESSED:
            assert int(s) == rounded_value(x, POLICY) and int(s) % 5 == 0
    # within each parent: zero or at least two suppressed cells (parent included)
    cells, eqs = hierarchy_cells(raw, pub, "n", ["cohort", "pcn", "practice"], _summary_parent)
    s = cells["shown"].to_list()
    for parent, children in eqs:
        assert sum(s[i] == SUPPRESSED for i in [parent, *children]) != 1
    assert assert_nothing_recovered(attack(cells, eqs)) > 0


def test_rounding_alone_leaks_and_the_audit_closes_it():
    # four children of 12 (shown 10) and a parent of 48 (shown 50): each child is at most
    # 12 and they must add up to at least 48, so all are recovered exactly by rounding alone
    raw = pl.DataFrame({"pcn": ["ALL", "A", "B", "C", "D"], "n": [48, 12, 12, 12, 12]})
    naive = raw.with_columns(pl.col("n").map_elements(lambda v: str(rounded_value(v, POLICY))))
    eqs = [(0, [1, 2, 3, 4])]
    cells = pl.DataFrame({"exact": raw["n"], "shown": naive["n"]})
    leaked = attack(cells, eqs)
    assert (leaked["min"] == leaked["max"]).all()  # the attacker works
    pub = protect_table(raw, ["n"], ["pcn"], policy=POLICY)
    assert (pub["n"] == SUPPRESSED).sum() >= 2
    assert_nothing_recovered(attack(pl.DataFrame({"exact": raw["n"], "shown": pub["n"]}), eqs))


def test_single_suppressed_child_gets_a_complement():
    raw = pl.DataFrame({"pcn": ["ALL", "A", "B", "C"], "n": [5 + 40 + 12, 5, 40, 12]})
    pub = protect_table(raw, ["n"], ["pcn"], policy=POLICY)
    # the smallest non-zero sibling (12) goes with the 5; 40 and the total stay
    assert pub["n"].to_list() == ["55", "*", "40", "*"]
    numeric = protect_table(raw, ["n"], ["pcn"], policy=POLICY, as_text=False)
    assert numeric["n"].to_list() == [55, None, 40, None]


def test_protect_table_is_deterministic_and_keeps_nulls():
    raw = _random_practices(3).with_columns(
        pl.when(pl.col("practice") == "P1-0").then(None).otherwise(pl.col("n")).alias("m")
    )
    a = protect_table(raw, ["n", "m"], ["pcn", "practice"], by=["cohort"], total={"practice": None})
    b = protect_table(
        raw.sample(fraction=1.0, shuffle=True, seed=1),
        ["n", "m"],
        ["pcn", "practice"],
        by=["cohort"],
        total={"practice": None},
    )
    key = ["cohort", "pcn", "practice"]
    assert a.sort(key, nulls_last=True).equals(b.sort(key, nulls_last=True))
    assert a.filter(pl.col("practice") == "P1-0")["m"].null_count() == 2


# ------------------------------------------------------------------------------ rates


def _consistent_pairs(n_shown: str, d_shown: str, pct, lcl, ucl, exact_formula: bool):
    """All (numerator, denominator) pairs consistent with one published prevalence row,
    for a reader assuming the rate came from exact counts or from the rounded ones."""

    def box(s: str):
        if s == "0":
            return range(0, 1)
        if s == SUPPRESSED:
            return range(1, 8)
        return range(max(int(s) - 2, 8), int(s) + 3)

    out = []
    for n in box(n_shown):
        for d in box(d_shown):
            if n > d or d == 0:
                continue
            x, m = (n, d) if exact_formula else (rounded_value(n, POLICY), rounded_value(d, POLICY))
            p, lo, up = (np.round(v * 100, 1) for v in wilson_limits([x], [m]))
            if pct is None or (p[0] == pct and lo[0] == lcl and up[0] == ucl):
                out.append((n, d))
    return out


def test_rates_from_exact_counts_leak_and_from_protected_counts_do_not():
    rng = np.random.default_rng(11)
    d = rng.integers(40, 400, 300)
    n = (d * rng.uniform(0.05, 0.6, 300)).astype(int) + 10
    shown_n = [str(rounded_value(v, POLICY)) for v in n]
    shown_d = [str(rounded_value(v, POLICY)) for v in d]
    # the old way: rate and limits from the exact counts, to 1 decimal place
    p, lo, up = (np.round(v * 100, 1) for v in wilson_limits(n, d))
    leaked = sum(
        _consistent_pairs(sn, sd, p[i], lo[i], up[i], exact_formula=True) == [(n[i], d[i])]
        for i, (sn, sd) in enumerate(zip(shown_n, shown_d, strict=True))
    )
    assert leaked > 250  # nearly every row recovered exactly
    # the published way: from the rounded counts; whatever the reader assumes, no row has a
    # single consistent (numerator, denominator) pair
    rn = [rounded_value(v, POLICY) for v in n]
    rd = [rounded_value(v, POLICY) for v in d]
    p, lo, up = (np.round(v * 100, 1) for v in wilson_limits(rn, rd))
    for i, (sn, sd) in enumerate(zip(shown_n, shown_d, strict=True)):
        pairs = set(_consistent_pairs(sn, sd, p[i], lo[i], up[i], exact_formula=False))
        pairs |= set(_consistent_pairs(sn, sd, p[i], lo[i], up[i], exact_formula=True))
        assert (n[i], d[i]) in pairs
        assert len({a for a, _ in pairs}) > 1 and len({b for _, b in pairs}) > 1


# ------------------------------------------------------------------------------ need tables jointly

NEED_AREAS = {
    "lsoa": "lsoa11_code",
    "msoa": "msoa11_name",
    "imd_decile": "imd2019_decile",
    "imd_quintile": "imd2019_quintile",
}


def need_cells(
    raw: dict[str, pl.DataFrame],
    pub: dict[str, pl.DataFrame],
    col: str,
    lsoa_to: dict,
    decile_to_quintile: dict,
) -> tuple[pl.DataFrame, list[tuple[int, list[int]]]]:
    """The attacker's view of one count column across the FOUR need tables: every published
    cell, the per-PCN totals (published elsewhere, shown as ``?``) and every equation the
    reader knows (built here from the table keys and the public LSOA lookups): ALL = sum of
    PCNs per area; PCN total = sum of its areas at each level; MSOA / decile = sum of its
    LSOAs; quintile = sum of its deciles."""
    keys, exact, shown = [], [], []
    for lvl, area in NEED_AREAS.items():
        for (pcn, a), x, s in zip(
            raw[lvl].select("pcn_code", area).iter_rows(),
            raw[lvl][col].fill_null(0).to_list(),
            pub[lvl][col].cast(pl.String).to_list(),
            strict=True,
        ):
            keys.append((lvl, pcn, a))
            exact.append(int(x))
            shown.append(s if s is not None else "0")
    index = {k: i for i, k in enumerate(keys)}
    pcns = sorted({k[1] for k in keys})
    for pcn in pcns:  # the PCN totals, published elsewhere
        index[("total", pcn, None)] = len(keys)
        keys.append(("total", pcn, None))
        exact.append(sum(x for k, x in zip(keys, exact, strict=False) if k[:2] == ("lsoa", pcn)))
        shown.append("?")
    # equation -> (parent key, children); one parent per equation
    groups: dict[tuple, tuple[tuple, list[int]]] = {}

    def add(eq: tuple, parent: tuple, i: int) -> None:
        groups.setdefault(eq, (parent, []))[1].append(i)

    for k, i in list(index.items()):
        lvl, pcn, a = k
        if lvl == "total":
            if pcn != "ALL":
                add(("totals",), ("total", "ALL", None), i)
            continue
        if pcn != "ALL":
            add(("pcns", lvl, a), (lvl, "ALL", a), i)
        add(("areas", lvl, pcn), ("total", pcn, None), i)
        if lvl == "lsoa":
            for j, coarse in enumerate(("msoa", "imd_decile")):
                add((coarse, pcn, lsoa_to[a][j]), (coarse, pcn, lsoa_to[a][j]), i)
        if lvl == "imd_decile":
            q = decile_to_quintile[a]
            add(("imd_quintile", pcn, q), ("imd_quintile", pcn, q), i)
    eqs = [(index[parent], children) for parent, children in groups.values()]
    cells = pl.DataFrame({"key": [str(k) for k in keys], "exact": exact, "shown": shown})
    return cells, eqs


def interval_attack(
    cells: pl.DataFrame,
    equations: list[tuple[int, list[int]]],
    policy: DisclosurePolicy = POLICY,
) -> pl.DataFrame:
    """The same attacker as :func:`attack` by interval propagation (fast, for big systems),
    for any policy (a rounded count R in [R - base/2, R + base/2), above suppress_max)."""
    n = cells.height
    cap = policy.suppress_max
    half, up = policy.round_to // 2, (max(policy.round_to, 1) - 1) // 2
    lo, hi = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i, (shown, exact) in enumerate(cells.select("shown", "exact").iter_rows()):
        if shown == "?":
            shown = SUPPRESSED if 1 <= exact <= cap else str(rounded_value(exact, policy))
        if shown == SUPPRESSED:
            lo[i], hi[i] = 1, (cap if 1 <= exact <= cap else BIG)
        elif int(shown) > 0:
            lo[i], hi[i] = max(int(shown) - half, cap + 1), int(shown) + up
    eq_parent = np.array([p for p, _ in equations], np.int64)
    mem_eq = np.array([e for e, (_, ch) in enumerate(equations) for _ in ch], np.int64)
    mem_row = np.array([c for _, ch in equations for c in ch], np.int64)
    out_lo, out_hi = feasible_bounds(lo, hi, eq_parent, mem_eq, mem_row)
    return cells.with_columns(pl.Series("min", out_lo), pl.Series("max", out_hi))


def recovered(result: pl.DataFrame, policy: DisclosurePolicy = POLICY) -> pl.DataFrame:
    """Published cells that were rounded or suppressed yet have a single feasible value (with
    rounding off, a visible count is exact by design: only suppressed cells count)."""
    assert ((result["min"] <= result["exact"]) & (result["exact"] <= result["max"])).all()
    hidden = pl.col("shown") == SUPPRESSED if policy.round_to <= 1 else pl.col("shown") != "?"
    return result.filter(
        hidden & (pl.col("exact") > 0) & (pl.col("shown") != "0") & (pl.col("min") == pl.col("max"))
    )


def separately(raw: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The four need tables protected one by one (the way before joint protection)."""
    return {
        lvl: protect_table(
            df,
            [c for c in count_columns(df) if c in df.columns],
            ["pcn_code"],
            margins=[NEED_AREAS[lvl]],
            policy=POLICY,
        )
        for lvl, df in raw.items()
    }


def as_text(protected: dict[str, pl.DataFrame], col: str) -> dict[str, pl.DataFrame]:
    """Int64 protected counts (null = suppressed) as the published text."""
    return {
        lvl: df.with_columns(pl.col(col).cast(pl.String).fill_null(SUPPRESSED))
        for lvl, df in protected.items()
    }


TINY_LSOAS = {"L1": ("M1", 1), "L2": ("M1", 2), "L3": ("M2", 1), "L4": ("M2", 2)}
TINY_QUINTILE = {1: 1, 2: 1}


def tiny_need(counts: dict[tuple[str, str], int]) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Raw need tables (population only) of a hand-made area: 2 MSOAs of 2 LSOAs each, each
    MSOA with one LSOA in IMD decile 1 and one in decile 2 (both quintile 1)."""
    base = pl.DataFrame(
        [{"pcn_code": p, "lsoa11_code": lsoa, "population": n} for (p, lsoa), n in counts.items()]
    ).with_columns(
        pl.col("lsoa11_code")
        .replace_strict({k: v[0] for k, v in TINY_LSOAS.items()})
        .alias("msoa11_name"),
        pl.col("lsoa11_code")
        .replace_strict({k: v[1] for k, v in TINY_LSOAS.items()})
        .alias("imd2019_decile"),
    )
    base = base.with_columns(
        pl.col("imd2019_decile").replace_strict(TINY_QUINTILE).alias("imd2019_quintile")
    )
    raw = {}
    for lvl, area in NEED_AREAS.items():
        t = base.group_by("pcn_code", area).agg(pl.col("population").sum())
        every = t.group_by(area).agg(pl.col("population").sum())
        raw[lvl] = pl.concat(
            [t, every.select(pl.lit("ALL").alias("pcn_code"), area, "population")]
        ).sort("pcn_code", area)
    mapping = pl.DataFrame(
        {
            "lsoa": list(TINY_LSOAS),
            "msoa": [v[0] for v in TINY_LSOAS.values()],
            "imd_decile": [v[1] for v in TINY_LSOAS.values()],
            "imd_quintile": [TINY_QUINTILE[v[1]] for v in TINY_LSOAS.values()],
        }
    )
    return raw, mapping


def test_need_tables_tiny_area_leak_when_protected_separately_not_jointly():
    # each table passes on its own, yet differencing MSOAs and deciles against the LSOAs
    # recovers LSOA counts (two of them suppressed) exactly
    counts = {("P1", "L1"): 31, ("P1", "L2"): 31, ("P1", "L3"): 46, ("P1", "L4"): 46}
    counts |= {("P2", "L1"): 31, ("P2", "L2"): 3, ("P2", "L4"): 12}
    raw, mapping = tiny_need(counts)
    sep = separately(raw)
    leaked = recovered(attack(*need_cells(raw, sep, "population", TINY_LSOAS, TINY_QUINTILE)))
    lsoa_leaks = leaked.filter(pl.col("key").str.starts_with("('lsoa'"))
    assert (lsoa_leaks["shown"] == SUPPRESSED).sum() >= 1
    # jointly: the MILP attacker using all four tables and the PCN totals recovers nothing
    joint = as_text(
        protect_need_counts(raw, mapping, POLICY, prevalences=(), rates=()), "population"
    )
    cells, eqs = need_cells(raw, joint, "population", TINY_LSOAS, TINY_QUINTILE)
    assert recovered(attack(cells, eqs)).is_empty()
    # still the published policy: 1-7 hidden, others rounded or hidden, zeros none here
    for lvl, df in joint.items():
        for shown, exact in zip(df["population"], raw[lvl]["population"], strict=True):
            assert shown == SUPPRESSED or (exact > 7 and int(shown) == rounded_value(exact, POLICY))
    assert (joint["lsoa"]["population"] != SUPPRESSED).any()


def test_need_mapping_must_be_a_function():
    raw, mapping = tiny_need({("P1", "L1"): 20, ("P1", "L2"): 30})
    from geo.need import area_mapping

    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    con.execute(
        "CREATE TABLE marts.patient_measures AS SELECT * FROM (VALUES "
        "('E01000001', 1, 1), ('E01000001', 2, 1)) t(lsoa11_code, imd2019_decile, imd2019_quintile)"
    )
    with pytest.raises(ValueError, match="more than one") as err:
        area_mapping(con)
    assert "E01000001" not in str(err.value)
    # the tables protected against a broken mapping: refused, not guessed
    bad = pl.concat([mapping, mapping.head(1).with_columns(pl.lit("M2").alias("msoa"))])
    with pytest.raises(ValueError, match="more than one MSOA"):
        protect_need_counts(raw, bad, POLICY, prevalences=(), rates=())


def attacker_lookups() -> tuple[dict, dict]:
    """The public lookups an attacker uses: LSOA -> (MSOA name, IMD 2019 decile), decile ->
    quintile (a null or unknown LSOA -> nulls)."""
    from geo.reference import load_imd2019, lsoa_msoa_lookup

    msoa = dict(lsoa_msoa_lookup().iter_rows())
    imd = load_imd2019().select("lsoa11_code", "imd_decile", "imd_quintile")
    lsoa_to = {code: (msoa.get(code), dec) for code, dec, _ in imd.iter_rows()}
    quintile = {dec: q for _, dec, q in imd.iter_rows()} | {None: None}
    return defaultdict(lambda: (None, None), lsoa_to), quintile


def need_tables(con) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    raw = {lvl: con.execute(f"SELECT * FROM {t}").pl() for lvl, (_, t) in LEVELS.items()}
    pub = {lvl: con.execute(f"SELECT * FROM {published_table(lvl)}").pl() for lvl in LEVELS}
    return raw, pub


def every_count_hidden(raw: dict[str, pl.DataFrame], col: str) -> dict[str, pl.DataFrame]:
    """The most any cell suppression can do: every non-zero count ``*`` (zero stays zero)."""
    return {
        lvl: df.with_columns(
            pl.when(pl.col(col).fill_null(0) > 0)
            .then(pl.lit(SUPPRESSED))
            .otherwise(pl.lit("0"))
            .alias(col)
        )
        for lvl, df in raw.items()
    }


def leaks(raw, pub, col, lookups) -> set[str]:
    return set(recovered(interval_attack(*need_cells(raw, pub, col, *lookups)))["key"])


@pytest.fixture(scope="module")
def need_home():
    """A need home built by build_need_tables from a hand-made warehouse (3 PCNs, 8 LSOAs)."""
    con = _warehouse(seed=3, patients=900)
    build_need_tables(con, POLICY)
    yield need_tables(con)
    con.close()


def test_need_tables_resist_differencing_across_all_four_tables(need_home):
    raw, pub = need_home
    lookups = attacker_lookups()
    counts = count_columns(pub["lsoa"])
    assert len(counts) > 10
    checked = suppressed = 0
    for col in counts:
        cells, eqs = need_cells(raw, pub, col, *lookups)
        result = interval_attack(cells, eqs)
        assert recovered(result).is_empty(), (col, recovered(result))
        checked += result.filter((pl.col("shown") != "?") & (pl.col("exact") > 0)).height
        suppressed += (cells["shown"] == SUPPRESSED).sum()
    assert checked > 500 and suppressed > 100
    # the attacker is able: the same tables protected one by one leak through each other
    sep = separately(raw)
    assert sum(len(leaks(raw, sep, col, lookups)) for col in counts) > 0


def test_need_tables_of_a_generated_home_leak_only_what_no_suppression_can_hide(small_home):
    """On the small generated home (1,500 patients), sparse columns (a few frail patients
    spread over many LSOAs) are pinned by the PCN totals published elsewhere and the zeros
    (zero stays zero) even if every non-zero count were hidden: those cells aside, nothing is
    recovered from the four tables together."""
    from phm.paths import warehouse_path
    from phm.warehouse import session

    _, home = small_home
    with session(warehouse_path(home), read_only=True) as con:
        raw, pub = need_tables(con)
    assert raw["lsoa"]["pcn_code"].n_unique() >= 3
    lookups = attacker_lookups()
    for col in count_columns(pub["lsoa"]):
        beyond = leaks(raw, pub, col, lookups) - leaks(
            raw, every_count_hidden(raw, col), col, lookups
        )
        assert not beyond, (col, beyond)


# ------------------------------------------------------------------------------ published


def _warehouse(seed: int = 7, patients: int = 900) -> duckdb.DuckDBPyConnection:
    """marts.patient_measures / cohort_members / cohort_definitions and staging.practices
    for a few hundred random patients in 3 PCNs, 6 practices and 8 LSOAs."""
    from geo.reference import load_imd2019

    rng = np.random.default_rng(seed)
    imd = load_imd2019().sort("lsoa11_code").head(8)
    lsoas = imd["lsoa11_code"].to_list()
    practices = [f"A{i:05d}" for i in range(6)]
    pcn_of = {p: f"U{i // 2:05d}" for i, p in enumerate(practices)}
    pr = [str(p) for p in rng.choice(practices, patients, p=[0.3, 0.05, 0.25, 0.1, 0.2, 0.1])]
    options = [*lsoas, None]
    lsoa = [options[i] for i in rng.integers(0, len(options), patients)]
    pm = pl.DataFrame(
        {
            "person_id": [f"p{i:05d}" for i in range(patients)],
            "age": rng.integers(0, 95, patients).astype(np.int32),
            "sex": [str(x) for x in rng.choice(["F", "M"], patients)],
            "practice_code": pr,
            "pcn_code": [pcn_of[p] for p in pr],
            "lsoa11_code": lsoa,
            "ltc_count": rng.poisson(1.2, patients),
            "mental_ltc_count": np.zeros(patients, int),
            "physical_ltc_count": np.zeros(patients, int),
            "efi_category": [
                str(x) for x in rng.choice(["fit", "mild", "moderate", "severe"], patients)
            ],
            "hfrs_category": [None] * patients,
            "emergency_admissions_12m": rng.poisson(0.15, patients),
            "ae_attendances_12m": rng.poisson(0.4, patients),
        },
        schema_overrides={"hfrs_category": pl.String, "lsoa11_code": pl.String},
    )
    pm = pm.join(
        imd.select("lsoa11_code", pl.col("imd_decile").cast(pl.Int32).alias("imd2019_decile")),
        on="lsoa11_code",
        how="left",
    ).with_columns(
        ((pl.col("imd2019_decile") + 1) // 2).cast(pl.Int32).alias("imd2019_quintile"),
        pl.col("imd2019_decile").is_not_null().alias("deprivation_known"),
    )
    ids = pm["person_id"].to_list()
    members = pl.DataFrame(
        {
            "cohort_id": ["frail"] * 60 + ["carers"] * 25,
            "person_id": [str(x) for x in rng.choice(ids, 60, replace=False)]
            + [str(x) for x in rng.choice(ids, 25, replace=False)],
        }
    ).with_columns(pl.int_range(pl.len()).over("cohort_id").alias("rank"))
    con = duckdb.connect()
    for s in ("staging", "marts"):
        con.execute(f"CREATE SCHEMA {s}")
    tables = {
        "marts.patient_measures": pm,
        "marts.cohort_members": members,
        "marts.cohort_definitions": pl.DataFrame({"cohort_id": ["carers", "frail"]}),
        "staging.practices": pl.DataFrame(
            {
                "practice_code": practices,
                "practice_name": [f"Practice {p}" for p in practices],
                "pcn_code": [pcn_of[p] for p in practices],
                "pcn_name": [f"PCN {pcn_of[p]}" for p in practices],
            }
        ),
    }
    for name, df in tables.items():
        con.register("_df", df)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _df")
        con.unregister("_df")
    add_empty_record(con, dt.date(2026, 11, 1))
    return con


@pytest.fixture(scope="module")
def published():
    con = _warehouse()
    build_need_tables(con, POLICY)
    yield con
    con.close()


def test_need_table_resists_differencing(published):
    con = published
    raw = con.execute("SELECT * FROM geo.need_by_lsoa").pl()
    pub = con.execute(f"SELECT * FROM {published_table('lsoa')}").pl()

    def parent(k):  # PCN rows add up to ALL per LSOA; a PCN's LSOAs add up to its total
        pcn, area = k
        if area == "__total__":
            return ("ALL", "__total__") if pcn != "ALL" else None
        return ("ALL", area) if pcn != "ALL" else None

    def area_parent(k):
        pcn, area = k
        return None if area == "__total__" else (pcn, "__total__")

    checked = 0
    counts = [c for c in pub.columns if c == "population" or c.endswith(("_n", "_denominator"))]
    suppressed = 0
    for col in counts:
        cells, eqs = hierarchy_cells(raw, pub, col, ["pcn_code", "lsoa11_code"], parent)
        # add the per-PCN totals over areas (published elsewhere, e.g. summary.csv)
        keys = [tuple(k) for k in cells["key"].to_list()]
        index = {k: i for i, k in enumerate(keys)}
        by_total: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            pk = area_parent(k)
            if pk is not None:
                by_total.setdefault(pk, []).append(i)
        extra = [pk for pk in by_total if pk not in index]
        exact = cells["exact"].to_list()
        cells = pl.concat(
            [
                cells,
                pl.DataFrame(
                    {
                        "key": extra,
                        "exact": [sum(exact[j] for j in by_total[pk]) for pk in extra],
                        "shown": ["?"] * len(extra),
                    },
                    schema=cells.schema,
                ),
            ]
        )
        for pk in extra:
            index[pk] = len(index)
        eqs = eqs + [(index[pk], ch) for pk, ch in sorted(by_total.items(), key=str)]
        eqs.append((index[("ALL", "__total__")], [index[pk] for pk in extra if pk[0] != "ALL"]))
        checked += assert_nothing_recovered(attack(cells, eqs))
        suppressed += (pub[col] == SUPPRESSED).sum()
    assert checked > 100 and suppressed > 10


def test_published_rates_rest_on_protected_counts(published):
    pub = published.execute(f"SELECT * FROM {published_table('imd_decile')}").pl()
    shown = pub.filter(pl.col("ltc2_pct").is_not_null())
    assert shown.height > 0
    n = shown["ltc2_n"].cast(pl.Int64).to_numpy()
    d = shown["ltc2_denominator"].cast(pl.Int64).to_numpy()
    p, lo, up = (np.round(v * 100, 1) for v in wilson_limits(n, d))
    assert np.allclose(shown["ltc2_pct"].to_numpy(), p)
    assert np.allclose(shown["ltc2_pct_lcl95"].to_numpy(), lo)
    assert np.allclose(shown["ltc2_pct_ucl95"].to_numpy(), up)
    # no rate next to a suppressed count, none on fewer than 10 (protected) events
    hidden = pub.filter((pl.col("ltc2_n") == SUPPRESSED) | (pl.col("ltc2_denominator") == "*"))
    assert hidden["ltc2_pct"].null_count() == hidden.height
    crude = pub.filter(pl.col("ae_attendances_crude_per_1000").is_not_null())
    assert (crude["ae_attendances_n"].cast(pl.Int64) >= 10).all()
    expected = crude["ae_attendances_n"].cast(pl.Int64) / crude["population"].cast(pl.Int64)
    assert np.allclose(
        crude["ae_attendances_crude_per_1000"].to_numpy(), np.round(expected * 1000, 1)
    )


def test_summary_resists_differencing(published):
    pub = cohort_summary(published, POLICY)
    exact = cohort_summary(published, DisclosurePolicy(suppress_max=0, round_to=1))
    assert pub.select("level", "pcn_code", "practice_code", "cohort_id").equals(
        exact.select("level", "pcn_code", "practice_code", "cohort_id")
    )
    assert set(pub["level"]) == {"all", "pcn", "practice"}
    checked = 0
    for col in ("registered", "members"):
        raw = exact.with_columns(pl.col(col).cast(pl.Int64))
        cells, eqs = hierarchy_cells(
            raw, pub, col, ["cohort_id", "pcn_code", "practice_code"], _summary_parent
        )
        s = cells["shown"].to_list()
        for parent, children in eqs:
            assert sum(s[i] == SUPPRESSED for i in [parent, *children]) != 1
        checked += assert_nothing_recovered(attack(cells, eqs))
    assert checked > 20
    assert (pub["members"] == SUPPRESSED).sum() >= 2


def test_segment_table_tiers_and_segments_are_protected_together():
    from segmentation.report import _protect_segment_counts
    from segmentation.risk.scoring import TIERS

    tiers = [t for t, _ in TIERS]
    rng = np.random.default_rng(2)
    grid = rng.choice([0, 2, 5, 9, 13, 31, 58], size=(6, len(tiers)))
    counts = pl.DataFrame(
        {"segment": [f"s{i}" for i in range(6)], "priority": list(range(1, 7))}
    ).with_columns(
        *(pl.Series(t, grid[:, j]).cast(pl.Int64) for j, t in enumerate(tiers)),
        pl.Series("n", grid.sum(axis=1)).cast(pl.Int64),
    )
    shown = _protect_segment_counts(counts, True, POLICY)
    assert shown["segment"].to_list() == counts["segment"].to_list()
    # each segment row (its tiers add up to n) and each tier column (its segments add up to
    # the tier's total, published as the PCN total elsewhere): never one suppressed cell
    rows = shown.select("n", *tiers).to_numpy()
    assert ((rows == SUPPRESSED).sum(axis=1) != 1).all()
    assert (rows == SUPPRESSED).any()
    for j in range(rows.shape[1]):
        col = rows[:, j]
        # the column's total is visible unless it is small: then two hidden cells are enough
        assert (col == SUPPRESSED).sum() != 1 or 1 <= int(counts.to_numpy()[:, 2 + j].sum()) <= 7
    # every visible value is the count rounded to 5
    exact = counts.select("n", *tiers).to_numpy()
    visible = rows != SUPPRESSED
    assert all(
        int(v) == rounded_value(int(x), POLICY)
        for v, x in zip(rows[visible], exact[visible], strict=True)
    )


def test_dsr_rests_on_rounded_band_counts(published):
    from geo.need import need_strata

    strata = need_strata(published, "imd_quintile").filter(pl.col("band").is_not_null())
    bands = strata.group_by("pcn_code", "area").agg(
        ((pl.col("ae_attendances_n") + 2) // 5 * 5).sum().alias("rounded_events")
    )
    pub = published.execute(f"SELECT * FROM {published_table('imd_quintile')}").pl()
    rows = pub.join(
        bands.rename({"area": "imd2019_quintile"}),
        on=["pcn_code", "imd2019_quintile"],
        how="left",
        nulls_equal=True,
    )
    shown = rows.filter(pl.col("ae_attendances_dsr_per_1000").is_not_null())
    assert shown.height > 0
    assert (shown["rounded_events"] >= 10).all()
    assert (shown["ae_attendances_n"] != SUPPRESSED).all()
    hidden = rows.filter(pl.col("rounded_events") < 10)
    assert hidden["ae_attendances_dsr_per_1000"].null_count() == hidden.height


def test_impact_caseload_partitions_get_complementary_suppression():
    import datetime as dt

    from phm.impact.report import caseload_table

    month = dt.date(2026, 10, 1)
    rows = [("referrals", "all", 57), ("status", "closed", 5), ("status", "contacted", 40)]
    rows += [("status", "declined", 12), ("reason", "frailty", 3), ("reason", "ltc", 50)]
    caseload = pl.DataFrame(
        {
            "pcn_code": ["U1"] * len(rows),
            "month": [month] * len(rows),
            "dimension": [r[0] for r in rows],
            "category": [r[1] for r in rows],
            "n": [r[2] for r in rows],
            "denominator": [57] * len(rows),
            "value": [None] * len(rows),
        },
        schema_overrides={"value": pl.Float64},
    )
    out = caseload_table(caseload, "U1", POLICY)
    shown = {(d, c): n for d, c, n in out.select("dimension", "category", "n").iter_rows()}
    # statuses add up to the referrals: the 5 takes the smallest other status with it
    assert shown[("status", "closed")] == "*" and shown[("status", "declined")] == "*"
    assert shown[("status", "contacted")] == "40" and shown[("referrals", "all")] == "55"
    # reasons overlap (several per referral): primary suppression only
    assert shown[("reason", "frailty")] == "*" and shown[("reason", "ltc")] == "50"
    shares = dict(zip(out["category"], out["share"], strict=True))
    assert shares["declined"] is None and shares["contacted"] == pytest.approx(40 / 55)


def test_model_card_calibration_rates_come_from_protected_counts():
    """A decile of 127 patients with 23 events: the published rate is 25/125, never 23/127,
    and a decile with a suppressed or small event count shows no rate at all."""
    from segmentation.report import published_calibration

    cal = pl.DataFrame(
        {
            "decile": [1, 2, 3],
            "n": [127, 127, 126],
            "events": [23, 5, 9],
            "mean_predicted": [0.1, 0.05, 0.07],
            "observed_rate": [23 / 127, 5 / 127, 9 / 126],
        }
    )
    pub = published_calibration(cal, POLICY)
    assert pub["patients"].to_list() == ["125", "125", "125"]
    assert pub["with_outcome"].to_list() == ["25", "*", "10"]
    assert pub["observed_rate"][0] == pytest.approx(25 / 125)
    assert pub["observed_rate"][1] is None  # suppressed events: no rate
    assert pub["observed_rate"][2] == pytest.approx(10 / 125)
    # the exact count cannot be searched back from the published rate and rounded counts
    n_candidates = {
        (n, e)
        for n in range(123, 128)
        for e in range(21, 28)
        if round(e / n, 4) == round(pub["observed_rate"][0], 4)
    }
    assert (127, 23) not in n_candidates


# ------------------------------------------------------------------------------ pyramid


def cube_cells(
    exact: pl.DataFrame, shown: pl.DataFrame, keys: list[str]
) -> tuple[pl.DataFrame, list[tuple[int, list[int]]]]:
    """Cells of a table over ``keys`` and every margin (sums over any subset of the keys,
    taken as published elsewhere: ``?``), with the equations linking them."""
    base = [tuple(r) for r in exact.select(keys).iter_rows()]
    value = dict(zip(base, exact["n"].to_list(), strict=True))
    text = dict(zip(base, shown["n"].cast(pl.String).fill_null(SUPPRESSED).to_list(), strict=True))
    cells: dict[tuple, int] = {}
    for k in base:
        for mask in range(1 << len(keys)):
            agg = tuple("*all*" if mask >> j & 1 else v for j, v in enumerate(k))
            cells[agg] = cells.get(agg, 0) + value[k]
    order = sorted(cells, key=str)
    index = {k: i for i, k in enumerate(order)}
    groups: dict[tuple, list[int]] = {}
    for k in order:
        for j in range(len(keys)):
            if k[j] != "*all*":
                parent = (*k[:j], "*all*", *k[j + 1 :])
                groups.setdefault((j, parent), []).append(index[k])
    eqs = [(index[parent], ch) for (_, parent), ch in groups.items()]
    frame = pl.DataFrame(
        {
            "key": [str(k) for k in order],
            "exact": [cells[k] for k in order],
            "shown": [text.get(k, "?") for k in order],
        }
    )
    return frame, eqs


def _pcn_patients(seed: int, n: int) -> pl.DataFrame:
    from segmentation.bridges import segment_names

    rng = np.random.default_rng(seed)
    names = segment_names()
    return pl.DataFrame(
        {
            "age": rng.integers(0, 100, n),
            "sex": [str(x) for x in rng.choice(["F", "M", "U"], n, p=[0.5, 0.48, 0.02])],
            "segment": [str(x) for x in rng.choice(names, n, p=_segment_shares(len(names)))],
        }
    )


def _segment_shares(k: int) -> list[float]:
    w = np.array([0.02, 0.03, 0.05, 0.1, 0.2, 0.05, 0.55][:k], float)
    w = np.resize(w, k) if len(w) < k else w
    return list(w / w.sum())


#: the policy with rounding switched off (PHM_SDC_ROUND_TO=1): only suppression protects
UNROUNDED = DisclosurePolicy(suppress_max=7, round_to=1, min_rate_events=10)


@pytest.mark.parametrize(("seed", "policy"), [(1, POLICY), (2, POLICY), (1, UNROUNDED)])
def test_population_pyramid_resists_differencing(seed, policy):
    from segmentation.bridges import segment_names
    from segmentation.report import pyramid_counts

    names = segment_names()
    sub = _pcn_patients(seed, 700)
    counts = pyramid_counts(sub, names, policy)
    keys = ["sex", "band", "segment"]
    assert set(counts["sex"]) == {"F", "M"}
    assert int(counts["n"].sum()) == sub.filter(pl.col("sex") != "U").height
    # every shown value is the count rounded; 1-7 never shown
    vis = counts.filter(pl.col("shown").is_not_null())
    assert all(rounded_value(n, policy) == v for n, v in vis.select("n", "shown").iter_rows())
    assert counts.filter(pl.col("n") <= 7)["shown"].null_count() == (counts["n"] <= 7).sum()
    cells, eqs = cube_cells(counts, counts.select(pl.col("shown").alias("n")), keys)
    leaked = set(recovered(interval_attack(cells, eqs, policy), policy)["key"])
    if policy.round_to > 1:
        assert not leaked
    else:
        # unrounded, a few 1s are pinned even if every non-zero cell were hidden (three
        # cells of at least 1 under a small margin); nothing else is recovered
        every = counts.select(pl.when(pl.col("n") > 0).then(None).otherwise(0).alias("n"))
        pinned = recovered(interval_attack(*cube_cells(counts, every, keys), policy), policy)
        assert leaked <= set(pinned["key"]), leaked - set(pinned["key"])
    assert (cells["shown"] == SUPPRESSED).sum() > (counts["n"] <= 7).sum()  # complements
    # cell by cell (1-7 hidden, others rounded: the way before) the attacker recovers
    # suppressed cells by differencing when counts are not rounded
    naive = counts.select(
        pl.when(pl.col("n") <= 7)
        .then(None)
        .otherwise(pl.col("n").map_elements(lambda v: rounded_value(v, policy), pl.Int64))
        .alias("n")
    )
    naive_leaks = recovered(interval_attack(*cube_cells(counts, naive, keys), policy), policy)
    if policy.round_to == 1:
        assert set(naive_leaks["key"]) - set(pinned["key"])


def test_pyramid_png_marks_suppressed_bars(tmp_path):
    from segmentation.bridges import segment_names
    from segmentation.report import _pyramid, pyramid_counts

    names = segment_names()
    sub = _pcn_patients(3, 400)
    assert pyramid_counts(sub, names, POLICY)["shown"].null_count() > 0
    path = tmp_path / "p.png"
    _pyramid(sub, "U1", names, path, POLICY)
    first = path.read_bytes()
    _pyramid(sub, "U1", names, path, POLICY)
    assert path.read_bytes() == first and first[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ impact


def _monthly_caseload(seed: int) -> pl.DataFrame:
    """One PCN's caseload_monthly rows over 14 months, some months with a handful of
    referrals."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(14):
        month = dt.date(2025 + (9 + i) // 12, (9 + i) % 12 + 1, 1)
        n = int(rng.choice([3, 9, 12, 14, 22, 31]))
        statuses = rng.multinomial(n, [0.5, 0.3, 0.2])
        sources = rng.multinomial(n, [0.7, 0.3])
        first = int(rng.integers(0, n + 1))
        rows.append((month, "referrals", "all", n, None))
        for cat, k in zip(["contacted", "declined", "waiting"], statuses, strict=True):
            if k:
                rows.append((month, "status", cat, int(k), None))
        for cat, k in zip(["gp", "self"], sources, strict=True):
            if k:
                rows.append((month, "source", cat, int(k), None))
        rows.append((month, "contact_attempts", "mean", n, 1.5))
        if first:
            rows.append((month, "days_to_first_contact", "mean", first, 9.0))
            rows.append((month, "days_to_first_contact", "median", first, 8.0))
        rows.append((month, "reason", "frailty", int(rng.integers(1, n + 1)), None))
    df = pl.DataFrame(
        rows,
        schema={
            "month": pl.Date,
            "dimension": pl.String,
            "category": pl.String,
            "n": pl.Int64,
            "value": pl.Float64,
        },
        orient="row",
    )
    den = df.filter(pl.col("dimension") == "referrals").select("month", pl.col("n").alias("d"))
    return df.join(den, on="month").select(
        pl.lit("U1").alias("pcn_code"),
        "month",
        "dimension",
        "category",
        "n",
        pl.col("d").alias("denominator"),
        "value",
    )


def caseload_cells(
    raw: pl.DataFrame, monthly: pl.DataFrame, totals: pl.DataFrame, start: str
) -> tuple[pl.DataFrame, list[tuple[int, list[int]]]]:
    """The attacker's cells: every monthly row and every 12-month total row, with the
    equations a reader knows: the months of the period add up to the total; per month (and
    for the total) the statuses / sources add up to the referrals; the mean of contact
    attempts counts the referrals; the median of days counts what the mean does."""
    exact = {
        (str(m), d, c): n
        for m, d, c, n in raw.select("month", "dimension", "category", "n").iter_rows()
    }
    keys, ex, sh = [], [], []
    for m, d, c, n in monthly.select("month", "dimension", "category", "n").iter_rows():
        keys.append((m, d, c))
        ex.append(exact[(m, d, c)])
        sh.append(n)
    in_window = [k for k in keys if k[0] >= start and k[2] != "median"]
    for d, c, n in totals.select("dimension", "category", "n").iter_rows():
        keys.append(("total", d, c))
        ex.append(sum(exact[k] for k in in_window if k[1:] == (d, c)))
        sh.append(n)
    index = {k: i for i, k in enumerate(keys)}
    eqs = []
    for d, c in {k[1:] for k in keys if k[0] == "total"}:
        eqs.append((index[("total", d, c)], [index[k] for k in in_window if k[1:] == (d, c)]))
    for period in {k[0] for k in keys}:
        ref = index[(period, "referrals", "all")]
        for dim in ("status", "source"):
            eqs.append((ref, [i for k, i in index.items() if k[0] == period and k[1] == dim]))
        eqs.append((ref, [index[(period, "contact_attempts", "mean")]]))
        if (period, "days_to_first_contact", "median") in index:
            mean = index[(period, "days_to_first_contact", "mean")]
            eqs.append((mean, [index[(period, "days_to_first_contact", "median")]]))
    cells = pl.DataFrame({"key": [str(k) for k in keys], "exact": ex, "shown": sh})
    return cells, eqs


@pytest.mark.parametrize(
    ("seed", "policy"), [(0, POLICY), (1, POLICY), (2, POLICY), (2, UNROUNDED)]
)
def test_impact_monthly_rows_resist_differencing_against_the_period_totals(seed, policy):
    from phm.impact.report import caseload_table, caseload_totals

    raw = _monthly_caseload(seed)
    extract = dt.date(2026, 11, 20)
    start = "2025-12-01"
    totals = caseload_totals(raw, "U1", extract, 12, policy)
    monthly = caseload_table(raw, "U1", policy, extract_date=extract)
    assert monthly.height == raw.height and totals.height > 5
    # the referrals column is shown as the month's referrals row
    refs = monthly.filter(pl.col("dimension") == "referrals").select(
        "month", pl.col("n").alias("r")
    )
    assert monthly.join(refs, on="month").filter(pl.col("referrals") != pl.col("r")).is_empty()
    assert (monthly["n"] == SUPPRESSED).sum() > ((raw["n"] >= 1) & (raw["n"] <= 7)).sum()

    def leaks(months: pl.DataFrame, total: pl.DataFrame) -> set[str]:
        cells, eqs = caseload_cells(raw, months, total, start)
        return set(recovered(interval_attack(cells, eqs, policy), policy)["key"])

    leaked = leaks(monthly, totals)
    if policy.round_to > 1:
        assert not leaked
        return
    # unrounded: only what stays pinned if every non-zero count were hidden
    every = {
        "months": monthly.with_columns(
            pl.when(raw["n"] > 0).then(pl.lit(SUPPRESSED)).otherwise(pl.lit("0")).alias("n")
        ),
        "total": totals.with_columns(
            pl.when(pl.col("n") != "0").then(pl.lit(SUPPRESSED)).otherwise(pl.col("n")).alias("n")
        ),
    }
    pinned = leaks(every["months"], every["total"])
    assert leaked <= pinned, leaked - pinned
    # the months protected without their total: a suppressed month is the total minus the
    # other months
    alone = caseload_table(raw, "U1", policy)
    assert leaks(alone, totals) - pinned
