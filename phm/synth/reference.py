"""Reference data the generator reads: parameters, IMD 2019, LSOA boundaries, ODS practices."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from phm.imd import IMD2019_PATH as IMD_PATH
from phm.paths import REFERENCE_DIR

PARAMS_PATH = Path(__file__).with_name("params.yaml")
GEOJSON_PATH = REFERENCE_DIR / "geography" / "lsoa2011_llr.geojson"
ODS_PATH = REFERENCE_DIR / "ods" / "epraccur_qk1_llr.csv"


@cache
def load_params() -> dict:
    with open(PARAMS_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


@dataclass(frozen=True)
class Lsoas:
    """Leicester LSOAs (sorted by code) with deprivation, population and geometry."""

    code: np.ndarray  # str
    name: np.ndarray
    imd_decile: np.ndarray  # int
    pop_total: np.ndarray
    pop_0_15: np.ndarray
    pop_16_59: np.ndarray
    pop_60plus: np.ndarray
    x: np.ndarray  # centroid, EPSG:27700 metres
    y: np.ndarray
    geoms_wgs84: np.ndarray  # shapely geometries, lon/lat
    bounds_wgs84: np.ndarray  # (n, 4) minx, miny, maxx, maxy


@cache
def load_lsoas(lad19cd: str) -> Lsoas:
    import geopandas as gpd

    imd = (
        pl.read_csv(IMD_PATH, infer_schema_length=0)
        .filter(pl.col("lad19cd") == lad19cd)
        .select(
            "lsoa11cd",
            "lsoa11nm",
            pl.col("imd_decile").cast(pl.Int32),
            pl.col("pop_total_mid2015").cast(pl.Int64),
            pl.col("pop_age_0_15_mid2015").cast(pl.Int64),
            pl.col("pop_age_16_59_mid2015").cast(pl.Int64),
            pl.col("pop_age_60plus_mid2015").cast(pl.Int64),
        )
        .sort("lsoa11cd")
    )
    if imd.height == 0:
        raise ValueError(f"no LSOAs for LAD {lad19cd} in {IMD_PATH}")
    gdf = gpd.read_file(GEOJSON_PATH)
    gdf = gdf[gdf["LSOA11CD"].isin(imd["lsoa11cd"].to_list())].sort_values("LSOA11CD")
    if len(gdf) != imd.height:
        raise ValueError("LSOA geometry and IMD file disagree on the Leicester LSOAs")
    gdf = gdf.set_crs(4326, allow_override=True)
    centroids = gdf.to_crs(27700).geometry.centroid
    geoms = np.asarray(gdf.geometry.values, dtype=object)
    return Lsoas(
        code=imd["lsoa11cd"].to_numpy().astype("U9"),
        name=imd["lsoa11nm"].to_numpy().astype(str),
        imd_decile=imd["imd_decile"].to_numpy(),
        pop_total=imd["pop_total_mid2015"].to_numpy(),
        pop_0_15=imd["pop_age_0_15_mid2015"].to_numpy(),
        pop_16_59=imd["pop_age_16_59_mid2015"].to_numpy(),
        pop_60plus=imd["pop_age_60plus_mid2015"].to_numpy(),
        x=centroids.x.to_numpy(),
        y=centroids.y.to_numpy(),
        geoms_wgs84=geoms,
        bounds_wgs84=np.asarray(gdf.geometry.bounds.to_numpy(), dtype=float),
    )


@cache
def load_practice_candidates(home: str, others: tuple[str, ...]) -> pl.DataFrame:
    """Active GP practices (prescribing setting 4, status A): the home commissioner's first,
    then the other commissioners' (each block sorted by code)."""
    ods = pl.read_csv(ODS_PATH, infer_schema_length=0)
    active = ods.filter((pl.col("prescribing_setting") == "4") & (pl.col("status_code") == "A"))
    blocks = [active.filter(pl.col("commissioner") == home).sort("organisation_code")]
    for c in others:
        blocks.append(active.filter(pl.col("commissioner") == c).sort("organisation_code"))
    out = pl.concat(blocks).select(
        pl.col("organisation_code").alias("practice_code"),
        pl.col("name").alias("practice_name"),
        "commissioner",
    )
    return out.unique(subset="practice_code", keep="first", maintain_order=True)
