"""Geography: need by deprivation area, age-standardised rates, maps and asset gaps."""

import os
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
from dagster_duckdb import DuckDBResource

from geo.maps import write_pcn_maps
from geo.need import LEVELS, build_need_tables, published_table, write_need_geopackages
from geo.reference import MSOA_LABEL, load_lsoa_boundaries
from phm.warehouse import current_extract_date
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import PHMSettings

#: straight-line distance (metres, EPSG:27700) within which an asset counts as reachable
GAP_DISTANCE_M = float(os.environ.get("PHM_ASSET_GAP_DISTANCE_M", 1000))


_NEED_TEXT = (
    "registered population, cohort counts, LTC and frailty prevalence, emergency admission and "
    "A&E rates (crude per 1,000 and directly age-standardised to the European Standard "
    "Population 2013 with Dobson 95% confidence intervals, OHID methods), for every PCN and "
    "all PCNs together (`pcn_code = 'ALL'`)."
)
_PUBLISHED_TEXT = (
    " Every count through the disclosure-control function; rates on fewer than 10 events hidden."
)


def _need_specs() -> list[dg.AssetSpec]:
    """One spec per table :func:`geo.need.build_need_tables` writes: the need tables by LSOA,
    MSOA, IMD decile and IMD quintile and their ``_published`` versions."""
    deps = [dg.AssetKey(["marts", "cohort_members"]), dg.AssetKey(["marts", "patient_measures"])]
    specs = []
    for level, (_, table) in LEVELS.items():
        by = {"lsoa": "LSOA 2011", "msoa": MSOA_LABEL}.get(
            level, level.replace("_", " ").replace("imd", "IMD 2019")
        )
        specs.append(
            dg.AssetSpec(
                table.split("."),
                deps=deps,
                kinds={"duckdb"},
                description=f"`{table}`: need by {by}: {_NEED_TEXT}",
            )
        )
        published = published_table(level)
        specs.append(
            dg.AssetSpec(
                published.split("."),
                deps=[dg.AssetKey(table.split("."))],
                kinds={"duckdb"},
                description=f"`{published}`: `{table}` for publication.{_PUBLISHED_TEXT}",
            )
        )
    return specs


NEED_SPECS = _need_specs()


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="need_by_area",
    group_name="geo",
    can_subset=False,
    specs=NEED_SPECS,
)
def need_by_area(warehouse: DuckDBResource):
    """Need by deprivation area (``geo.need.build_need_tables``)."""
    with warehouse.get_connection() as con:
        rows = build_need_tables(con)
    for spec in NEED_SPECS:
        table = ".".join(spec.key.path)
        yield dg.MaterializeResult(
            asset_key=spec.key, metadata={"rows": dg.MetadataValue.int(rows[table])}
        )


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["exports", "pcn_maps"],
    group_name="geo",
    deps=[
        dg.AssetKey(published_table("lsoa").split(".")),
        # a measure suppressed in most LSOAs is mapped by MSOA or IMD decile (geo.maps.levels)
        dg.AssetKey(published_table("msoa").split(".")),
        dg.AssetKey(published_table("imd_decile").split(".")),
        dg.AssetKey(["marts", "patient_measures"]),
        dg.AssetKey(["staging", "community_assets"]),
    ],
    kinds={"geopackage", "html", "png"},
    description=(
        "For each PCN, under exports/<extract_date>/<pcn_code>/: need_by_lsoa.gpkg (published "
        "values) and maps/: choropleth PNGs of key measures (A4, classed with mapclassify), an "
        "offline interactive need_map.html with community assets, assets_over_need.png and "
        "asset_gaps.csv (LSOAs in the top fifth of need with no asset of a category within "
        f"{GAP_DISTANCE_M:.0f} m; PHM_ASSET_GAP_DISTANCE_M)."
    ),
)
def pcn_maps(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        out = settings.exports(extract_date.isoformat())
        published = con.execute("SELECT * FROM geo.need_by_lsoa_published").pl()
        boundaries = load_lsoa_boundaries()  # read once, for the GeoPackages and the maps
        # the GeoPackages (GDAL) written in a thread while the map workers draw
        with ThreadPoolExecutor(max_workers=1) as thread:
            gpkgs_written = thread.submit(
                write_need_geopackages, published, out, boundaries=boundaries
            )
            # one PCN's map failing does not stop the other PCNs' maps (or their exports)
            failed: dict[str, str] = {}
            maps = write_pcn_maps(
                con,
                out,
                boundaries=boundaries,
                distance_threshold_m=GAP_DISTANCE_M,
                failures=failed,
            )
            gpkgs = gpkgs_written.result()
    n_files = sum(len(v) for v in maps.values())
    context.log.info(f"wrote {len(gpkgs)} GeoPackages and {n_files} map files under {out}")
    if failed:
        context.log.warning(f"maps failed for PCN(s) {sorted(failed)}; other PCNs have theirs")
    return dg.MaterializeResult(
        metadata={
            "geopackages": len(gpkgs),
            "map_files": n_files,
            "folder": str(out),
            "failed_pcns": dg.MetadataValue.json(failed),
        }
    )
