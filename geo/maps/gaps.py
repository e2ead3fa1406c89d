"""Community-asset gap analysis: the LSOAs of highest need and their nearest asset of each
category."""

from __future__ import annotations

import math
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import polars as pl

from geo.reference import BNG
from phm.contract import ASSET_CATEGORIES


def asset_gaps(
    need: gpd.GeoDataFrame,
    assets: gpd.GeoDataFrame,
    *,
    need_column: str = "ltc5_pct",
    top_fraction: float = 0.2,
    distance_threshold_m: float = 1000.0,
    categories: Sequence[str] = ASSET_CATEGORIES,
    need_level: str = "LSOA 2011 of residence",
) -> pl.DataFrame:
    """LSOAs in the top fifth of need and their nearest community asset of each category.

    Need = ``need_column`` of the published LSOA table (default: % of registered patients
    with 5+ long-term conditions). LSOAs where it is suppressed are not ranked. The top
    fifth is the ceil(``top_fraction`` × ranked LSOAs) highest values (ties at the cut-off
    included). For each such LSOA and category: the nearest asset (straight line from the
    LSOA centroid, EPSG:27700, metres) and ``gap`` = no asset of that category within
    ``distance_threshold_m``. One row per (LSOA, category), by need rank then category.

    ``need_level`` (column ``need_level``): how the need value was measured; where the maps
    show the measure by MSOA or IMD decile (:mod:`geo.maps.levels`), ``need`` carries each
    LSOA's group value and the top fifth is of the LSOAs ranked by it."""
    g = need[need.geometry.notna()].copy()
    g["_v"] = pd.to_numeric(g[need_column], errors="coerce")
    g = g[g["_v"].notna()]
    cols = {
        "pcn_code": pl.String,
        "lsoa11_code": pl.String,
        "lsoa11_name": pl.String,
        "imd2019_decile": pl.Int64,
        "need_value": pl.Float64,
        "need_rank": pl.Int64,
        "category": pl.String,
        "nearest_asset_id": pl.String,
        "nearest_asset_name": pl.String,
        "nearest_distance_m": pl.Float64,
        "gap": pl.Boolean,
        "need_level": pl.String,
    }
    if g.empty:
        return pl.DataFrame(schema=cols)
    g = g.sort_values(["_v", "lsoa11_code"], ascending=[False, True], kind="stable")
    n_top = math.ceil(top_fraction * len(g))
    cutoff = g["_v"].iloc[n_top - 1]
    top = g[g["_v"] >= cutoff].copy()
    top["_rank"] = top["_v"].rank(method="min", ascending=False).astype(int)
    cent = top.to_crs(BNG).geometry.centroid
    tx, ty = cent.x.to_numpy(), cent.y.to_numpy()
    a = assets.to_crs(BNG) if not assets.empty else assets
    n = len(top)
    # the columns of the top LSOAs, repeated for every category (one row per LSOA-category)
    deciles = top["imd2019_decile"] if "imd2019_decile" in top.columns else None
    lsoa = {
        "pcn_code": top["pcn_code"].tolist() if "pcn_code" in top.columns else [None] * n,
        "lsoa11_code": top["lsoa11_code"].tolist(),
        "lsoa11_name": top["lsoa11_name"].tolist() if "lsoa11_name" in top.columns else [None] * n,
        "imd2019_decile": [None] * n
        if deciles is None
        else [None if pd.isna(v) else int(v) for v in deciles.tolist()],
        "need_value": [float(v) for v in top["_v"].tolist()],
        "need_rank": [int(v) for v in top["_rank"].tolist()],
    }
    data: dict[str, list] = {c: [] for c in cols}
    for cat in categories:
        pts = a[a["category"] == cat] if not a.empty else a
        if len(pts):
            d = np.hypot(
                tx[:, None] - pts.geometry.x.to_numpy()[None, :],
                ty[:, None] - pts.geometry.y.to_numpy()[None, :],
            )
            j = np.argmin(d, axis=1)
            dm = [float(round(x)) for x in d[np.arange(n), j]]
            aid = pts["asset_id"].iloc[j].tolist()
            aname = pts["name"].iloc[j].tolist()
        else:
            dm, aid, aname = [None] * n, [None] * n, [None] * n
        for c, values in lsoa.items():
            data[c].extend(values)
        data["category"].extend([cat] * n)
        data["nearest_asset_id"].extend(aid)
        data["nearest_asset_name"].extend(aname)
        data["nearest_distance_m"].extend(dm)
        data["gap"].extend(m is None or m > distance_threshold_m for m in dm)
        data["need_level"].extend([need_level] * n)
    return pl.DataFrame(data, schema=cols).sort(["need_rank", "lsoa11_code", "category"])
