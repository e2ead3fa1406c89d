"""Shared by the maps: the mapped measures, colours, inputs (practice locations, assets,
LSOA centroids) and the classing of values."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import duckdb
import geopandas as gpd
import matplotlib
import numpy as np
import pandas as pd
import polars as pl

matplotlib.use("Agg")
import mapclassify
import matplotlib.pyplot as plt

from geo.need import (
    ALL_PCNS,
    EVENT_RATES,
    PREVALENCES,
)
from geo.reference import BNG, WGS84, load_lsoa_boundaries
from phm.contract import ASSET_CATEGORIES
from phm.paths import DATA_DIR

LEAFLET_DIR = DATA_DIR / "vendor" / "leaflet"
A4_LANDSCAPE = (11.69, 8.27)
#: the map's axes in figure fractions (left, bottom, width, height)
MAP_RECT = (0.03, 0.09, 0.66, 0.77)
DPI = 150
#: no software version or date in the PNG, so the same inputs give the same bytes
PNG_METADATA = {"Software": None}
PRACTICE_NOTE = (
    "Practice symbols are not surgery addresses: the data have no practice coordinates, so "
    "each practice is placed at the population-weighted centroid of its registered "
    "patients' LSOAs."
)
SDC_NOTE = (
    "Statistical disclosure control: counts 1-7 suppressed and others rounded to the nearest "
    "5; rates and percentages on fewer than 10 events are not shown (hatched)."
)


@dataclass(frozen=True)
class MapMeasure:
    """One mapped column of the published LSOA table."""

    id: str
    column: str
    title: str
    definition: str
    unit: str = ""
    #: "sequential" (classed) or "imd" (the ten national deciles)
    kind: str = "sequential"
    cmap: str = "YlOrRd"
    #: the columns of its interval, for tooltips
    interval: tuple[str, str] | None = None


def _prev(pid: str):
    return next(p for p in PREVALENCES if p.id == pid)


def _rate(rid: str):
    return next(r for r in EVENT_RATES if r.id == rid)


def _prev_measure(pid: str, title: str, cmap: str) -> MapMeasure:
    return MapMeasure(
        f"{pid}_prevalence",
        f"{pid}_pct",
        title,
        _prev(pid).definition,
        "%",
        cmap=cmap,
        interval=(f"{pid}_pct_lcl95", f"{pid}_pct_ucl95"),
    )


def _dsr_measure(rid: str, title: str, cmap: str) -> MapMeasure:
    return MapMeasure(
        f"{rid}_dsr",
        f"{rid}_dsr_per_1000",
        title,
        _rate(rid).definition
        + " Directly age-standardised to the 2013 European Standard Population.",
        "per 1,000",
        cmap=cmap,
        interval=(f"{rid}_dsr_lcl95", f"{rid}_dsr_ucl95"),
    )


IMD_MEASURE = MapMeasure(
    "imd2019_decile",
    "imd2019_decile",
    "Index of Multiple Deprivation 2019",
    "National decile of the LSOA on the English Index of Multiple Deprivation 2019 "
    "(1 = most deprived 10% of LSOAs in England).",
    kind="imd",
)

#: the static PNG maps, one file each
MAP_MEASURES: tuple[MapMeasure, ...] = (
    _prev_measure("ltc5", "People with 5 or more long-term conditions", "YlOrRd"),
    _prev_measure("frailty", "Moderate or severe frailty (eFI), aged 65+", "PuRd"),
    _dsr_measure("emergency_admissions", "Emergency admissions (age-standardised)", "OrRd"),
    IMD_MEASURE,
)
#: the layers of the interactive map
INTERACTIVE_MEASURES: tuple[MapMeasure, ...] = (
    *MAP_MEASURES[:3],
    _prev_measure("ltc2", "People with 2 or more long-term conditions", "YlOrBr"),
    _dsr_measure("ae_attendances", "A&E attendances (age-standardised)", "BuPu"),
    IMD_MEASURE,
)

#: IMD deciles: 1 (most deprived) dark red ... 10 (least deprived) dark blue
IMD_COLOURS = [
    "#a50026",
    "#d73027",
    "#f46d43",
    "#fdae61",
    "#fee090",
    "#e0f3f8",
    "#abd9e9",
    "#74add1",
    "#4575b4",
    "#313695",
]
NO_DATA = "#e3e3e3"
HATCH = "#b3b3b3"
#: the interactive map has no hatching: suppressed areas are a darker grey
HTML_NO_DATA = "#bdbdbd"
BACKGROUND = "#efefef"
#: fixed colour per community-asset category (matplotlib tab20 order)
ASSET_COLOURS: dict[str, str] = {
    c: matplotlib.colors.to_hex(plt.get_cmap("tab20")(i * 2 % 20 + (i * 2 // 20)))
    for i, c in enumerate(ASSET_CATEGORIES)
}


# ------------------------------------------------------------------------------ inputs


def lsoa_centroids(boundaries: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """LSOA polygon centroids in British National Grid (metres)."""
    bng = boundaries.to_crs(BNG)
    return gpd.GeoDataFrame(
        {"lsoa11_code": bng["lsoa11_code"].values},
        geometry=bng.geometry.centroid.values,
        crs=BNG,
    )


def distance_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Straight-line distance in metres between WGS84 points, computed in EPSG:27700."""
    a = gpd.GeoSeries(gpd.points_from_xy(np.atleast_1d(lon1), np.atleast_1d(lat1)), crs=WGS84)
    b = gpd.GeoSeries(gpd.points_from_xy(np.atleast_1d(lon2), np.atleast_1d(lat2)), crs=WGS84)
    return a.to_crs(BNG).distance(b.to_crs(BNG)).to_numpy()


