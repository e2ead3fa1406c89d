"""geo.maps: PNG and offline HTML maps, asset gap table, practice locations, CRS handling."""

from __future__ import annotations

import math
import re

import duckdb
import geopandas as gpd
import numpy as np
import polars as pl
import pytest
from geo_demo import make_demo_warehouse
from PIL import Image

from geo.maps import (
    INTERACTIVE_MEASURES,
    MAP_MEASURES,
    asset_gaps,
    classify,
    coarser_tables,
    distance_m,
    load_assets,
    lsoa_centroids,
    pcn_levels,
    plot_choropleth,
    practice_locations,
    write_interactive_map,
    write_pcn_maps,
)
from geo.maps.levels import IMD_DECILE, LSOA, MSOA, choose_levels, group_column
from geo.need import build_need_tables, published_lsoa_geodataframe, published_table
from geo.reference import (
    BNG,
    WGS84,
    dissolve_msoa,
    load_lsoa_boundaries,
    msoa11_name_from_lsoa,
)

PCN = "U99001"
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


def haversine_m(lat1, lon1, lat2, lon2) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


@pytest.fixture(scope="module")
def warehouse():
    con = duckdb.connect()
    make_demo_warehouse(con, n_patients=4000, seed=7)
    build_need_tables(con)
    yield con
    con.close()


