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

import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb
import geopandas as gpd
import polars as pl

from geo.maps.common import (
    INTERACTIVE_MEASURES,
    MAP_MEASURES,
    Classes,
    MapMeasure,
    asset_label,
    classify,
    distance_m,
    load_assets,
    lsoa_centroids,
    practice_locations,
)
from geo.maps.gaps import asset_gaps
from geo.maps.interactive import background_geojson, leaflet_inline_head, write_interactive_map
from geo.maps.levels import LEVEL_TEXT, Level, choose_levels
from geo.maps.static import BaseLayers, base_layers, lad_outlines, plot_choropleth
from geo.need import ALL_PCNS, published_lsoa_geodataframe, published_table
from geo.reference import BNG, load_lsoa_boundaries
from phm.files import write_csv
from phm.workers import largest_first, worker_context, worker_count, workers_setting

log = logging.getLogger("geo.maps")

__all__ = [
    "INTERACTIVE_MEASURES",
    "MAP_MEASURES",
    "BaseLayers",
    "Classes",
    "MapMeasure",
    "asset_gaps",
    "asset_label",
    "background_geojson",
    "base_layers",
    "choose_levels",
    "classify",
    "coarser_tables",
    "distance_m",
    "lad_outlines",
    "leaflet_inline_head",
    "load_assets",
    "lsoa_centroids",
    "map_workers",
    "pcn_levels",
    "plot_choropleth",
    "practice_locations",
    "write_interactive_map",
    "write_pcn_maps",
]

# ------------------------------------------------------------------------------ driver


def coarser_tables(con: duckdb.DuckDBPyConnection) -> dict[str, pl.DataFrame]:
    """The published MSOA and IMD decile tables (empty frames if not built)."""
    out = {}
    for level in ("msoa", "imd_decile"):
        try:
            out[level] = con.execute(f"SELECT * FROM {published_table(level)}").pl()
        except duckdb.CatalogException:
            out[level] = pl.DataFrame({"pcn_code": []}, schema={"pcn_code": pl.String})
    return out


def pcn_levels(
    gdf: gpd.GeoDataFrame, pcn_code: str, coarser: dict[str, pl.DataFrame]
) -> tuple[gpd.GeoDataFrame, dict[str, Level]]:
    """:func:`geo.maps.levels.choose_levels` for one PCN, over every mapped measure."""
    measures = list({m.id: m for m in (*MAP_MEASURES, *INTERACTIVE_MEASURES)}.values())
    out, levels = choose_levels(
        gdf,
        measures,
        msoa_rows=coarser["msoa"].filter(pl.col("pcn_code") == pcn_code),
        decile_rows=coarser["imd_decile"].filter(pl.col("pcn_code") == pcn_code),
    )
    return out, {**{m.id: LEVEL_TEXT["lsoa"] for m in measures}, **levels}


def map_workers() -> int:
    """Worker processes for the PCN maps: ``PHM_MAP_WORKERS`` if set (1 = render in this
    process), else :func:`phm.workers.worker_count` (``PHM_WORKERS``, default
    ``min(cpu_count, 4)``)."""
    n = workers_setting("PHM_MAP_WORKERS")
    return n if n is not None else worker_count()


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
    failures: dict[str, str] | None = None,
    workers: int | None = None,
) -> dict[str, list[Path]]:
    """Write every map and the gap table of each PCN under ``<out_dir>/<pcn_code>/maps/``
    from ``geo.need_by_lsoa_published`` (build it first with
    :func:`geo.need.build_need_tables`). Returns the paths written per PCN.

    With ``failures`` (a dict), one PCN's failure does not stop the others: it is logged as
    a warning, recorded as ``failures[pcn_code] = message`` and its partial ``maps/`` folder
    removed. Without it, the first failure (in PCN order) is raised.

    The inputs are read here, once: the published need tables, practice locations and
    community assets, and the shared base layers (boundaries projected, background paths
    and GeoJSON prepared once, :func:`base_layers`, :func:`background_geojson`).
    ``workers`` > 1 renders the PCNs in that many worker processes (``forkserver``, else
    ``spawn``: never a fork of this process), which get only these published frames, never
    the warehouse; the files are byte-identical to ``workers=1`` (rendering in this
    process). Default: :func:`map_workers` (``PHM_MAP_WORKERS``); when that is not set, at
    most one worker per two PCNs, since starting the workers costs about one PCN's maps."""
    out_dir = Path(out_dir)
    pub = con.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    codes = (
        list(pcn_codes)
        if pcn_codes
        else sorted(c for c in pub["pcn_code"].unique().to_list() if c not in (ALL_PCNS, None))
    )
    n = _n_workers(workers, len(codes))
    # start the workers' parent process now: it imports the map code while this one reads
    mp_context = worker_context() if n > 1 else None
    coarser = coarser_tables(con)
    b = boundaries if boundaries is not None else load_lsoa_boundaries()
    b_bng = b.to_crs(BNG)
    base = base_layers(b_bng, lad_outlines(b_bng))
    practices = practice_locations(con, b)
    assets = load_assets(con)
    context = dict(
        pub=pub,
        b=b,
        base=base,
        background_json=background_geojson(b) if interactive else None,
        practices=practices,
        assets=assets,
        out_dir=out_dir,
        scheme=scheme,
        k=k,
        need_column=need_column,
        top_fraction=top_fraction,
        distance_threshold_m=distance_threshold_m,
        interactive=interactive,
        coarser=coarser,
    )
    written: dict[str, list[Path]] = {}
    if n <= 1:
        for code in codes:
            if failures is None:
                written[code] = _pcn_maps(code, **context)
                continue
            try:
                written[code] = _pcn_maps(code, **context)
            except Exception as e:  # isolate: the other PCNs still get their maps
                _failed(code, e, out_dir, failures)
        return written
    # each worker receives the shared context once, then PCN codes only
    with ProcessPoolExecutor(
        max_workers=n,
        mp_context=mp_context,
        initializer=_init_worker,
        initargs=(context,),
    ) as pool:
        # the PCNs with the most LSOAs (the most drawing) first, so the workers finish together
        lsoas = dict(pub.group_by("pcn_code").len().iter_rows())
        order = largest_first([lsoas.get(code, 0) for code in codes])
        futures = {codes[i]: pool.submit(_worker_pcn_maps, codes[i]) for i in order}
        for code in codes:  # in PCN order, as in one process
            try:
                written[code] = futures[code].result()
            except Exception as e:
                if failures is None:
                    for f in futures.values():
                        f.cancel()
                    raise
                _failed(code, e, out_dir, failures)
    return written


