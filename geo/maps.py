"""Maps for PCN teams: static choropleths (PNG), an offline interactive map (HTML) and the
community-asset gap analysis.

Every map shows **published** values only (``geo.need_by_lsoa_published``: counts through
``protect_count``, rates on fewer than 10 events suppressed), carries the OGL attribution
(:data:`geo.reference.OGL_ATTRIBUTION`) and marks suppressed areas.

Outputs, per PCN, under ``<out_dir>/<pcn_code>/maps/``:

* ``<measure>.png`` for each of :data:`MAP_MEASURES` — A4 landscape (11.69 x 8.27 in) at
  150 dpi, classed with mapclassify (quantiles by default, or Fisher-Jenks natural breaks),
  with legend, definition, scale bar, north arrow, practice locations and attribution;
* ``assets_over_need.png`` — community assets by category over the need measure, with the
  top fifth of need outlined;
* ``asset_gaps.csv`` — :func:`asset_gaps`;
* ``need_map.html`` — Leaflet map (via folium) with one layer per measure, LSOA tooltips,
  community assets by category and practices; Leaflet is inlined from
  ``data/vendor/leaflet`` so the file opens from disk with no network and no tile server.

Practice locations: the data contract has no practice coordinates, so each practice is
drawn at the **population-weighted centroid of its registered patients' LSOAs** (mean of
the LSOA centroids weighted by the practice's patients in each); the maps say so.

Distances are straight lines between points in British National Grid (EPSG:27700), metres;
an LSOA's location is its polygon centroid.
"""

from __future__ import annotations

import base64
import contextlib
import html
import itertools
import math
import re
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import geopandas as gpd
import matplotlib
import numpy as np
import pandas as pd
import polars as pl
import shapely

matplotlib.use("Agg")
import branca.element
import folium
import mapclassify
import matplotlib.pyplot as plt
from matplotlib import patheffects
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.path import Path as MPath

from geo.need import (
    ALL_PCNS,
    EVENT_RATES,
    PREVALENCES,
    published_lsoa_geodataframe,
    published_table,
)
from geo.reference import BNG, OGL_ATTRIBUTION, WGS84, load_lsoa_boundaries
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


def classify(values, measure: MapMeasure, scheme: str = "quantiles", k: int = 5) -> Classes:
    """Class the values: the ten IMD deciles, or mapclassify quantiles / Fisher-Jenks
    natural breaks (both deterministic) into at most ``k`` classes."""
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
    labels = [f"{_fmt(lo)} – {_fmt(hi)}" for lo, hi in zip(lows, highs, strict=True)]
    method = "natural breaks (Fisher-Jenks)" if scheme == "natural_breaks" else "quantiles"
    return Classes(idx, colours, labels, f"{method} of the mapped LSOAs")


def _fmt(x: float) -> str:
    return f"{x:,.1f}"


# ------------------------------------------------------------------------------ static


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


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


def _fit_aspect(bounds) -> tuple[float, float, float, float]:
    """Grow the bounds to the map axes' aspect ratio (equal scale in x and y)."""
    minx, miny, maxx, maxy = bounds
    ratio = (MAP_RECT[2] * A4_LANDSCAPE[0]) / (MAP_RECT[3] * A4_LANDSCAPE[1])
    w, h = maxx - minx, maxy - miny
    if w / h < ratio:
        grow = (h * ratio - w) / 2
        minx, maxx = minx - grow, maxx + grow
    else:
        grow = (w / ratio - h) / 2
        miny, maxy = miny - grow, maxy + grow
    return minx, miny, maxx, maxy


def _nice_length(width_m: float) -> float:
    target = width_m / 5
    for n in (100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 25000, 50000):
        if n >= target * 0.6:
            return float(n)
    return 50000.0


def _scale_bar(ax) -> None:
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    length = _nice_length(x1 - x0)
    h = (y1 - y0) * 0.010
    bx, by = x0 + (x1 - x0) * 0.04, y0 + (y1 - y0) * 0.05
    for i in range(2):
        ax.add_patch(
            Rectangle(
                (bx + i * length / 2, by),
                length / 2,
                h,
                facecolor="black" if i == 0 else "white",
                edgecolor="black",
                linewidth=0.8,
                zorder=20,
            )
        )
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    halo = [patheffects.withStroke(linewidth=3, foreground="white")]
    for x, t in ((bx, "0"), (bx + length, label)):
        ax.text(
            x, by + h * 1.8, t, ha="center", va="bottom", fontsize=8, zorder=21, path_effects=halo
        )