@pytest.fixture(scope="module")
def outputs(warehouse, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    written = write_pcn_maps(warehouse, out, pcn_codes=[PCN])
    return out, written[PCN]


def test_every_map_is_written_and_non_trivial(outputs):
    out, paths = outputs
    names = {p.name for p in paths}
    assert {f"{m.id}.png" for m in MAP_MEASURES} <= names
    assert {"assets_over_need.png", "asset_gaps.csv", "need_map.html"} <= names
    for p in paths:
        assert p.parent == out / PCN / "maps"
        if p.suffix == ".png":
            assert p.stat().st_size > 50_000, p
            with Image.open(p) as img:
                w, h = img.size
                assert (w, h) == (1753, 1240)  # A4 landscape at 150 dpi
                assert "Software" not in img.info  # no version stamp: reproducible bytes
                # not a blank page: many distinct colours
                assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 50


def test_png_is_byte_identical_on_rerun(warehouse, outputs, tmp_path):
    out, _ = outputs
    pub = warehouse.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    gdf, levels = pcn_levels(published_lsoa_geodataframe(pub, PCN), PCN, coarser_tables(warehouse))
    m = MAP_MEASURES[0]
    again = plot_choropleth(
        gdf,
        m,
        tmp_path / "again.png",
        pcn_label="Demo North PCN (U99001)",
        pcn_code=PCN,
        background=load_lsoa_boundaries(),
        practices=practice_locations(warehouse),
        level=levels[m.id],
    )
    assert again.read_bytes() == (out / PCN / "maps" / f"{m.id}.png").read_bytes()


def test_html_map_is_offline_with_layers_and_tooltips(outputs):
    out, _ = outputs
    text = (out / PCN / "maps" / "need_map.html").read_text(encoding="utf-8")
    # Leaflet is inlined; nothing is fetched over the network for scripts or styles
    assert "Leaflet 1.9.4" in text and "L.map(" in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert not re.search(r"@import", text)
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", text)
    assert "L.tileLayer(" not in text  # no tile server
    assert "sourceMappingURL" not in text
    # one base layer per measure, with tooltips carrying the LSOA values
    for m in INTERACTIVE_MEASURES:
        # layer names are JSON in the page (tojson writes & as \u0026)
        assert f'"{m.title}"'.replace("&", "\\u0026") in text, m.title
    assert "L.control.layers" in text
    assert "bindTooltip" in text
    for field in ("lsoa11_name", "imd", "population", "tt_ltc5_prevalence"):
        assert f'"{field}"' in text, field
    assert "Registered patients (this PCN)" in text and "IMD 2019 decile" in text
    assert "Assets: " in text and "GP practices (estimated location)" in text
    assert "Open Government Licence" in text
    assert "population-weighted centroid" in text


def test_html_is_byte_identical_on_rerun(warehouse, outputs, tmp_path):
    out, _ = outputs
    pub = warehouse.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    gdf, levels = pcn_levels(published_lsoa_geodataframe(pub, PCN), PCN, coarser_tables(warehouse))
    again = write_interactive_map(
        gdf,
        tmp_path / "again.html",
        pcn_label="Demo North PCN (U99001)",
        pcn_code=PCN,
        background=load_lsoa_boundaries(),
        practices=practice_locations(warehouse),
        assets=load_assets(warehouse),
        levels=levels,
    )
    assert again.read_bytes() == (out / PCN / "maps" / "need_map.html").read_bytes()


def test_gap_csv_matches_published_need(outputs):
    out, _ = outputs
    gaps = pl.read_csv(out / PCN / "maps" / "asset_gaps.csv")
    assert gaps.columns[:3] == ["pcn_code", "lsoa11_code", "lsoa11_name"]
    assert set(gaps["pcn_code"].to_list()) <= {PCN}


def test_lsoa_centroid_distance_matches_haversine():
    """Two Leicester LSOAs several km apart: the EPSG:27700 distance between their centroids
    equals the great-circle (haversine) distance between the same points in WGS84 to within
    0.5% (OSGB36 grid scale factor and datum shift are far smaller)."""
    b = load_lsoa_boundaries(codes=["E01013600", "E01013750"])
    cents = lsoa_centroids(b)
    assert cents.crs.to_epsg() == 27700
    d_bng = cents.geometry.iloc[0].distance(cents.geometry.iloc[1])
    ll = cents.to_crs(WGS84).geometry
    d_hav = haversine_m(ll.iloc[0].y, ll.iloc[0].x, ll.iloc[1].y, ll.iloc[1].x)
    assert d_bng > 2000
    assert d_bng == pytest.approx(d_hav, rel=0.005)
    # and the helper for WGS84 points: Leicester Clock Tower to Leicester railway station
    lat1, lon1, lat2, lon2 = 52.63632, -1.13321, 52.63136, -1.12493
    assert distance_m(lon1, lat1, lon2, lat2)[0] == pytest.approx(
        haversine_m(lat1, lon1, lat2, lon2), rel=0.005
    )


def test_asset_gaps_top_fifth_and_distances():
    b = load_lsoa_boundaries().iloc[:11].copy()
    # need values 1..10 for ten LSOAs; the 11th is suppressed (not ranked)
    b["ltc5_pct"] = [float(v) for v in range(1, 11)] + [None]
    b["pcn_code"] = "U1"
    b["imd2019_decile"] = 3
    top2 = b.iloc[[9, 8]]  # values 10 and 9: the top fifth of 10 ranked LSOAs
    c = lsoa_centroids(top2)
    x0, y0 = c.geometry.iloc[0].x, c.geometry.iloc[0].y
    pts = gpd.GeoDataFrame(
        {
            "asset_id": ["F1", "H1"],
            "name": ["Food bank", "Housing advice"],
            "category": ["food", "housing"],
        },
        geometry=gpd.points_from_xy([x0 + 300, x0], [y0 + 400, y0 + 1500]),
        crs=BNG,
    ).to_crs(WGS84)
    gaps = asset_gaps(b, pts, distance_threshold_m=1000, categories=["food", "housing", "carers"])
    assert gaps["lsoa11_code"].unique(maintain_order=True).to_list() == top2["lsoa11_code"].tolist()
    first = gaps.filter(pl.col("need_rank") == 1)
    food = first.filter(pl.col("category") == "food").row(0, named=True)
    assert food["nearest_asset_id"] == "F1"
    assert food["nearest_distance_m"] == pytest.approx(500, abs=1)
    assert food["gap"] is False
    housing = first.filter(pl.col("category") == "housing").row(0, named=True)
    assert housing["nearest_distance_m"] == pytest.approx(1500, abs=1) and housing["gap"]
    carers = first.filter(pl.col("category") == "carers").row(0, named=True)
    assert carers["nearest_asset_id"] is None and carers["gap"]


def test_practice_at_population_weighted_centroid():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts; CREATE SCHEMA staging")
    con.execute(
        "CREATE TABLE marts.patient_measures AS SELECT * FROM (VALUES "
        "('P1', 'E01013600'), ('P1', 'E01013600'), ('P1', 'E01013600'), ('P1', 'E01013750'), "
        "('P1', NULL)) t(practice_code, lsoa11_code)"
    )
    con.execute(
        "CREATE TABLE staging.practices AS SELECT 'P1' AS practice_code, 'Practice one' AS "
        "practice_name, 'U1' AS pcn_code"
    )
    loc = practice_locations(con)
    c = lsoa_centroids(load_lsoa_boundaries(codes=["E01013600", "E01013750"]))
    x = (3 * c.geometry.iloc[0].x + c.geometry.iloc[1].x) / 4
    y = (3 * c.geometry.iloc[0].y + c.geometry.iloc[1].y) / 4
    assert loc.crs.to_epsg() == 27700 and len(loc) == 1
    assert loc.geometry.iloc[0].x == pytest.approx(x) and loc.geometry.iloc[0].y == pytest.approx(y)


def test_classify():
    m = MAP_MEASURES[0]
    c = classify(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, np.nan]), m, "quantiles", 5)
    assert len(c.labels) == 5 and c.index[-1] == -1 and c.index[0] == 0 and c.index[9] == 4
    nb = classify(np.array([1, 1, 1, 10, 10, 10, 20]), m, "natural_breaks", 3)
    assert nb.labels == ["1.0", "10.0", "20.0"]  # one value per class: no range
    assert classify(np.array([np.nan, np.nan]), m).labels == []
    imd = classify([1, 10, None], MAP_MEASURES[-1])
    assert imd.index.tolist() == [0, 9, -1] and imd.labels[0].startswith("1 (most")


