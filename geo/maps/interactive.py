"""The offline interactive map (folium/Leaflet, no tiles, no network).

Delivered text is data, never code: practice and community-asset names, area names and the
tooltip values go into one JSON data block (``<script type="application/json">``, with
``<``, ``>`` and ``&`` written as ``\\u003c`` etc. so nothing in it can close the block), and
one fixed script (:data:`_TOOLTIP_SCRIPT`, no data in it) reads that block and builds every
tooltip with ``document.createElement`` and ``textContent``. No delivered string reaches
JavaScript source, a template literal, ``innerHTML`` or a Jinja template.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import html
import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import branca.element
import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geo.maps.common import (
    ASSET_COLOURS,
    BACKGROUND,
    HTML_NO_DATA,
    INTERACTIVE_MEASURES,
    LEAFLET_DIR,
    SDC_NOTE,
    Classes,
    MapMeasure,
    _extent,
    _own_practices,
    _practices_of,
    asset_label,
    classify,
)
from geo.maps.levels import LEVEL_TEXT, LSOA, Level, group_column, group_label
from geo.need import (
    ALL_PCNS,
)
from geo.reference import BNG, OGL_ATTRIBUTION, WGS84
from phm.files import atomic_write_text

# ------------------------------------------------------------------------------ HTML


class _PlainText:
    """What ``jinja2.Template(text).render(...)`` gives for ``text`` holding no Jinja syntax
    (no ``{{``, ``{%``, ``{#``) and no carriage return: the text less one trailing newline
    (Jinja's ``keep_trailing_newline`` is off), without compiling a template."""

    __slots__ = ("_text",)

    def __init__(self, text: str):
        self._text = text[:-1] if text.endswith("\n") else text

    def render(self, *args, **kwargs) -> str:
        return self._text


_JINJA_SYNTAX = re.compile(r"\{[{%#]|\r")


def _template_or_text(original):
    """``branca.element.Template`` for the page being built: branca wraps the rendered output
    of every element in a new :class:`branca.element.Element`, compiling it as a Jinja
    template (thousands per map: one per asset marker); text with no Jinja syntax renders to
    itself, so it is kept as text. Anything else is compiled as before."""

    def template(source, *args, **kwargs):
        plain = isinstance(source, str) and not args and not kwargs
        if plain and _JINJA_SYNTAX.search(source) is None:
            return _PlainText(source)
        return original(source, *args, **kwargs)

    return template


@contextlib.contextmanager
def _deterministic_ids() -> Iterator[None]:
    """branca names every element with 16 random bytes; number them instead. While the page
    is built, elements made from plain rendered text skip Jinja (:func:`_template_or_text`)
    and element names are camelified once per class name: the same page, less work."""
    counter = itertools.count(1)
    original = branca.element.Element.__dict__["_generate_id"]
    template, camelify = branca.element.Template, branca.element._camelify
    branca.element.Element._generate_id = classmethod(lambda cls: f"{next(counter):08d}")
    branca.element.Template = _template_or_text(template)
    branca.element._camelify = functools.cache(camelify)
    try:
        yield
    finally:
        branca.element.Element._generate_id = original
        branca.element.Template, branca.element._camelify = template, camelify


@functools.cache
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


def _tooltip_texts(g: pd.DataFrame, m: MapMeasure) -> list[str]:
    """:func:`_tooltip_text` of every row of ``g``, read column by column (no row objects)."""
    cols = [m.column, *(m.interval or ())]
    present = {c: g[c].tolist() if c in g.columns else [None] * len(g) for c in cols}
    rows = [dict(zip(cols, values, strict=True)) for values in zip(*present.values(), strict=True)]
    return [_tooltip_text(r, m) for r in rows]


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


#: The only script that touches delivered text. It is fixed (nothing is substituted into it):
#: it reads the JSON data block and binds tooltips built from DOM text nodes to the layers
#: named in it (folium's global variables, named by this module, checked against a pattern).
_TOOLTIP_SCRIPT = """
(function () {
  var block = document.getElementById('phm-map-data');
  if (!block) { return; }
  var data = JSON.parse(block.textContent);
  function layerNamed(name) {
    if (typeof name !== 'string' || !/^[a-z_]+_[0-9a-f]+$/.test(name)) { return null; }
    var layer = window[name];
    return (layer && typeof layer.bindTooltip === 'function') ? layer : null;
  }
  function textElement(tag, text) {
    var el = document.createElement(tag);
    el.textContent = (text === null || text === undefined) ? '' : String(text);
    return el;
  }
  data.markers.forEach(function (m) {
    var layer = layerNamed(m[0]);
    if (layer) { layer.bindTooltip(textElement('div', m[1])); }
  });
  var areas = data.areas;
  areas.layers.forEach(function (name) {
    var layer = layerNamed(name);
    if (!layer) { return; }
    layer.bindTooltip(function (l) {
      var row = areas.rows[l.feature.properties.i] || [];
      var table = document.createElement('table');
      areas.labels.forEach(function (label, j) {
        var tr = document.createElement('tr');
        tr.appendChild(textElement('th', label));
        tr.appendChild(textElement('td', row[j]));
        table.appendChild(tr);
      });
      return table;
    }, {sticky: true});
  });
})();
"""


def json_for_script(obj) -> str:
    """JSON that is safe inside ``<script type="application/json">``: ASCII only (U+2028 and
    U+2029 escaped), and ``<``, ``>``, ``&`` escaped so ``</script>`` or ``<!--`` cannot end
    or change the block. ``JSON.parse`` gives back exactly ``obj``."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _with_map_data(page: str, data: dict) -> str:
    """Append the JSON data block and the fixed tooltip script to the rendered page, after
    folium's script (so every layer exists). Done after rendering on purpose: branca renders
    the output of each element again as a Jinja template, so text given to folium or branca
    is evaluated if it holds ``{{ ... }}``; nothing delivered is given to them."""
    tail = (
        f'<script type="application/json" id="phm-map-data">{json_for_script(data)}</script>\n'
        f"<script>{_TOOLTIP_SCRIPT}</script>\n"
    )
    at = page.rfind("</html>")
    if at < 0:
        raise RuntimeError("rendered map has no </html>")
    return page[:at] + tail + page[at:]


def _html_text(s: str) -> str:
    """Text for the HTML parts that folium/branca render: escaped for HTML, and with braces
    as character references so the second Jinja pass (see :func:`_with_map_data`) sees no
    ``{{``, ``{%`` or ``{#``."""
    return html.escape(s, quote=True).replace("{", "&#123;").replace("}", "&#125;")


def _text(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _legend_html(
    m: MapMeasure, cls: Classes, first: bool, n_suppressed: int, note: str | None = None
) -> str:
    unit = f" ({_html_text(m.unit)})" if m.unit else ""
    rows = [
        f'<div><span style="display:inline-block;width:14px;height:12px;background:{c};'
        f'border:1px solid #777;margin-right:6px;vertical-align:middle"></span>'
        f"{_html_text(lab)}</div>"
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
        f'<div class="phm-legend-layer" data-layer="{_html_text(m.title)}" '
        f'style="display:{display}"><b>{_html_text(m.title)}{unit}</b>'
        + (
            f'<div class="phm-level-note" style="font-size:11px">{_html_text(note)}</div>'
            if note
            else ""
        )
        + f'<div style="color:#555;font-size:11px">Classes: {_html_text(cls.method)}</div>'
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
    levels: Mapping[str, Level] | None = None,
    background_json: str | None = None,
) -> Path:
    """The offline Leaflet map: one base layer per measure (radio buttons) with LSOA tooltips,
    community assets by category and practices as overlays. No tiles, no network.

    ``levels``: how each measure is shown (:func:`geo.maps.levels.choose_levels`, whose frame
    ``gdf`` then is); by LSOA when not given. The map opens on the first measure with values.
    ``background_json``: :func:`background_geojson` of ``background``, prepared once for
    many PCNs (the same page as from ``background``)."""
    g = gdf[gdf.geometry.notna()].to_crs(WGS84).reset_index(drop=True)
    # the features carry only their colours and their row in the data block's tooltip table
    props = pd.DataFrame({"i": np.arange(len(g), dtype=np.int64)})
    tips = pd.DataFrame(
        {
            "lsoa11_code": g["lsoa11_code"].map(_text),
            "lsoa11_name": g["lsoa11_name"].map(_text),
            "imd": g["imd2019_decile"].map(_text),
            "population": g["population"].map(_text),
        }
    )
    levels = levels or {}
    legends = []
    grouped: set[str] = set()
    classes = []
    for m in measures:
        level = levels.get(m.id, LEVEL_TEXT[LSOA])
        grp = group_column(m) if level.level != LSOA and group_column(m) in g.columns else None
        cls = classify(
            g[m.column],
            m,
            scheme,
            k,
            groups=g[grp] if grp else None,
            units=level.units,
        )
        classes.append((m, level, grp, cls))
    # the map opens on the first layer with values
    first = next((i for i, c in enumerate(classes) if (c[3].index >= 0).any()), 0)
    for i, (m, level, grp, cls) in enumerate(classes):
        fills = np.array([*cls.colours, HTML_NO_DATA], dtype=object)[cls.index]
        props[f"fill_{m.id}"] = fills
        if grp:
            # the LSOAs of a group share its colour: no LSOA borders inside it
            props[f"edge_{m.id}"] = fills
            grouped.add(m.id)
        if m.kind != "imd":
            texts = _tooltip_texts(g, m)
            if grp:
                texts = [
                    f"{t} — {group_label(level.level, key)}" if key is not None else t
                    for t, key in zip(texts, g[grp], strict=True)
                ]
            tips[f"tt_{m.id}"] = texts
        legends.append(_legend_html(m, cls, i == first, int((cls.index < 0).sum()), level.note))
    marker_tips: list[list[str]] = []
    area_layers: list[str] = []
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
        if background_json is None and background is not None and not background.empty:
            background_json = background_geojson(background)
        if background_json is not None:
            folium.GeoJson(
                _parsed(background_json),
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
        fields = list(tips.columns)
        who = "all PCNs" if pcn_code == ALL_PCNS else "this PCN"
        aliases = ["LSOA", "Name", "IMD 2019 decile", f"Registered patients ({who})"]
        aliases += [m.title for m in measures if m.kind != "imd"]
        # one GeoJSON for every measure's layer (folium would convert the frame each time),
        # parsed once: folium only reads it (it adds feature ids only to features without a
        # unique id or property, and "i" is one), so the layers can share it
        features_data = json.loads(_geojson_text(features)) if len(features) else None
        for i, m in enumerate(measures if len(features) else ()):
            fg = folium.FeatureGroup(name=m.title, overlay=False, show=(i == first))
            layer = folium.GeoJson(
                features_data,
                style_function=lambda f, mid=m.id, own=(m.id in grouped): {
                    "fillColor": f["properties"][f"fill_{mid}"],
                    "color": f["properties"][f"edge_{mid}"] if own else "#ffffff",
                    "weight": 0.8,
                    "fillOpacity": 0.85,
                },
                highlight_function=lambda f: {"weight": 3, "color": "#000000"},
                name=m.title,
            ).add_to(fg)
            area_layers.append(layer.get_name())
            fg.add_to(fmap)
        if practices is not None and not practices.empty:
            own = _own_practices(practices, pcn_code).to_crs(WGS84)
            fg = folium.FeatureGroup(name="GP practices (estimated location)", overlay=True)
            for _, r in own.iterrows():
                marker = folium.Marker(
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
                ).add_to(fg)
                marker_tips.append(
                    [
                        marker.get_name(),
                        f"{_text(r['practice_code'])} {_text(r['practice_name'])} — estimated "
                        "location: population-weighted centroid of registered patients' LSOAs",
                    ]
                )
            fg.add_to(fmap)
        if assets is not None and not assets.empty:
            # above the measure layers (overlayPane, 400), below markers (600)
            folium.map.CustomPane("assets", z_index=450, pointer_events=True).add_to(fmap)
            a = assets.to_crs(WGS84)
            for cat in sorted(a["category"].dropna().unique()):
                pts = a[a["category"] == cat]
                # layer names are HTML to Leaflet's layer control: escape them
                fg = folium.FeatureGroup(
                    name=_html_text(f"Assets: {asset_label(cat)} ({len(pts)})"), overlay=True
                )
                xs, ys = pts.geometry.x.tolist(), pts.geometry.y.tolist()
                for x, y, name in zip(xs, ys, pts["name"].tolist(), strict=True):
                    marker = folium.CircleMarker(
                        location=[round(y, 6), round(x, 6)],
                        radius=5,
                        color="#222222",
                        weight=1,
                        fill=True,
                        fill_color=ASSET_COLOURS.get(cat, "#333333"),
                        fill_opacity=0.95,
                    )
                    marker.options["pane"] = "assets"  # path_options() drops it
                    marker.add_to(fg)
                    marker_tips.append([marker.get_name(), f"{_text(name)} ({asset_label(cat)})"])
                fg.add_to(fmap)
        folium.LayerControl(collapsed=False, position="topright").add_to(fmap)
        if len(features):
            fmap.fit_bounds([[miny, minx], [maxy, maxx]])
        title = (
            f"<b>{_html_text(pcn_label)}</b>: need by LSOA 2011 of residence (by MSOA or IMD "
            "decile where the legend says so), patients "
            f"registered with {_practices_of(pcn_code)}. Choose a measure on the right; hover an area "
            "for its values. Triangles: GP practices at the population-weighted centroid of "
            "their patients' LSOAs (not surgery addresses)."
        )
        footer = _html_text(f"{OGL_ATTRIBUTION} {SDC_NOTE}")
        _Overlay(fmap.get_name(), title, "".join(legends), footer).add_to(fmap)
        data = {
            "markers": marker_tips,
            "areas": {
                "layers": area_layers,
                "fields": fields,
                "labels": aliases,
                "rows": tips.to_numpy(dtype=object).tolist(),
            },
        }
        page = fmap.get_root().render()
    # the page before the data block is added: the block is inert JSON, and a name that
    # looks like a remote URL must not stop the map being written
    _check_offline(page)
    atomic_write_text(out_path, _with_map_data(page, data))
    return out_path


@functools.lru_cache(maxsize=1)
def _parsed(geojson: str) -> dict:
    """``json.loads(geojson)``, parsed once for the many PCN maps that share the background
    (folium only reads it: its features have a unique property, so no ids are added)."""
    return json.loads(geojson)


def _geojson_text(gdf: gpd.GeoDataFrame) -> str:
    """The GeoJSON folium embeds for ``gdf`` (what ``folium.GeoJson(gdf)`` makes of it)."""
    return json.dumps(gdf.to_crs("EPSG:4326").__geo_interface__)


def background_geojson(background: gpd.GeoDataFrame) -> str | None:
    """The interactive map's LSOA background layer as GeoJSON text (``None`` if empty):
    prepared once, it serves every PCN's map."""
    if background is None or background.empty:
        return None
    bg = background.to_crs(WGS84)[["lsoa11_code", "geometry"]].copy()
    bg["geometry"] = bg.geometry.set_precision(1e-5)
    return _geojson_text(bg)


_REMOTE = re.compile(
    r"<script[^>]+src\s*=\s*[\"']?(https?:)?//|<link[^>]+href\s*=\s*[\"']?(https?:)?//"
    r"|@import\s+url\(\s*[\"']?(https?:)?//",
    re.IGNORECASE,
)


def _check_offline(text: str) -> None:
    m = _REMOTE.search(text)
    if m:
        raise RuntimeError(f"interactive map would load a remote resource: {m.group(0)!r}")
