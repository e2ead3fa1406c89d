"""Matching's vectorised path (:func:`phm.impact.matching.load_panel`, :func:`month_pool`,
:func:`match_rows`) against the rules written as SQL (:func:`eligible_sql`,
:func:`pre_use_sql`) and the frame-level :func:`match_frame`, on a small panel that has
every case: unknown sex, IMD, LTC count and frailty, ages crossing a band between index
months, registrations starting on the first of a month and later, people leaving, people
treated later serving as comparators until then, and use in every outcome."""

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pytest

from phm.impact.interventions import (
    INTERVENTIONS_TABLE,
    OUTCOMES,
    PRE_MONTHS,
    build_interventions,
    eligible_sql,
    pre_use_sql,
)
from phm.impact.matching import (
    STRATA,
    load_panel,
    match_frame,
    match_intervention,
    month_pool,
    pre_vector_columns,
)

ED = dt.date(2026, 11, 1)
MONTHS = [dt.date(2023 + m // 12, m % 12 + 1, 1) for m in range(46)]


def _maybe(rng, values, p_null, n):
    out = rng.choice(np.array(values, dtype=object), n)
    out[rng.random(n) < p_null] = None
    return list(out)


@pytest.fixture(scope="module")
def panel_con():
    rng = np.random.default_rng(11)
    n = 3000
    ids = np.array([f"{rng.integers(0, 16**8):08x}{i:04d}" for i in range(n)])  # not in row order
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    reg = [dt.date(2021, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 1400, n)]
    reg = [d.replace(day=1) if rng.random() < 0.3 else d for d in reg]
    censor = [
        ED if rng.random() < 0.8 else MONTHS[rng.integers(20, 46)] + dt.timedelta(days=9)
        for _ in range(n)
    ]
    people = pl.DataFrame(
        {
            "person_id": ids,
            "sex": _maybe(rng, ["F", "M"], 0.01, n),
            # few birth years, so that bands are shared and ages cross them over time
            "birth_month": [
                dt.date(int(y), int(m), 1)
                for y, m in zip(
                    rng.choice([1958, 1959, 1975, 1990], n), rng.integers(1, 13, n), strict=True
                )
            ],
            "registration_start": reg,
            "censor_date": censor,
            "pcn_code": ["U1"] * n,
            "imd_quintile": pl.Series(_maybe(rng, [1, 2, 3], 0.1, n), dtype=pl.Int32),
            "ltc_count": pl.Series(_maybe(rng, [0, 1, 2, 5], 0.1, n), dtype=pl.Int32),
            "efi_category": _maybe(rng, ["fit", "mild"], 0.2, n),
        }
    )
    con.register("_p", people.to_arrow())
    con.execute("CREATE TABLE marts.impact_people AS SELECT * FROM _p")
    r, c = np.nonzero(rng.random((n, len(MONTHS))) < 0.15)
    use = pl.DataFrame(
        {
            "person_id": ids[r],
            "month": [MONTHS[j] for j in c],
            **{o: rng.poisson(0.8, len(r)).astype(np.int32) for o in OUTCOMES},
        }
    )
    con.register("_u", use.to_arrow())
    con.execute("CREATE TABLE marts.impact_monthly_use AS SELECT * FROM _u")
    t = rng.choice(n, 250, replace=False)
    treated = pl.DataFrame(
        {
            "person_id": ids[t],
            "intervention": ["sp"] * len(t),
            "index_date": [MONTHS[i] + dt.timedelta(days=3) for i in rng.integers(26, 36, 250)],
        }
    )
    con.register("_t", treated.to_arrow())
    build_interventions(con, "SELECT * FROM _t", ED)
    return con


def _reference(con, m0):
    """One index month by the SQL rules: everyone eligible, and the pool (the treated
    people's strata) with its pre-period vector as a frame for :func:`match_frame`."""
    elig = con.execute(eligible_sql(m0), ["sp"]).pl()
    treated_strata = elig.filter(pl.col("treated")).select(STRATA).unique()
    pool = elig.join(treated_strata, on=STRATA, how="semi").sort("person_id")
    con.register("_pool", pool.select("person_id").to_arrow())
    use = con.execute(pre_use_sql("_pool", m0)).pl()
    long = use.unpivot(index=["person_id", "months_before"], on=list(OUTCOMES))
    wide = (
        long.with_columns(pl.format("{}_m{}", "variable", "months_before").alias("c"))
        .pivot(on="c", index="person_id", values="value")
        .with_columns(pl.col(pl.Int32).cast(pl.Float64))
    )
    pool = pool.join(wide, on="person_id", how="left", maintain_order="left")
    for c in pre_vector_columns():
        if c not in pool.columns:
            pool = pool.with_columns(pl.lit(0.0).alias(c))
    pool = pool.with_columns(pl.col(pre_vector_columns()).fill_null(0.0)).with_columns(
        pl.sum_horizontal([f"{o}_m{k}" for k in range(1, PRE_MONTHS + 1)]).alias(f"{o}_pre12")
        for o in OUTCOMES
    )
    return elig, pool


def test_the_vectorised_pool_follows_the_sql_rules(panel_con):
    con = panel_con
    months = [
        r[0]
        for r in con.execute(f"SELECT DISTINCT index_month FROM {INTERVENTIONS_TABLE}").fetchall()
    ]
    panel = load_panel(con, "sp", sorted(months))
    ids = panel.people["person_id"]
    checked = 0
    for m0 in sorted(months):
        elig, pool = _reference(con, m0)
        month = month_pool(panel, m0)
        if month is None:
            assert pool.height == 0
            continue
        checked += 1
        assert ids.gather(month.rows).to_list() == pool["person_id"].to_list()
        assert month.treated.tolist() == pool["treated"].to_list()
        # the before-matching sums over every candidate (all strata)
        cand = elig.filter(~pl.col("treated"))
        n, w, s1, s2 = month.moments
        assert n == cand.height
        age = cand["age"].drop_nulls()
        assert (w[0], s1[0], s2[0]) == (age.len(), age.sum(), (age * age).sum())
        assert s1[1] == (cand["sex"] == "F").sum()
        imd = cand["imd_quintile"].drop_nulls()
        assert (w[2], s1[2], s2[2]) == (imd.len(), imd.sum(), (imd * imd).sum())
        con.register("_cand", cand.select("person_id").to_arrow())
        cuse = con.execute(pre_use_sql("_cand", m0)).pl()
        for j, o in enumerate(OUTCOMES):
            tot = cuse.group_by("person_id").agg(pl.col(o).sum())[o].cast(pl.Int64)
            assert (s1[4 + j], s2[4 + j]) == (tot.sum(), (tot * tot).sum())
            by_month = cuse.group_by("months_before").agg(pl.col(o).sum()).sort("months_before")
            got = s1[8 + j * PRE_MONTHS : 8 + (j + 1) * PRE_MONTHS]
            want = np.zeros(PRE_MONTHS)
            want[by_month["months_before"].to_numpy() - 1] = by_month[o].to_numpy()
            assert np.array_equal(got, want)
    assert checked >= 5


def test_vectorised_matching_equals_the_frame_matching(panel_con):
    con = panel_con
    res = match_intervention(con, "sp", k=2)
    months = sorted(res.pairs["index_month"].unique().to_list())
    assert len(months) >= 5
    eligible = unmatched = 0
    for m0 in months:
        _, pool = _reference(con, m0)
        want, um = match_frame(pool, k=2)
        got = res.pairs.filter(pl.col("index_month") == m0).drop("intervention", "index_month")
        # the same comparators for the same treated, to the bit
        assert got.equals(want), m0
        eligible += pool["treated"].sum()
        unmatched += um
    s = res.summary["sp"]
    assert s["eligible"] == eligible and s["unmatched"] == unmatched
    assert s["matched"] > 100 and res.pairs["distance"].min() >= 0
    # an unknown sex is never matched (its stratum matches nobody, as an SQL join on null)
    con.register("_pairs", res.pairs.select("person_id", "comparator_person_id").to_arrow())
    null_sex = con.execute(
        "SELECT count(*) FROM _pairs x JOIN marts.impact_people p "
        "ON p.person_id IN (x.person_id, x.comparator_person_id) WHERE p.sex IS NULL"
    ).fetchone()[0]
    assert null_sex == 0


def test_months_matched_in_workers_equal_one_process(panel_con):
    """Two worker processes (the panel handed over as files) give the same pairs, balance
    and summary, to the bit, as matching every month in this process."""
    one = match_intervention(panel_con, "sp", k=2, workers=1)
    two = match_intervention(panel_con, "sp", k=2, workers=2)
    assert one.pairs.height > 100 and one.pairs["index_month"].n_unique() >= 5
    assert two.pairs.equals(one.pairs)
    assert two.balance.equals(one.balance)
    assert two.summary == one.summary


def test_worker_count_rules(panel_con, monkeypatch):
    from phm.workers import n_workers, worker_count

    monkeypatch.delenv("PHM_WORKERS", raising=False)
    assert n_workers(None, 10, worth_it=False) == 1  # small work: in this process
    assert n_workers(3, 2) == 2  # never more workers than tasks
    assert n_workers(2, 10, worth_it=False) == 2  # asked for
    monkeypatch.setenv("PHM_WORKERS", "2")
    assert worker_count() == 2 and n_workers(None, 10, worth_it=False) == 2
    monkeypatch.setenv("PHM_WORKERS", "1")
    assert n_workers(None, 10) == 1
    monkeypatch.setenv("PHM_WORKERS", "none")
    with pytest.raises(ValueError, match="PHM_WORKERS"):
        worker_count()
    with pytest.raises(ValueError, match="at least 1"):
        n_workers(0, 10)