def test_html_map_keeps_hostile_names_as_data(warehouse, tmp_path):
    """Names with script, template and HTML syntax are data in the page, not code
    (the whole-pipeline version, with a browser check, is in test_hostile_text.py)."""
    from test_hostile_text import PAYLOADS, check_map_is_inert

    pub = warehouse.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    gdf = published_lsoa_geodataframe(pub, PCN)
    practices = practice_locations(warehouse)
    practices["practice_name"] = [PAYLOADS[i % len(PAYLOADS)] for i in range(len(practices))]
    assets = load_assets(warehouse)
    assets["name"] = [PAYLOADS[(i + 3) % len(PAYLOADS)] for i in range(len(assets))]
    label = "{{ 6*7 }} PWNED12 <img src=x onerror=alert(1)> `${x}`"
    page = write_interactive_map(
        gdf,
        tmp_path / "hostile.html",
        pcn_label=label,
        pcn_code=PCN,
        practices=practices,
        assets=assets,
    ).read_text(encoding="utf-8")
    data = check_map_is_inert(page)
    tips = [t for _, t in data["markers"]]
    own = practices[practices["pcn_code"] == PCN]
    for code, name in zip(own["practice_code"], own["practice_name"], strict=True):
        assert any(t.startswith(f"{code} {name} — ") for t in tips), name
    for name in assets["name"]:
        assert any(t.startswith(f"{name} (") for t in tips), name
    # the PCN label is HTML text in the title (escaped; braces as character references)
    assert "&#123;&#123; 6*7 &#125;&#125; PWNED12 &lt;img src=x onerror=alert(1)&gt;" in page
    # marker names in the block are the map's own variables, in the order of the tooltips
    names = [n for n, _ in data["markers"]]
    assert all(re.fullmatch(r"(marker|circle_marker)_[0-9]+", n) for n in names)
    assert all(f"var {n} = " in page for n in names)


# ------------------------------------------------------------------------------ coarser levels


def test_msoa_key_from_real_lsoa_names():
    b = load_lsoa_boundaries()
    names = dict(zip(b["lsoa11_code"], b["lsoa11_name"], strict=True))
    assert names["E01013600"].startswith("Leicester ")
    assert msoa11_name_from_lsoa("Leicester 003A") == "Leicester 003"
    assert msoa11_name_from_lsoa("Hinckley and Bosworth 012C") == "Hinckley and Bosworth 012"
    assert msoa11_name_from_lsoa("Leicester 003") is None  # not an LSOA name
    assert msoa11_name_from_lsoa(None) is None
    keys = b["lsoa11_name"].map(msoa11_name_from_lsoa)
    assert keys.notna().all()
    # every key is its LSOAs' name less one letter, and an MSOA holds several LSOAs
    assert all(n[:-1] == k for n, k in zip(b["lsoa11_name"], keys, strict=True))
    assert 4 <= len(b) / keys.nunique() <= 6
    msoa = dissolve_msoa(b)
    assert sorted(msoa["msoa11_name"]) == sorted(keys.unique())
    # dissolving keeps the land: an MSOA's area is its LSOAs' areas
    area = b.to_crs(BNG).assign(k=keys.values).groupby("k").geometry.apply(lambda g: g.area.sum())
    m = msoa.to_crs(BNG).set_index("msoa11_name").geometry.area
    assert np.allclose(m.sort_index().to_numpy(), area.sort_index().to_numpy(), rtol=1e-3)


