"""Static A4 landscape PNG choropleths (matplotlib)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import matplotlib
import numpy as np
import shapely

from geo.maps.common import (
    A4_LANDSCAPE,
    ASSET_COLOURS,
    BACKGROUND,
    DPI,
    HATCH,
    MAP_RECT,
    NO_DATA,
    PNG_METADATA,
    PRACTICE_NOTE,
    SDC_NOTE,
    MapMeasure,
    _extent,
    _own_practices,
    _practices_of,
    asset_label,
    classify,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import patheffects
from matplotlib.collections import PathCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.path import Path as MPath

from geo.maps.levels import LEVEL_TEXT, LSOA, Level, group_column
from geo.need import (
    ALL_PCNS,
)
from geo.reference import BNG, OGL_ATTRIBUTION

# ------------------------------------------------------------------------------ static


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


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
    _draw_paths(ax, _polygon_paths(geoms), facecolor, edgecolor, linewidth, zorder, hatch)


def _draw_paths(ax, paths, facecolor, edgecolor, linewidth, zorder, hatch=None) -> None:
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


@dataclass(frozen=True)
class BaseLayers:
    """The layers every PCN's static maps share, prepared once (:func:`base_layers`): the
    LSOA background and the local authority outlines in British National Grid and their
    matplotlib paths. Drawing from these gives the same pixels as drawing from the frames."""

    background: gpd.GeoDataFrame
    lads: gpd.GeoSeries
    background_paths: list
    lad_paths: list


def base_layers(background: gpd.GeoDataFrame, lads: gpd.GeoSeries | None = None) -> BaseLayers:
    """:class:`BaseLayers` of ``background`` (any CRS); ``lads`` from it when not given."""
    bg = background.to_crs(BNG)
    lads = lad_outlines(bg) if lads is None else lads.to_crs(BNG)
    return BaseLayers(
        background=bg,
        lads=lads,
        background_paths=_polygon_paths(bg.geometry),
        lad_paths=_polygon_paths(lads.geometry),
    )


def _draw_background(ax, background, lads, base: BaseLayers | None = None) -> None:
    if base is not None:
        if base.background.empty:
            return
        _draw_paths(ax, base.background_paths, BACKGROUND, "white", 0.3, 1)
        _draw_paths(ax, base.lad_paths, "none", "#8c8c8c", 0.9, 6)
        return
    if background is None or background.empty:
        return
    _draw_polygons(ax, background.geometry, BACKGROUND, "white", 0.3, 1)
    if lads is None:
        lads = lad_outlines(background)
    _draw_polygons(ax, lads.to_crs(BNG).geometry, "none", "#8c8c8c", 0.9, 6)


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


def _group_outlines(
    g: gpd.GeoDataFrame, grp: str, cache: dict[str, gpd.GeoSeries | None] | None
) -> gpd.GeoSeries | None:
    """The outlines of ``g``'s groups (its LSOAs dissolved by ``grp``; None if no LSOA has a
    group), from ``cache`` when an earlier map of the same frame dissolved them."""
    if cache is not None and grp in cache:
        return cache[grp]
    parts = g[g[grp].notna()][[grp, "geometry"]]
    outlines = None if parts.empty else parts.dissolve(grp, sort=True).geometry
    if cache is not None:
        cache[grp] = outlines
    return outlines


#: Names (practices, assets, PCNs) are plain text in every figure: no mathtext, so a ``$`` or a
#: backslash in a delivered name is drawn as it is and cannot break or restyle the figure.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


@matplotlib.rc_context(PLAIN_TEXT)
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
    level: Level | None = None,
    base: BaseLayers | None = None,
    outline_cache: dict[str, gpd.GeoSeries | None] | None = None,
) -> Path:
    """One A4 landscape PNG of ``measure`` over the PCN's LSOAs (``gdf`` in any CRS).

    ``assets`` (points) are drawn by category and ``highlight`` LSOA codes outlined, for
    the assets-over-need map. ``level``: how the measure is shown
    (:func:`geo.maps.levels.choose_levels`; by LSOA when not given): by MSOA or IMD decile the
    LSOAs carry their group's value, the classes are formed over the groups and the groups'
    outlines (LSOAs dissolved) are drawn. ``base``: the shared background and outlines
    prepared once (:func:`base_layers`), used instead of ``background`` and ``lads``.
    ``outline_cache``: a dict shared by the maps of one ``gdf`` (one PCN), holding the group
    outlines dissolved for one map so the next map by the same groups reuses them."""
    level = level or LEVEL_TEXT[LSOA]
    g = gdf[gdf.geometry.notna()].to_crs(BNG).reset_index(drop=True)
    if base is not None:
        bg = base.background
    else:
        bg = background.to_crs(BNG) if background is not None else None
    grp = group_column(measure) if level.level != LSOA else None
    groups = g[grp] if grp is not None else None
    cls = classify(g[measure.column], measure, scheme, k, groups=groups, units=level.units)
    unit = f" ({measure.unit})" if measure.unit else ""
    fig, ax, side = _base_figure(
        title or f"{measure.title} — {pcn_label}",
        f"{measure.definition} Mapped by {level.mapped_by}, for patients registered "
        f"with {_practices_of(pcn_code)}.",
        f"{OGL_ATTRIBUTION} {SDC_NOTE}",
    )
    _draw_background(ax, bg, lads, base)
    if not g.empty:
        colours = np.array([*cls.colours, NO_DATA], dtype=object)[cls.index]
        has = cls.index >= 0
        edge = list(colours[has]) if grp is not None else "white"
        _draw_polygons(ax, g.geometry[has], list(colours[has]), edge, 0.35, 3)
        if (~has).any():
            _draw_polygons(ax, g.geometry[~has], NO_DATA, HATCH, 0.2, 3, hatch="////")
        if grp is not None:
            outlines = _group_outlines(g, grp, outline_cache)
            if outlines is not None:
                _draw_polygons(ax, outlines, "none", "white", 1.1, 4)
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
            {
                "handles": handles,
                "title": f"{measure.title}{unit}" + (f". {level.note}" if level.note else ""),
                "fontsize": 8.5,
            },
            {"handles": asset_handles, "title": "Community assets", "fontsize": 8, "ncols": 2},
        ],
        notes,
    )
    return _save_png(fig, out_path)