def _north_arrow(ax) -> None:
    ax.annotate(
        "N",
        xy=(0.955, 0.955),
        xytext=(0.955, 0.86),
        xycoords="axes fraction",
        ha="center",
        va="center",
        fontsize=12,
        fontweight="bold",
        arrowprops={"facecolor": "black", "width": 3.5, "headwidth": 11, "headlength": 10},
        zorder=21,
    )


def _base_figure(title: str, subtitle: str, footer: str):
    fig = plt.figure(figsize=A4_LANDSCAPE, dpi=DPI)
    size = 16 if len(title) <= 75 else max(11, 16 * 75 / len(title))
    fig.text(0.03, 0.955, title, fontsize=size, fontweight="bold", va="top")
    fig.text(0.03, 0.91, _wrap(subtitle, 150), fontsize=9.5, va="top", color="#333333")
    fig.text(0.03, 0.012, _wrap(footer, 215), fontsize=6.3, va="bottom", color="#444444")
    ax = fig.add_axes(MAP_RECT)
    side = fig.add_axes((0.715, 0.09, 0.27, 0.77))
    side.axis("off")
    return fig, ax, side


def _polygon_paths(geoms) -> list[MPath]:
    """One compound matplotlib path per (multi)polygon, holes included."""
    paths = []
    for geom in geoms:
        parts = list(geom.geoms) if hasattr(geom, "geoms") else [geom]
        verts, codes = [], []
        for poly in parts:
            if poly.is_empty or poly.geom_type != "Polygon":
                continue
            for ring in (poly.exterior, *poly.interiors):
                xy = np.asarray(ring.coords)[:, :2]
                verts.append(xy)
                codes.append([MPath.MOVETO] + [MPath.LINETO] * (len(xy) - 2) + [MPath.CLOSEPOLY])
        if verts:
            paths.append(MPath(np.concatenate(verts), np.concatenate(codes).astype(np.uint8)))
    return paths


def _draw_polygons(ax, geoms, facecolor, edgecolor, linewidth, zorder, hatch=None) -> None:
    """Polygons as one collection (much faster than GeoDataFrame.plot for many maps)."""
    paths = _polygon_paths(geoms)
    if not paths:
        return
    coll = PathCollection(
        paths,
        facecolors=facecolor,
        edgecolors=edgecolor,
        linewidths=linewidth,
        zorder=zorder,
        hatch=hatch,
    )
    ax.add_collection(coll, autolim=True)


def lad_outlines(background: gpd.GeoDataFrame) -> gpd.GeoSeries:
    """Local authority districts (union of their LSOAs), for context lines."""
    if "lad19_code" not in background.columns:
        return gpd.GeoSeries([], crs=background.crs)
    bng = background.to_crs(BNG)
    # close the slivers between generalised LSOA polygons, keep outer rings only
    merged = bng.dissolve("lad19_code").geometry.buffer(10).buffer(-10)
    outer = [
        shapely.MultiPolygon(
            [shapely.Polygon(p.exterior) for p in getattr(g, "geoms", [g]) if not p.is_empty]
        )
        for g in merged
    ]
    return gpd.GeoSeries(outer, index=merged.index, crs=BNG)


def _draw_background(ax, background, lads) -> None:
    if background is None or background.empty:
        return
    _draw_polygons(ax, background.geometry, BACKGROUND, "white", 0.3, 1)
    if lads is None:
        lads = lad_outlines(background)
    _draw_polygons(ax, lads.to_crs(BNG).geometry, "none", "#8c8c8c", 0.9, 6)


def _practices_of(pcn_code: str) -> str:
    return "any PCN's practices" if pcn_code == ALL_PCNS else "the PCN's practices"


def _own_practices(practices: gpd.GeoDataFrame, pcn_code: str) -> gpd.GeoDataFrame:
    """The PCN's practices (all of them for the all-PCN map)."""
    return practices if pcn_code == ALL_PCNS else practices[practices["pcn_code"] == pcn_code]