def _n_workers(workers: int | None, n_pcns: int) -> int:
    """Worker processes for ``n_pcns`` PCNs (1 = in this process)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if workers is None and not os.environ.get("PHM_MAP_WORKERS", "").strip():
        # starting the workers costs about one PCN's maps: by default two PCNs or more each
        return max(1, min(map_workers(), n_pcns // 2))
    return max(1, min(map_workers() if workers is None else workers, n_pcns))


def _failed(code: str, e: Exception, out_dir: Path, failures: dict[str, str]) -> None:
    failures[code] = f"{type(e).__name__}: {e}"
    log.warning("maps for PCN %s failed, other PCNs continue: %s", code, failures[code])
    shutil.rmtree(out_dir / code / "maps", ignore_errors=True)


#: the shared context in a worker process (set once by :func:`_init_worker`)
_WORKER_CONTEXT: dict = {}


def _init_worker(context: dict) -> None:
    _WORKER_CONTEXT.clear()
    _WORKER_CONTEXT.update(context)


def _worker_pcn_maps(code: str) -> list[Path]:
    return _pcn_maps(code, **_WORKER_CONTEXT)


def _pcn_maps(
    code: str,
    *,
    pub,
    b,
    base,
    background_json,
    practices,
    assets,
    out_dir,
    scheme,
    k,
    need_column,
    top_fraction,
    distance_threshold_m,
    interactive,
    coarser,
) -> list[Path]:
    gdf, levels = pcn_levels(published_lsoa_geodataframe(pub, code, b), code, coarser)
    rows = pub.filter(pl.col("pcn_code") == code)
    name = rows["pcn_name"][0] if rows.height and rows["pcn_name"][0] else code
    label = f"{name} ({code})" if name != code else code
    maps = out_dir / code / "maps"
    paths = []
    outlines: dict = {}  # group outlines dissolved once per PCN, shared by its maps
    for m in MAP_MEASURES:
        paths.append(
            plot_choropleth(
                gdf,
                m,
                maps / f"{m.id}.png",
                pcn_label=label,
                pcn_code=code,
                practices=practices,
                scheme=scheme,
                k=k,
                base=base,
                outline_cache=outlines,
                level=levels[m.id],
            )
        )
    need_level = next((levels[m.id] for m in INTERACTIVE_MEASURES if m.column == need_column), None)
    gaps = asset_gaps(
        gdf,
        assets,
        need_column=need_column,
        need_level=need_level.mapped_by if need_level else "LSOA 2011 of residence",
        top_fraction=top_fraction,
        distance_threshold_m=distance_threshold_m,
    )
    gaps_path = maps / "asset_gaps.csv"
    write_csv(gaps, gaps_path)
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
                practices=practices,
                scheme=scheme,
                k=k,
                base=base,
                outline_cache=outlines,
                assets=assets,
                highlight=gaps["lsoa11_code"].unique().to_list(),
                level=levels[need_m.id],
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
                background_json=background_json,
                practices=practices,
                assets=assets,
                scheme=scheme,
                k=k,
                levels=levels,
            )
        )
    return paths
