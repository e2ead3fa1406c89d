"""A small synthetic warehouse for testing the geography outputs.

It writes just the tables this layer reads, with the contract's column names:
``staging.practices``, ``staging.community_assets``, ``marts.patient_measures`` (the subset
of columns used here) and ``marts.cohort_members``. Patients live in real Leicester LSOAs
(from the vendored boundaries) near their practice; ages, long-term conditions, frailty and
hospital use are drawn from simple made-up models that rise with age and deprivation.
Nothing here is real or calibrated. Same arguments, same tables.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import polars as pl
import shapely
from record_stub import add_empty_record

from geo.reference import BNG, load_imd2019, load_lsoa_boundaries
from phm.contract import ASSET_CATEGORIES
from phm.warehouse import write_table

LEICESTER = "E06000016"

#: (pcn_code, pcn_name, [(practice_code, practice_name), ...])
DEMO_PCNS = (
    ("U99001", "Demo North PCN", [("Y99011", "Northgate Surgery"), ("Y99012", "Abbey Lane MC")]),
    ("U99002", "Demo Central PCN", [("Y99021", "Clock Tower HC"), ("Y99022", "Granby Street")]),
    ("U99003", "Demo South PCN", [("Y99031", "Aylestone Road"), ("Y99032", "Knighton Park")]),
)


#: the as-of date of the demo warehouse (its raw._delivery)
DEMO_EXTRACT_DATE = dt.date(2026, 11, 1)


def make_demo_warehouse(
    con: duckdb.DuckDBPyConnection,
    n_patients: int = 20_000,
    seed: int = 20261101,
    lad19_code: str = LEICESTER,
    n_assets: int = 120,
) -> None:
    """Create the demo input tables in ``con`` (replacing them)."""
    rng = np.random.default_rng(seed)
    b = load_lsoa_boundaries()
    b = b[b["lad19_code"] == lad19_code].reset_index(drop=True)
    imd = load_imd2019().select("lsoa11_code", "imd_decile", "pop_total_mid2015")
    lsoa = pl.DataFrame({"lsoa11_code": b["lsoa11_code"].tolist()}).join(
        imd, on="lsoa11_code", how="left"
    )
    bng = b.to_crs(BNG)
    cx = bng.geometry.centroid.x.to_numpy()
    cy = bng.geometry.centroid.y.to_numpy()

    # practices: spread along the north-south axis of the district
    practices = [(pc, pn, p, n) for pc, pn, prs in DEMO_PCNS for p, n in prs]
    order = np.argsort(cy)[::-1]
    home = order[(np.linspace(0.1, 0.9, len(practices)) * (len(order) - 1)).astype(int)]
    # practice choice: distance decay (700 m) times LSOA population
    d = np.hypot(cx[:, None] - cx[home][None, :], cy[:, None] - cy[home][None, :])
    w = np.exp(-d / 700.0) * lsoa["pop_total_mid2015"].to_numpy()[:, None]
    pr_idx = rng.choice(len(practices), size=n_patients)
    probs = w / w.sum(axis=0, keepdims=True)
    li = np.array([rng.choice(len(b), p=probs[:, j]) for j in pr_idx])

    decile = lsoa["imd_decile"].to_numpy()[li]
    dep = (10 - decile) / 9.0  # 1 = most deprived
    age = np.clip(rng.gamma(2.2, 18.0, n_patients), 0, 104).astype(int)
    sex = rng.choice(["F", "M"], n_patients)
    ltc = rng.poisson(np.clip(0.05 + (age / 45.0) ** 2 * (0.7 + 0.7 * dep), 0, 12))
    mental = np.minimum(ltc, rng.binomial(ltc, 0.25))
    efi_score = ltc * 1.2 + (age - 65).clip(0) / 8 + rng.normal(0, 1.5, n_patients)
    efi_cat = np.select(
        [efi_score < 5, efi_score < 9, efi_score < 13], ["fit", "mild", "moderate"], "severe"
    )
    lam_adm = 0.02 + 0.03 * ltc + 0.002 * age * (0.7 + 0.8 * dep)
    adm = rng.poisson(lam_adm * 0.6)
    ae = rng.poisson(0.15 + 0.06 * ltc + 0.25 * dep + adm * 0.8)
    no_lsoa = rng.random(n_patients) < 0.005
    lsoa_codes = np.where(no_lsoa, None, np.asarray(b["lsoa11_code"])[li])
    dec = np.where(no_lsoa, None, decile).astype(object)

    pm = pl.DataFrame(
        {
            "person_id": [f"P{i:07d}" for i in range(n_patients)],
            "age": age.astype(np.int32),
            "sex": sex,
            "practice_code": [practices[j][2] for j in pr_idx],
            "pcn_code": [practices[j][0] for j in pr_idx],
            "lsoa11_code": lsoa_codes.tolist(),
            "imd2019_decile": pl.Series(dec.tolist(), dtype=pl.Int32),
            "ltc_count": ltc.astype(np.int32),
            "mental_ltc_count": mental.astype(np.int32),
            "physical_ltc_count": (ltc - mental).astype(np.int32),
            "efi_category": efi_cat,
            "hfrs_category": None,
            "emergency_admissions_12m": adm.astype(np.int32),
            "ae_attendances_12m": ae.astype(np.int32),
        }
    ).with_columns(
        ((pl.col("imd2019_decile") + 1) // 2).cast(pl.Int32).alias("imd2019_quintile"),
        pl.col("hfrs_category").cast(pl.String),
    )
    first = ["person_id", "age", "sex", "practice_code", "pcn_code", "lsoa11_code"]
    first += ["imd2019_decile", "imd2019_quintile"]
    pm = pm.select(first + [c for c in pm.columns if c not in first])
    cohorts = pl.concat(
        [
            pm.filter(
                pl.col("efi_category").is_in(["moderate", "severe"]) & (pl.col("age") >= 65)
            ).select(pl.lit("frail_65plus").alias("cohort_id"), "person_id"),
            pm.filter(pl.col("ae_attendances_12m") >= 3).select(
                pl.lit("high_ae_use").alias("cohort_id"), "person_id"
            ),
            pm.filter(pl.col("ltc_count") >= 5).select(
                pl.lit("multimorbid_5plus").alias("cohort_id"), "person_id"
            ),
        ]
    )
    practices_df = pl.DataFrame(
        {
            "practice_code": [p[2] for p in practices],
            "practice_name": [p[3] for p in practices],
            "pcn_code": [p[0] for p in practices],
            "pcn_name": [p[1] for p in practices],
            "icb_code": ["QK1"] * len(practices),
        }
    )
    assets = _demo_assets(rng, b, n_assets)
    for schema in ("staging", "marts"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for name, df in (
        ("staging.practices", practices_df),
        ("staging.community_assets", assets),
        ("marts.patient_measures", pm),
        ("marts.cohort_members", cohorts),
    ):
        write_table(con, name, df)
    add_empty_record(con, DEMO_EXTRACT_DATE)


def _demo_assets(rng: np.random.Generator, b, n: int) -> pl.DataFrame:
    cats = list(ASSET_CATEGORIES)
    li = rng.integers(0, len(b), n)
    pts = []
    for i in li:
        g = b.geometry.iloc[i]
        minx, miny, maxx, maxy = g.bounds
        for _ in range(200):
            x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
            if shapely.contains_xy(g, x, y):
                break
        else:
            p = g.representative_point()
            x, y = p.x, p.y
        pts.append((round(y, 6), round(x, 6)))
    cat = [cats[k] for k in rng.choice(len(cats), n)]
    return pl.DataFrame(
        {
            "asset_id": [f"A{i:04d}" for i in range(n)],
            "name": [f"{c.replace('_', ' ').title()} group {i}" for i, c in enumerate(cat)],
            "category": cat,
            "latitude": [p[0] for p in pts],
            "longitude": [p[1] for p in pts],
            "lsoa11_code": [b["lsoa11_code"].iloc[i] for i in li],
        }
    )