def _draw_practices(ax, practices: gpd.GeoDataFrame | None, pcn_code: str) -> list[str]:
    if practices is None or practices.empty:
        return []
    own = _own_practices(practices, pcn_code)
    if own.empty:
        return []
    ax.scatter(
        own.geometry.x,
        own.geometry.y,
        marker="^",
        s=90,
        facecolor="white",
        edgecolor="black",
        linewidth=1.4,
        zorder=15,
    )
    halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]
    for _, r in own.iterrows():
        ax.annotate(
            r["practice_code"],
            (r.geometry.x, r.geometry.y),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=7.5,
            fontweight="bold",
            zorder=16,
            path_effects=halo,
        )
    return [f"{r['practice_code']}  {r['practice_name'] or ''}" for _, r in own.iterrows()]


def _side_panel(fig, side, legends: list[dict], notes: list[str]) -> None:
    """Stack legends and then notes from the top of the side panel, without overlaps."""
    renderer = fig.canvas.get_renderer()
    top = 1.0
    for spec in legends:
        if not spec["handles"]:
            continue
        leg = side.legend(
            handles=spec["handles"],
            loc="upper left",
            bbox_to_anchor=(0.0, top),
            title=_wrap(spec["title"], 44),
            title_fontsize=9.5,
            fontsize=spec["fontsize"],
            ncols=spec.get("ncols", 1),
            frameon=False,
            alignment="left",
            borderaxespad=0.0,
            columnspacing=0.8,
            handletextpad=0.5,
        )
        side.add_artist(leg)
        box = leg.get_window_extent(renderer).transformed(side.transAxes.inverted())
        top = box.y0 - 0.04
    side.text(
        0.0,
        top,
        "\n\n".join(_wrap(n, 50) for n in notes),
        fontsize=7.5,
        va="top",
        ha="left",
        transform=side.transAxes,
        color="#333333",
        wrap=False,
    )


