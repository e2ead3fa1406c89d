"""Maps that always say something: each measure at the finest geography whose published values
can be shown.

A measure is drawn by LSOA 2011 unless more than half of the PCN's mapped LSOAs have no
published value (:data:`MOSTLY_SUPPRESSED`); then by MSOA 2011 (names derived from the LSOA
names, :func:`geo.reference.msoa11_name_from_lsoa`; polygons dissolved from the LSOAs) unless
more than half of those MSOAs are suppressed too; then by IMD 2019 decile: every LSOA takes the
value of the PCN's patients living in LSOAs of its national IMD decile (a choropleth over the
same LSOAs, so the map keeps its shape and the practices stay in place). If every level is
mostly suppressed, the level with the most LSOAs coloured is used (finest first on a tie).

Only published values are used (``geo.need_by_msoa_published``,
``geo.need_by_imd_decile_published``): every value shown comes out of the same disclosure
control as the LSOA table.

The coarser value is written into the measure's own columns of a copy of the PCN's LSOA
frame, with the LSOA's group (MSOA name or decile) in ``_grp_<measure id>``; the static and
interactive maps colour the LSOAs by those values, class the distinct group values (not the
LSOAs) and say in the legend how the measure is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import polars as pl

from geo.maps.common import MapMeasure
from geo.reference import MSOA_LABEL, msoa11_name_from_lsoa

#: a level is "mostly suppressed" when more than this share of its areas have no value
MOSTLY_SUPPRESSED = 0.5

LSOA, MSOA, IMD_DECILE = "lsoa", "msoa", "imd_decile"


@dataclass(frozen=True)
class Level:
    """How one measure is shown on a PCN's maps."""

    level: str
    #: the legend's note (None when shown by LSOA)
    note: str | None
    #: the subtitle's "Mapped by ..." words
    mapped_by: str
    #: the units the classes are formed over
    units: str


LEVEL_TEXT: dict[str, Level] = {
    LSOA: Level(LSOA, None, "LSOA 2011 of residence", "LSOAs"),
    MSOA: Level(
        MSOA,
        "Shown by MSOA: too few events per LSOA to publish.",
        f"{MSOA_LABEL} of residence (too few events per LSOA to publish)",
        "MSOAs",
    ),
    IMD_DECILE: Level(
        IMD_DECILE,
        "Shown by IMD 2019 decile: too few events per LSOA and per MSOA to publish. Each "
        "LSOA has the value of the PCN's patients living in LSOAs of its national decile.",
        "IMD 2019 decile of the LSOA of residence (too few events per LSOA and per MSOA to "
        "publish)",
        "IMD deciles",
    ),
}


def group_column(measure: MapMeasure) -> str:
    return f"_grp_{measure.id}"


def _value_columns(measure: MapMeasure) -> list[str]:
    return [measure.column, *(measure.interval or ())]


def _suppressed_share(values: pd.Series, groups: pd.Series | None = None) -> float:
    """Share of the areas (distinct ``groups`` if given, else rows) with no value."""
    v = pd.to_numeric(values, errors="coerce")
    if groups is not None:
        frame = pd.DataFrame({"g": groups.to_numpy(), "v": v.to_numpy()}).dropna(subset=["g"])
        if frame.empty:
            return 1.0
        v = frame.groupby("g", sort=True)["v"].first()
    return float(v.isna().mean()) if len(v) else 1.0


def _coloured(values: pd.Series) -> int:
    return int(pd.to_numeric(values, errors="coerce").notna().sum())


def _by_group(
    gdf: gpd.GeoDataFrame, keys: pd.Series, rows: pl.DataFrame, key: str, cols: list[str]
) -> pd.DataFrame:
    """The group rows' ``cols`` for each LSOA of ``gdf`` (aligned; null where absent)."""
    present = [c for c in cols if c in rows.columns]
    table = rows.filter(pl.col(key).is_not_null()).select(key, *present).to_pandas()
    table = table.drop_duplicates(key).set_index(key)
    out = pd.DataFrame(index=gdf.index)
    for c in cols:
        out[c] = keys.map(table[c]).to_numpy() if c in table.columns else np.nan
    return out


def choose_levels(
    gdf: gpd.GeoDataFrame,
    measures: Sequence[MapMeasure],
    *,
    msoa_rows: pl.DataFrame | None = None,
    decile_rows: pl.DataFrame | None = None,
    threshold: float = MOSTLY_SUPPRESSED,
) -> tuple[gpd.GeoDataFrame, dict[str, Level]]:
    """A copy of the PCN's published LSOA frame ``gdf`` with each measure at the finest level
    that is not mostly suppressed, and the :class:`Level` of each measure id.

    ``msoa_rows`` / ``decile_rows``: the same PCN's rows of the published MSOA and IMD decile
    tables (a level without rows is skipped). The IMD measure is always by LSOA."""
    out = gdf.copy()
    mapped = out.geometry.notna()
    msoa_keys = out["lsoa11_name"].map(msoa11_name_from_lsoa)
    decile_keys = pd.to_numeric(out["imd2019_decile"], errors="coerce")
    levels: dict[str, Level] = {}
    for m in measures:
        cols = _value_columns(m)
        if m.kind == "imd" or m.column not in out.columns:
            levels[m.id] = LEVEL_TEXT[LSOA]
            continue
        candidates: list[tuple[str, pd.DataFrame, pd.Series]] = [
            (LSOA, out[cols], out["lsoa11_code"])
        ]
        if msoa_rows is not None and msoa_rows.height:
            candidates.append(
                (MSOA, _by_group(out, msoa_keys, msoa_rows, "msoa11_name", cols), msoa_keys)
            )
        if decile_rows is not None and decile_rows.height:
            keys = decile_keys.astype("Int64")
            candidates.append(
                (
                    IMD_DECILE,
                    _by_group(out, keys, decile_rows, "imd2019_decile", cols),
                    keys,
                )
            )
        chosen = None
        for cand in candidates:
            _, vals, keys = cand
            if _suppressed_share(vals[m.column][mapped], keys[mapped]) <= threshold:
                chosen = cand
                break
        if chosen is None:  # every level mostly suppressed: the one that colours most LSOAs
            best = max(_coloured(c[1][m.column][mapped]) for c in candidates)
            chosen = next(c for c in candidates if _coloured(c[1][m.column][mapped]) == best)
        level, vals, keys = chosen
        levels[m.id] = LEVEL_TEXT[level]
        if level != LSOA:
            for c in cols:
                out[c] = vals[c].to_numpy()
            out[group_column(m)] = keys.map(lambda k: None if pd.isna(k) else str(k)).to_numpy()
    return out, levels


def group_label(level: str, key) -> str:
    """How an LSOA's group is named in a tooltip."""
    if key is None or (isinstance(key, float) and np.isnan(key)):
        return ""
    if level == MSOA:
        return f"MSOA {key}"
    if level == IMD_DECILE:
        return f"this PCN's patients in IMD decile {key} LSOAs"
    return ""