def practice_locations(
    con: duckdb.DuckDBPyConnection, boundaries: gpd.GeoDataFrame | None = None
) -> gpd.GeoDataFrame:
    """Each practice at the population-weighted centroid of its patients' LSOAs (EPSG:27700).

    Columns ``practice_code, practice_name, pcn_code, geometry``; LSOAs without a boundary
    are ignored, and a practice none of whose patients has a mapped LSOA is left out."""
    b = boundaries if boundaries is not None else load_lsoa_boundaries()
    cents = lsoa_centroids(b)
    xy = pl.DataFrame(
        {
            "lsoa11_code": cents["lsoa11_code"].tolist(),
            "x": cents.geometry.x.to_numpy(),
            "y": cents.geometry.y.to_numpy(),
        }
    )
    counts = con.execute(
        "SELECT practice_code, lsoa11_code, count(*) AS n FROM marts.patient_measures "
        "WHERE lsoa11_code IS NOT NULL GROUP BY ALL"
    ).pl()
    pts = (
        counts.join(xy, on="lsoa11_code", how="inner")
        .group_by("practice_code")
        .agg(
            ((pl.col("x") * pl.col("n")).sum() / pl.col("n").sum()).alias("x"),
            ((pl.col("y") * pl.col("n")).sum() / pl.col("n").sum()).alias("y"),
        )
    )
    names = con.execute("SELECT practice_code, practice_name, pcn_code FROM staging.practices").pl()
    pts = pts.join(names, on="practice_code", how="left").sort("practice_code")
    return gpd.GeoDataFrame(
        pts.select("practice_code", "practice_name", "pcn_code").to_pandas(),
        geometry=gpd.points_from_xy(pts["x"].to_numpy(), pts["y"].to_numpy()),
        crs=BNG,
    )