def _save_png(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"svg.hashsalt": "phm-geo"}):
        fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def plot_choropleth(
    gdf: gpd.GeoDataFrame,
    measure: MapMeasure,
    out_path: Path,
    *,
    pcn_label: str,
    pcn_code: str,
    background: gpd.GeoDataFrame | None = None,
    practices: gpd.GeoDataFrame | None = None,
    scheme: str = "quantiles",
    k: int = 5,
    assets: gpd.GeoDataFrame | None = None,
    highlight: Sequence[str] = (),
    title: str | None = None,
    extra_notes: Sequence[str] = (),
    lads: gpd.GeoSeries | None = None,
) -> Path:
    """One A4 landscape PNG of ``measure`` over the PCN's LSOAs (``gdf`` in any CRS).

    ``assets`` (points) are drawn by category and ``highlight`` LSOA codes outlined, for
    the assets-over-need map."""
    g = gdf[gdf.geometry.notna()].to_crs(BNG).reset_index(drop=True)
    bg = background.to_crs(BNG) if background is not None else None
    cls = classify(g[measure.column], measure, scheme, k)
    unit = f" ({measure.unit})" if measure.unit else ""
    fig, ax, side = _base_figure(
        title or f"{measure.title} — {pcn_label}",
        f"{measure.definition} Mapped by LSOA 2011 of residence, for patients registered "
        f"with {_practices_of(pcn_code)}.",
        f"{OGL_ATTRIBUTION} {SDC_NOTE}",
    )
    _draw_background(ax, bg, lads)
    if not g.empty:
        colours = np.array([*cls.colours, NO_DATA], dtype=object)[cls.index]
        has = cls.index >= 0
        _draw_polygons(ax, g.geometry[has], list(colours[has]), "white", 0.35, 3)
        if (~has).any():
            _draw_polygons(ax, g.geometry[~has], NO_DATA, HATCH, 0.2, 3, hatch="////")
    if highlight:
        hl = g[g["lsoa11_code"].isin(set(highlight))]
        if not hl.empty:
            _draw_polygons(ax, hl.geometry, "none", "black", 1.6, 8)
    asset_handles = []
    if assets is not None and not assets.empty:
        a = assets.to_crs(BNG)
        for cat in sorted(a["category"].dropna().unique()):
            pts = a[a["category"] == cat]
            colour = ASSET_COLOURS.get(cat, "#333333")
            ax.scatter(
                pts.geometry.x,
                pts.geometry.y,
                s=22,
                color=colour,
                edgecolor="black",
                linewidth=0.4,
                zorder=12,
            )
            asset_handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    linestyle="",
                    markersize=6,
                    markerfacecolor=colour,
                    markeredgecolor="black",
                    markeredgewidth=0.4,
                    label=asset_label(cat),
                )
            )
    practice_lines = _draw_practices(ax, practices, pcn_code)

    if not g.empty:
        minx, miny, maxx, maxy = _fit_aspect(_extent(g))
    else:
        minx, miny, maxx, maxy = (
            _fit_aspect(tuple(bg.total_bounds)) if bg is not None else (0, 0, 1, 1)
        )
    ax.set_xlim(minx, maxx)
    ax.set_ylim(miny, maxy)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")
    for s in ax.spines.values():
        s.set_edgecolor("#999999")
    ax.apply_aspect()  # settle the limits before the scale bar
    _scale_bar(ax)
    _north_arrow(ax)

    handles = [
        Patch(facecolor=c, edgecolor="#777777", linewidth=0.4, label=lab)
        for c, lab in zip(cls.colours, cls.labels, strict=True)
    ]
    if (cls.index < 0).any():
        handles.append(
            Patch(
                facecolor=NO_DATA,
                edgecolor=HATCH,
                hatch="////",
                label="Not shown: fewer than 10 events",
            )
        )
    handles.append(
        Patch(
            facecolor=BACKGROUND,
            edgecolor="#bbbbbb",
            label="No patients of this PCN" if pcn_code != ALL_PCNS else "No patients",
        )
    )
    if highlight:
        handles.append(
            Patch(facecolor="none", edgecolor="black", linewidth=1.6, label="Top fifth of need")
        )
    if practice_lines:
        handles.append(
            Line2D(
                [],
                [],
                marker="^",
                linestyle="",
                markersize=8,
                markerfacecolor="white",
                markeredgecolor="black",
                markeredgewidth=1.3,
                label="GP practice (estimated location*)",
            )
        )
    notes = [f"Classes: {cls.method}."]
    notes += list(extra_notes)
    if len(practice_lines) > 8:  # keep the panel readable: codes only
        practice_lines = [line.split()[0] for line in practice_lines]
    if practice_lines:
        notes.append("Practices: " + "; ".join(practice_lines) + ".")
        notes.append("* " + PRACTICE_NOTE)
    _side_panel(
        fig,
        side,
        [
            {"handles": handles, "title": f"{measure.title}{unit}", "fontsize": 8.5},
            {"handles": asset_handles, "title": "Community assets", "fontsize": 8, "ncols": 2},
        ],
        notes,
    )
    return _save_png(fig, out_path)


# ------------------------------------------------------------------------------ gaps


def asset_label(category: str) -> str:
    return {"education_work": "education and work"}.get(category, category.replace("_", " "))


def asset_gaps(
    need: gpd.GeoDataFrame,
    assets: gpd.GeoDataFrame,
    *,
    need_column: str = "ltc5_pct",
    top_fraction: float = 0.2,
    distance_threshold_m: float = 1000.0,
    categories: Sequence[str] = ASSET_CATEGORIES,
) -> pl.DataFrame:
    """LSOAs in the top fifth of need and their nearest community asset of each category.

    Need = ``need_column`` of the published LSOA table (default: % of registered patients
    with 5+ long-term conditions). LSOAs where it is suppressed are not ranked. The top
    fifth is the ceil(``top_fraction`` × ranked LSOAs) highest values (ties at the cut-off
    included). For each such LSOA and category: the nearest asset (straight line from the
    LSOA centroid, EPSG:27700, metres) and ``gap`` = no asset of that category within
    ``distance_threshold_m``. One row per (LSOA, category), by need rank then category."""
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
    rows = []
    for cat in categories:
        pts = a[a["category"] == cat] if not a.empty else a
        if len(pts):
            d = np.hypot(
                tx[:, None] - pts.geometry.x.to_numpy()[None, :],
                ty[:, None] - pts.geometry.y.to_numpy()[None, :],
            )
            j = np.argmin(d, axis=1)
            dist = d[np.arange(len(top)), j]
        for i, (_, r) in enumerate(top.iterrows()):
            if len(pts):
                near = pts.iloc[j[i]]
                aid, aname, dm = near["asset_id"], near["name"], float(round(dist[i]))
            else:
                aid, aname, dm = None, None, None
            rows.append(
                {
                    "pcn_code": r.get("pcn_code"),
                    "lsoa11_code": r["lsoa11_code"],
                    "lsoa11_name": r.get("lsoa11_name"),
                    "imd2019_decile": None
                    if pd.isna(r.get("imd2019_decile"))
                    else int(r["imd2019_decile"]),
                    "need_value": float(r["_v"]),
                    "need_rank": int(r["_rank"]),
                    "category": cat,
                    "nearest_asset_id": aid,
                    "nearest_asset_name": aname,
                    "nearest_distance_m": dm,
                    "gap": dm is None or dm > distance_threshold_m,
                }
            )
    return pl.DataFrame(rows, schema=cols).sort(["need_rank", "lsoa11_code", "category"])