def test_a_measure_suppressed_in_every_lsoa_is_mapped_at_a_coarser_level(warehouse, outputs):
    """In the 4,000-patient demo, 5+ LTCs is suppressed in every LSOA of the PCN: the maps show
    it by MSOA or IMD decile, say so, and no static map is entirely hatched."""
    out, _ = outputs
    pub = warehouse.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    raw = published_lsoa_geodataframe(pub, PCN)
    ltc5 = MAP_MEASURES[0]
    assert raw[ltc5.column].isna().all()  # the situation of the issue
    gdf, levels = pcn_levels(raw, PCN, coarser_tables(warehouse))
    assert levels[ltc5.id].level in (MSOA, IMD_DECILE)
    assert "too few events per LSOA" in levels[ltc5.id].note
    assert gdf[ltc5.column].notna().any()
    # the value of an LSOA is its group's published value
    level = levels[ltc5.id].level
    table, key = ("msoa", "msoa11_name") if level == MSOA else ("imd_decile", "imd2019_decile")
    coarse = warehouse.execute(
        f"SELECT {key}, {ltc5.column} FROM {published_table(table)} WHERE pcn_code = ?", [PCN]
    ).pl()
    expected = {str(k): v for k, v in coarse.iter_rows()}
    for grp, v in zip(gdf[group_column(ltc5)], gdf[ltc5.column], strict=True):
        want = expected.get(grp)
        assert (want is None and np.isnan(v)) or want == pytest.approx(v)
    # every static map of a measure shows class colours, not only the hatched grey
    for m in (*MAP_MEASURES, INTERACTIVE_MEASURES[0]):
        groups = gdf[group_column(m)] if levels[m.id].level != LSOA else None
        cls = classify(gdf[m.column], m, groups=groups)
        assert (cls.index >= 0).any(), m.id
        with Image.open(out / PCN / "maps" / f"{m.id}.png") as img:
            colours = {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 22)}
        shown = [
            c for c in cls.colours if tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) in colours
        ]
        assert shown, m.id
    gaps = pl.read_csv(out / PCN / "maps" / "asset_gaps.csv")
    assert gaps.height and gaps["need_level"].str.contains("decile|MSOA").all()


def _initial_layer(page: str) -> str:
    """The title of the base layer the page adds to the map when it opens."""
    block = re.search(r"base_layers\s*:\s*\{(.*?)\}", page, re.S).group(1)
    layers = dict(
        (v, json_title)
        for json_title, v in re.findall(r'"([^"]+)"\s*:\s*(feature_group_\d+)', block)
    )
    shown = [layers[v] for v in layers if re.search(rf"\b{v}\.addTo\(map_", page)]
    assert len(shown) == 1, shown
    legend = re.findall(
        r'class="phm-legend-layer" data-layer="([^"]+)" style="display:block"', page
    )
    assert len(legend) == 1
    return shown[0]


def test_interactive_map_opens_on_a_layer_with_values(warehouse, outputs, tmp_path):
    out, _ = outputs
    page = (out / PCN / "maps" / "need_map.html").read_text(encoding="utf-8")
    first = INTERACTIVE_MEASURES[0]
    assert _initial_layer(page) == first.title  # it has values (by a coarser level)
    assert "Shown by " in page and "too few events per LSOA" in page
    # a first measure with no value at any level: the map opens on the next one
    pub = warehouse.execute(f"SELECT * FROM {published_table('lsoa')}").pl()
    gdf = published_lsoa_geodataframe(pub, PCN)
    gdf, levels = choose_levels(gdf, INTERACTIVE_MEASURES)  # no coarser tables: LSOA only
    for c in (first.column, *first.interval):
        gdf[c] = np.nan
    nxt = next(m for m in INTERACTIVE_MEASURES[1:] if gdf[m.column].notna().any())
    page = write_interactive_map(
        gdf, tmp_path / "m.html", pcn_label="x", pcn_code=PCN, levels=levels
    ).read_text(encoding="utf-8")
    assert _initial_layer(page) == nxt.title.replace("&", "\\u0026")