def load_assets(con: duckdb.DuckDBPyConnection) -> gpd.GeoDataFrame:
    """``staging.community_assets`` as points (WGS84), sorted by id; empty if absent."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'staging' AND table_name = 'community_assets'"
    ).fetchone()[0]
    cols = ["asset_id", "name", "category", "lsoa11_code"]
    if not exists:
        return gpd.GeoDataFrame({c: [] for c in cols}, geometry=[], crs=WGS84)
    df = con.execute(
        "SELECT asset_id, name, category, lsoa11_code, latitude, longitude "
        "FROM staging.community_assets WHERE latitude IS NOT NULL AND longitude IS NOT NULL "
        "ORDER BY asset_id"
    ).pl()
    return gpd.GeoDataFrame(
        df.select(cols).to_pandas(),
        geometry=gpd.points_from_xy(df["longitude"].to_numpy(), df["latitude"].to_numpy()),
        crs=WGS84,
    )


# ------------------------------------------------------------------------------ classes


@dataclass(frozen=True)
class Classes:
    """Class of each area (-1 = no value), colours and legend labels."""

    index: np.ndarray
    colours: list[str]
    labels: list[str]
    method: str


def classify(
    values,
    measure: MapMeasure,
    scheme: str = "quantiles",
    k: int = 5,
    *,
    groups=None,
    units: str = "LSOAs",
) -> Classes:
    """Class the values: the ten IMD deciles, or mapclassify quantiles / Fisher-Jenks
    natural breaks (both deterministic) into at most ``k`` classes.

    ``groups`` (one key per value, e.g. the MSOA of each LSOA): the classes are formed over
    the distinct groups, each counted once, and every value gets its group's class."""
    if groups is not None and measure.kind != "imd":
        frame = pd.DataFrame(
            {
                "g": pd.Series(list(groups), dtype=object),
                "v": pd.to_numeric(pd.Series(list(values)), errors="coerce"),
            }
        )
        first = frame.dropna(subset=["g"]).groupby("g", sort=True)["v"].first()
        per = classify(first.to_numpy(), measure, scheme, k, units=units)
        lookup = dict(zip(first.index, per.index, strict=True))
        idx = np.array([lookup.get(g, -1) for g in frame["g"]], dtype=int)
        idx[frame["v"].isna().to_numpy()] = -1
        return Classes(idx, per.colours, per.labels, per.method)
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    ok = ~np.isnan(v)
    idx = np.full(len(v), -1, dtype=int)
    if measure.kind == "imd":
        idx[ok] = v[ok].astype(int) - 1
        labels = [f"{d}{' (most deprived)' if d == 1 else ''}" for d in range(1, 10)]
        labels.append("10 (least deprived)")
        return Classes(idx, list(IMD_COLOURS), labels, "national IMD 2019 deciles")
    vals = v[ok]
    uniq = np.unique(vals)
    if len(uniq) == 0:
        return Classes(idx, [], [], "no published values")
    kk = min(k, len(uniq))
    if kk <= 1:
        yb = np.zeros(len(vals), dtype=int)
    else:
        kind = mapclassify.FisherJenks if scheme == "natural_breaks" else mapclassify.Quantiles
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Numba not installed")
            yb = np.asarray(kind(vals, k=kk).yb, dtype=int)
    used = np.unique(yb)  # quantiles of tied values can leave a class empty
    idx[ok] = np.searchsorted(used, yb)
    lows = [vals[yb == u].min() for u in used]
    highs = [vals[yb == u].max() for u in used]
    cmap = plt.get_cmap(measure.cmap)
    stops = np.linspace(0.18, 0.92, len(used)) if len(used) > 1 else np.array([0.6])
    colours = [matplotlib.colors.to_hex(cmap(x)) for x in stops]
    labels = [
        _fmt(lo) if _fmt(lo) == _fmt(hi) else f"{_fmt(lo)} – {_fmt(hi)}"
        for lo, hi in zip(lows, highs, strict=True)
    ]
    method = "natural breaks (Fisher-Jenks)" if scheme == "natural_breaks" else "quantiles"
    return Classes(idx, colours, labels, f"{method} of the mapped {units}")


def _fmt(x: float) -> str:
    return f"{x:,.1f}"


# ------------------------------------------------------------------------------ shared


def _extent(gdf: gpd.GeoDataFrame, share: float = 0.95) -> tuple[float, float, float, float]:
    """Bounds of the LSOAs holding ``share`` of the PCN's (published) patients."""
    pop = pd.to_numeric(gdf["population"], errors="coerce").fillna(0).to_numpy()
    order = np.lexsort((gdf["lsoa11_code"].to_numpy(), -pop))
    if pop.sum() > 0:
        cum = np.cumsum(pop[order]) / pop.sum()
        keep = order[: int(np.searchsorted(cum, share) + 1)]
    else:
        keep = order
    minx, miny, maxx, maxy = gdf.iloc[keep].total_bounds
    padx, pady = (maxx - minx) * 0.06 + 300, (maxy - miny) * 0.06 + 300
    return minx - padx, miny - pady, maxx + padx, maxy + pady


def _practices_of(pcn_code: str) -> str:
    return "any PCN's practices" if pcn_code == ALL_PCNS else "the PCN's practices"


def _own_practices(practices: gpd.GeoDataFrame, pcn_code: str) -> gpd.GeoDataFrame:
    """The PCN's practices (all of them for the all-PCN map)."""
    return practices if pcn_code == ALL_PCNS else practices[practices["pcn_code"] == pcn_code]


def asset_label(category: str) -> str:
    return {"education_work": "education and work"}.get(category, category.replace("_", " "))