# ------------------------------------------------------------------------------ HTML


@contextlib.contextmanager
def _deterministic_ids() -> Iterator[None]:
    """branca names every element with 16 random bytes; number them instead."""
    counter = itertools.count(1)
    original = branca.element.Element.__dict__["_generate_id"]
    branca.element.Element._generate_id = classmethod(lambda cls: f"{next(counter):08d}")
    try:
        yield
    finally:
        branca.element.Element._generate_id = original


def leaflet_inline_head() -> str:
    """Leaflet's CSS (images as data: URIs) and JS, to paste into ``<head>``."""
    css = (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8")

    def data_uri(m: re.Match) -> str:
        p = LEAFLET_DIR / m.group(1)
        return "url(data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() + ")"

    css = re.sub(r"url\((images/[A-Za-z0-9_.-]+\.png)\)", data_uri, css)
    js = (LEAFLET_DIR / "leaflet.js").read_text(encoding="utf-8")
    # the source map is not shipped; drop the pointer so nothing asks for it
    js = re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.MULTILINE)
    return f"<style>\n{css}\n</style>\n<script>\n{js}\n</script>"


def _tooltip_text(row: pd.Series, m: MapMeasure) -> str:
    v = row.get(m.column)
    if m.kind == "imd":
        return "" if pd.isna(v) else str(int(v))
    if v is None or pd.isna(v):
        return "not shown (fewer than 10 events)"
    unit = "%" if m.unit == "%" else f" {m.unit}"
    text = f"{v:,.1f}{unit}"
    if m.interval:
        lo, hi = row.get(m.interval[0]), row.get(m.interval[1])
        if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
            text += f" (95% CI {lo:,.1f}–{hi:,.1f})"
    return text


_LEGEND_TEMPLATE = """
{% macro html(this, kwargs) %}
<div id="phm-legend" style="position:absolute; bottom:42px; right:10px; z-index:1000;
     background:rgba(255,255,255,0.93); padding:8px 10px; border:1px solid #999;
     border-radius:4px; font:12px/1.35 Arial, sans-serif; max-width:270px;">
{{ this.body }}
</div>
<div id="phm-title" style="position:absolute; top:10px; left:55px; z-index:1000;
     background:rgba(255,255,255,0.93); padding:6px 10px; border:1px solid #999;
     border-radius:4px; font:13px/1.35 Arial, sans-serif; max-width:520px;">
{{ this.title }}
</div>
<div id="phm-attribution" style="position:absolute; bottom:0; left:0; right:0; z-index:1000;
     background:rgba(255,255,255,0.9); padding:3px 8px; font:10px/1.3 Arial, sans-serif;
     color:#333;">
{{ this.footer }}
</div>
{% endmacro %}
{% macro script(this, kwargs) %}
{{ this.map_name }}.on('baselayerchange', function (e) {
  document.querySelectorAll('.phm-legend-layer').forEach(function (d) {
    d.style.display = (d.getAttribute('data-layer') === e.name) ? 'block' : 'none';
  });
});
{% endmacro %}
"""


class _Overlay(branca.element.MacroElement):
    """Title, legends (one per measure layer, switched with the layer) and attribution."""

    def __init__(self, map_name: str, title: str, body: str, footer: str):
        super().__init__()
        self._name = "PhmOverlay"
        self._template = branca.element.Template(_LEGEND_TEMPLATE)
        self.map_name = map_name
        self.title = title
        self.body = body
        self.footer = footer


