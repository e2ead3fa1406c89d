"""Vendored geography reference data: LSOA 2011 boundaries, IMD 2019, ESP 2013.

All three are read from ``data/reference/`` (provenance and licences in
``data/reference/SOURCES.md`` sections 1, 2 and 4a). IMD 2019 is published on LSOA **2011**
codes, so the boundaries are the 2011 LSOAs too; never mix them with LSOA 2021.

Coordinate reference systems: the boundaries are stored in WGS84 (EPSG:4326, lon/lat);
every distance and area is computed in British National Grid (EPSG:27700, metres).
"""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
import polars as pl

from phm.imd import IMD2019_PATH, load_imd2019  # noqa: F401 (re-exported)
from phm.paths import REFERENCE_DIR

WGS84 = "EPSG:4326"
#: British National Grid: metres, for distances, areas, scale bars
BNG = "EPSG:27700"

LSOA_BOUNDARIES_PATH = REFERENCE_DIR / "geography" / "lsoa2011_llr.geojson"
ESP2013_PATH = REFERENCE_DIR / "esp2013" / "esp2013_5yr_age_bands.csv"

#: Attribution the boundary licence requires with any re-use (martinjc/UK-GeoJSON LICENCE,
#: ONS generalised clipped LSOA 2011 boundaries; SOURCES.md section 2), kept verbatim.
BOUNDARY_ATTRIBUTION = (
    "Contains Ordnance Survey, Office of National Statistics, National Records Scotland and "
    "LPS Intellectual Property data © Crown copyright and database right [2016]. Data "
    "licensed under the terms of the Open Government Licence. Ordnance Survey data covered "
    "by OS OpenData Licence."
)
#: IoD2019 (MHCLG), Open Government Licence v3.0 (SOURCES.md section 1).
IMD_ATTRIBUTION = (
    "English Indices of Deprivation 2019 (MHCLG), Crown copyright, Open Government Licence v3.0."
)
#: The attribution printed on every map (static and interactive).
OGL_ATTRIBUTION = f"{BOUNDARY_ATTRIBUTION} {IMD_ATTRIBUTION}"

#: IMD domains in the tidy file: column stem -> label
IMD_DOMAINS: dict[str, str] = {
    "imd": "Index of Multiple Deprivation",
    "income": "Income",
    "employment": "Employment",
    "education": "Education, Skills and Training",
    "health": "Health Deprivation and Disability",
    "crime": "Crime",
    "barriers": "Barriers to Housing and Services",
    "living_env": "Living Environment",
    "idaci": "Income Deprivation Affecting Children (IDACI)",
    "idaopi": "Income Deprivation Affecting Older People (IDAOPI)",
}


def load_lsoa_boundaries(
    path: Path | str | None = None, codes: list[str] | None = None
) -> gpd.GeoDataFrame:
    """LSOA 2011 polygons in WGS84: ``lsoa11_code, lsoa11_name, lad19_code, geometry``.

    Sorted by code; ``codes`` keeps only those LSOAs.
    """
    gdf = gpd.read_file(Path(path) if path else LSOA_BOUNDARIES_PATH)
    if gdf.crs is None:
        gdf = gdf.set_crs(WGS84)
    gdf = gdf.rename(
        columns={"LSOA11CD": "lsoa11_code", "LSOA11NM": "lsoa11_name", "LAD19CD": "lad19_code"}
    )[["lsoa11_code", "lsoa11_name", "lad19_code", "geometry"]]
    if codes is not None:
        gdf = gdf[gdf["lsoa11_code"].isin(set(codes))]
    return gdf.sort_values("lsoa11_code", kind="stable").reset_index(drop=True)


def load_esp2013(path: Path | str | None = None) -> pl.DataFrame:
    """European Standard Population 2013, 19 bands (0-4 ... 85-89, 90+), in band order:
    ``band`` (0..18), ``age_band``, ``age_lower``, ``age_upper`` (null for 90+),
    ``esp2013_population`` (sums to 100,000)."""
    df = pl.read_csv(Path(path) if path else ESP2013_PATH).sort("age_lower")
    if df.height != 19 or df["esp2013_population"].sum() != 100_000:
        raise ValueError("ESP 2013 file must have 19 bands summing to 100,000")
    return df.with_row_index("band").with_columns(pl.col("band").cast(pl.Int32))


# ------------------------------------------------------------------------------ MSOA 2011

#: how the MSOA level is described in tables, legends and docs
MSOA_LABEL = "MSOA 2011 (from LSOA names)"
_LSOA_NAME = r"^(.+ \d{3})[A-Z]$"


def msoa11_name_from_lsoa(lsoa11_name: str | None) -> str | None:
    """The MSOA 2011 an LSOA 2011 lies in, from the LSOA's name.

    ONS names every LSOA 2011 after its MSOA 2011 plus one letter ("Leicester 003A" lies in
    MSOA "Leicester 003"), so the MSOA name is the LSOA name without its final letter. The
    vendored files carry no MSOA codes, so the MSOA **name** is the key. ``None`` for a name
    not of that form."""
    if lsoa11_name is None:
        return None
    m = re.match(_LSOA_NAME, str(lsoa11_name))
    return m.group(1) if m else None


def msoa11_name_expr(lsoa11_name: pl.Expr) -> pl.Expr:
    """:func:`msoa11_name_from_lsoa` as a polars expression (null when the name does not fit)."""
    return lsoa11_name.str.extract(_LSOA_NAME, 1)


def lsoa_msoa_lookup() -> pl.DataFrame:
    """Every LSOA 2011 in England (IMD 2019 file) with its MSOA 2011 name:
    ``lsoa11_code, msoa11_name``, sorted by code."""
    return load_imd2019().select(
        "lsoa11_code", msoa11_name_expr(pl.col("lsoa11_name")).alias("msoa11_name")
    )


def dissolve_msoa(lsoa: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """MSOA 2011 polygons: the LSOA polygons of ``lsoa`` (with ``lsoa11_name``) dissolved by
    their MSOA name. Columns ``msoa11_name, geometry``, sorted by name, in ``lsoa``'s CRS."""
    g = lsoa[["lsoa11_name", "geometry"]].copy()
    g["msoa11_name"] = [msoa11_name_from_lsoa(n) for n in g["lsoa11_name"]]
    g = g[g["msoa11_name"].notna() & g.geometry.notna()]
    out = g[["msoa11_name", "geometry"]].dissolve("msoa11_name", sort=True).reset_index()
    return out[["msoa11_name", "geometry"]]