def _legend_html(m: MapMeasure, cls: Classes, first: bool, n_suppressed: int) -> str:
    unit = f" ({html.escape(m.unit)})" if m.unit else ""
    rows = [
        f'<div><span style="display:inline-block;width:14px;height:12px;background:{c};'
        f'border:1px solid #777;margin-right:6px;vertical-align:middle"></span>'
        f"{html.escape(lab)}</div>"
        for c, lab in zip(cls.colours, cls.labels, strict=True)
    ]
    if n_suppressed:
        rows.append(
            f'<div><span style="display:inline-block;width:14px;height:12px;background:{HTML_NO_DATA};'
            'border:1px solid #777;margin-right:6px;vertical-align:middle"></span>'
            "not shown: fewer than 10 events</div>"
        )
    display = "block" if first else "none"
    return (
        f'<div class="phm-legend-layer" data-layer="{html.escape(m.title)}" '
        f'style="display:{display}"><b>{html.escape(m.title)}{unit}</b>'
        f'<div style="color:#555;font-size:11px">Classes: {html.escape(cls.method)}</div>'
        + "".join(rows)
        + "</div>"
    )


def write_interactive_map(
    gdf: gpd.GeoDataFrame,
    out_path: Path,
    *,
    pcn_label: str,
    pcn_code: str,
    background: gpd.GeoDataFrame | None = None,
    practices: gpd.GeoDataFrame | None = None,
    assets: gpd.GeoDataFrame | None = None,
    measures: Sequence[MapMeasure] = INTERACTIVE_MEASURES,
    scheme: str = "quantiles",
    k: int = 5,
) -> Path:
    """The offline Leaflet map: one base layer per measure (radio buttons) with LSOA tooltips,
    community assets by category and practices as overlays. No tiles, no network."""
    g = gdf[gdf.geometry.notna()].to_crs(WGS84).reset_index(drop=True)
    props = pd.DataFrame(
        {
            "lsoa11_code": g["lsoa11_code"],
            "lsoa11_name": g["lsoa11_name"].fillna(""),
            "imd": g["imd2019_decile"].map(lambda v: "" if pd.isna(v) else str(int(v))),
            "population": g["population"].fillna(""),
        }
    )
    legends = []
    for i, m in enumerate(measures):
        cls = classify(g[m.column], m, scheme, k)
        props[f"fill_{m.id}"] = np.array([*cls.colours, HTML_NO_DATA], dtype=object)[cls.index]
        props[f"tt_{m.id}"] = [_tooltip_text(r, m) for _, r in g.iterrows()]
        legends.append(_legend_html(m, cls, i == 0, int((cls.index < 0).sum())))
    # coordinates to ~1 m, to keep the file small
    geoms = gpd.GeoSeries(g.geometry.values, crs=WGS84).set_precision(1e-5)
    features = gpd.GeoDataFrame(props, geometry=geoms.values, crs=WGS84)

    with _deterministic_ids():
        if len(features):
            core = gpd.GeoDataFrame(
                {"population": g["population"], "lsoa11_code": g["lsoa11_code"]},
                geometry=g.geometry.values,
                crs=WGS84,
            ).to_crs(BNG)
            box = gpd.GeoSeries([shapely.box(*_extent(core))], crs=BNG).to_crs(WGS84).total_bounds
            minx, miny, maxx, maxy = box
        else:
            minx, miny, maxx, maxy = (-1.3, 52.55, -1.0, 52.7)
        fmap = folium.Map(
            location=[(miny + maxy) / 2, (minx + maxx) / 2],
            zoom_start=12,
            tiles=None,
            control_scale=True,
            attribution_control=False,
            zoom_snap=0.25,
        )
        fmap.default_js = []
        fmap.default_css = []
        fmap.get_root().header.add_child(
            branca.element.Element(leaflet_inline_head()), name="leaflet_inline"
        )
        fmap.get_root().header.add_child(
            branca.element.Element(
                "<style>.leaflet-container{background:#f7f7f4;}"
                ".leaflet-tooltip{font:12px/1.35 Arial,sans-serif;}"
                ".leaflet-control-layers{font:12px/1.3 Arial,sans-serif;}"
                ".leaflet-bottom{bottom:34px;}</style>"
            ),
            name="phm_style",
        )
        if background is not None and not background.empty:
            bg = background.to_crs(WGS84)[["lsoa11_code", "geometry"]].copy()
            bg["geometry"] = bg.geometry.set_precision(1e-5)
            folium.GeoJson(
                bg,
                name="LSOA 2011 boundaries",
                style_function=lambda f: {
                    "fillColor": BACKGROUND,
                    "color": "#bdbdbd",
                    "weight": 0.5,
                    "fillOpacity": 0.6,
                },
                interactive=False,
                control=False,
            ).add_to(fmap)
        fields = ["lsoa11_code", "lsoa11_name", "imd", "population"]
        who = "all PCNs" if pcn_code == ALL_PCNS else "this PCN"
        aliases = ["LSOA", "Name", "IMD 2019 decile", f"Registered patients ({who})"]
        for m in measures:
            if m.kind == "imd":
                continue
            fields.append(f"tt_{m.id}")
            aliases.append(m.title)
        for i, m in enumerate(measures if len(features) else ()):
            fg = folium.FeatureGroup(name=m.title, overlay=False, show=(i == 0))
            folium.GeoJson(
                features,
                style_function=lambda f, mid=m.id: {
                    "fillColor": f["properties"][f"fill_{mid}"],
                    "color": "#ffffff",
                    "weight": 0.8,
                    "fillOpacity": 0.85,
                },
                highlight_function=lambda f: {"weight": 3, "color": "#000000"},
                tooltip=folium.GeoJsonTooltip(fields=fields, aliases=aliases, sticky=True),
                name=m.title,
            ).add_to(fg)
            fg.add_to(fmap)
        if practices is not None and not practices.empty:
            own = _own_practices(practices, pcn_code).to_crs(WGS84)
            fg = folium.FeatureGroup(name="GP practices (estimated location)", overlay=True)
            for _, r in own.iterrows():
                folium.Marker(
                    location=[round(r.geometry.y, 6), round(r.geometry.x, 6)],
                    icon=folium.DivIcon(
                        html=(
                            '<div style="font-size:20px;line-height:20px;color:#fff;'
                            "-webkit-text-stroke:1.5px #000;text-shadow:0 0 2px #000;"
                            'text-align:center">&#9650;</div>'
                        ),
                        icon_size=(20, 20),
                        icon_anchor=(10, 10),
                    ),
                    tooltip=html.escape(
                        f"{r['practice_code']} {r['practice_name'] or ''} — estimated location: "
                        "population-weighted centroid of registered patients' LSOAs"
                    ),
                ).add_to(fg)
            fg.add_to(fmap)
        if assets is not None and not assets.empty:
            # above the measure layers (overlayPane, 400), below markers (600)
            folium.map.CustomPane("assets", z_index=450, pointer_events=True).add_to(fmap)
            a = assets.to_crs(WGS84)
            for cat in sorted(a["category"].dropna().unique()):
                pts = a[a["category"] == cat]
                fg = folium.FeatureGroup(
                    name=f"Assets: {asset_label(cat)} ({len(pts)})", overlay=True
                )
                for _, r in pts.iterrows():
                    marker = folium.CircleMarker(
                        location=[round(r.geometry.y, 6), round(r.geometry.x, 6)],
                        radius=5,
                        color="#222222",
                        weight=1,
                        fill=True,
                        fill_color=ASSET_COLOURS.get(cat, "#333333"),
                        fill_opacity=0.95,
                        tooltip=html.escape(f"{r['name']} ({asset_label(cat)})"),
                    )
                    marker.options["pane"] = "assets"  # path_options() drops it
                    marker.add_to(fg)
                fg.add_to(fmap)
        folium.LayerControl(collapsed=False, position="topright").add_to(fmap)
        if len(features):
            fmap.fit_bounds([[miny, minx], [maxy, maxx]])
        title = (
            f"<b>{html.escape(pcn_label)}</b>: need by LSOA 2011 of residence, patients "
            f"registered with {_practices_of(pcn_code)}. Choose a measure on the right; hover an area "
            "for its values. Triangles: GP practices at the population-weighted centroid of "
            "their patients' LSOAs (not surgery addresses)."
        )
        footer = html.escape(f"{OGL_ATTRIBUTION} {SDC_NOTE}")
        _Overlay(fmap.get_name(), title, "".join(legends), footer).add_to(fmap)
        out = fmap.get_root().render()
    _check_offline(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(out, encoding="utf-8")
    return out_path


_REMOTE = re.compile(
    r"<script[^>]+src\s*=\s*[\"']?(https?:)?//|<link[^>]+href\s*=\s*[\"']?(https?:)?//"
    r"|@import\s+url\(\s*[\"']?(https?:)?//",
    re.IGNORECASE,
)


def _check_offline(text: str) -> None:
    m = _REMOTE.search(text)
    if m:
        raise RuntimeError(f"interactive map would load a remote resource: {m.group(0)!r}")


# ------------------------------------------------------------------------------ driver


def write_pcn_maps(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path | str,
    *,
    pcn_codes: Sequence[str] | None = None,
    boundaries: gpd.GeoDataFrame | None = None,
    scheme: str = "quantiles",
    k: int = 5,
    need_column: str = "ltc5_pct",
    top_fraction: float = 0.2,
    distance_threshold_m: float = 1000.0,
    interactive: bool = True,
) -> dict[str, list[Path]]:
    """Write every map and the gap table of each PCN under ``<out_dir>/<pcn_code>/maps/``
    from ``geo.need_by_lsoa_published`` (build it first with
    :func:`geo.need.build_need_tables`). Returns the paths written per PCN."""
    out_dir = Path(out_dir)
    pub = con.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    b = boundaries if boundaries is not None else load_lsoa_boundaries()
    b_bng = b.to_crs(BNG)
    lads = lad_outlines(b_bng)
    practices = practice_locations(con, b)
    assets = load_assets(con)
    codes = (
        list(pcn_codes)
        if pcn_codes
        else sorted(c for c in pub["pcn_code"].unique().to_list() if c not in (ALL_PCNS, None))
    )
    written: dict[str, list[Path]] = {}
    for code in codes:
        gdf = published_lsoa_geodataframe(pub, code, b)
        rows = pub.filter(pl.col("pcn_code") == code)
        name = rows["pcn_name"][0] if rows.height and rows["pcn_name"][0] else code
        label = f"{name} ({code})" if name != code else code
        maps = out_dir / code / "maps"
        paths = []
        for m in MAP_MEASURES:
            paths.append(
                plot_choropleth(
                    gdf,
                    m,
                    maps / f"{m.id}.png",
                    pcn_label=label,
                    pcn_code=code,
                    background=b_bng,
                    practices=practices,
                    scheme=scheme,
                    k=k,
                    lads=lads,
                )
            )
        gaps = asset_gaps(
            gdf,
            assets,
            need_column=need_column,
            top_fraction=top_fraction,
            distance_threshold_m=distance_threshold_m,
        )
        gaps_path = maps / "asset_gaps.csv"
        gaps_path.parent.mkdir(parents=True, exist_ok=True)
        gaps.write_csv(gaps_path)
        paths.append(gaps_path)
        need_m = next((m for m in INTERACTIVE_MEASURES if m.column == need_column), None)
        if need_m is not None:
            n_gap = gaps.filter(pl.col("gap")).height
            paths.append(
                plot_choropleth(
                    gdf,
                    need_m,
                    maps / "assets_over_need.png",
                    pcn_label=label,
                    pcn_code=code,
                    background=b_bng,
                    practices=practices,
                    scheme=scheme,
                    k=k,
                    lads=lads,
                    assets=assets,
                    highlight=gaps["lsoa11_code"].unique().to_list(),
                    title=f"Community assets over need — {label}",
                    extra_notes=[
                        f"Need: {need_m.title.lower()} (%). Top fifth: the "
                        f"{top_fraction:.0%} of the ranked LSOAs with the highest value "
                        "(LSOAs with suppressed values are not ranked).",
                        (
                            f"Gap table (asset_gaps.csv): {n_gap} LSOA-category pairs in the "
                            f"top fifth with no asset of that category within "
                            f"{distance_threshold_m:,.0f} m of the LSOA centroid (straight line)."
                        )
                        if gaps.height
                        else "Gap table (asset_gaps.csv) is empty: no LSOA has a published "
                        "value of this measure (all fewer than 10 people), so none is ranked.",
                    ],
                )
            )
        if interactive:
            paths.append(
                write_interactive_map(
                    gdf,
                    maps / "need_map.html",
                    pcn_label=label,
                    pcn_code=code,
                    background=b,
                    practices=practices,
                    assets=assets,
                    scheme=scheme,
                    k=k,
                )
            )
        written[code] = paths
    return written
