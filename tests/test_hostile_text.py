"""Hostile delivered text: names holding script, template, formula and
mathtext syntax go through the whole pipeline and come out as inert text in every output.

A generated delivery has its practice, PCN and community-asset names replaced by the payloads
below (manifest recomputed); the pipeline then runs end to end. The payloads carry the marker
``PWNED`` so a test can tell that none of them reached executable script text.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import zipfile
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from phm.contract import MANIFEST_NAME, TABLE_NAMES
from phm.files import FORMULA_START, csv_bytes, neutralise_formulas, write_csv
from phm.manifest import write_manifest
from phm.synth import generate
from pipelines.runner import run_pipeline

ED = date(2026, 11, 1)

#: script, template-literal, HTML, Jinja, formula and mathtext payloads
PAYLOADS = [
    "Yoga ${document.title='PWNED1'} Club",
    "Back`tick PWNED2 `+(document.title='x')+`",
    "</script><script>document.title='PWNED3'</script>",
    'Quote" and \' PWNED4 \\" end',
    "<img src=x onerror=\"document.title='PWNED5';document.body.appendChild(document.createElement('pwned'))\">",
    '=HYPERLINK("http://example.invalid/?PWNED6","click")',
    "+SUM(1,1) PWNED7",
    "-2+3 PWNED8",
    "@SUM(1) PWNED9",
    "\tTab PWNED10",
    "Cost $5 and $10 \\alpha_{x} PWNED11",
    "{{ 6*7 }} PWNED12 {% if true %}x{% endif %} {# c #}",
    "Line\u2028sep\u2029 <!-- PWNED13",
    "@import url(//example.invalid/x.css) PWNED14",
]


def _hostile_delivery(root: Path) -> tuple[Path, dict[str, list[str]]]:
    """A generated delivery whose practice, PCN and asset names are the payloads."""
    extracts = root / "extracts"
    generate(extracts, patients=2000, seed=11, extract_date=ED)
    folder = extracts / ED.isoformat()

    def cycle(n: int, offset: int) -> list[str]:
        return [PAYLOADS[(i + offset) % len(PAYLOADS)] for i in range(n)]

    practices = pl.read_csv(folder / "practices.csv", infer_schema=False)
    pcns = sorted(practices["pcn_code"].unique().to_list())
    pcn_name = dict(zip(pcns, cycle(len(pcns), 3), strict=True))
    practices = practices.with_columns(
        practice_name=pl.Series(cycle(practices.height, 0)),
        pcn_name=pl.col("pcn_code").replace_strict(pcn_name),
    )
    practices.write_csv(folder / "practices.csv")
    assets = pl.read_csv(folder / "community_assets.csv", infer_schema=False)
    assets = assets.with_columns(name=pl.Series(cycle(assets.height, 5)))
    assets.write_csv(folder / "community_assets.csv")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    files = {t: folder / e["file"] for t, e in manifest["files"].items() if t in TABLE_NAMES}
    write_manifest(folder, ED.isoformat(), files)
    names = {
        "practice": practices["practice_name"].to_list(),
        "pcn": list(pcn_name.values()),
        "asset": assets["name"].to_list(),
    }
    return extracts, names


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    extracts, names = _hostile_delivery(root)
    home = root / "home"
    run_pipeline(extracts, home)
    return home, names


# ------------------------------------------------------------------------------ CSV


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_every_csv_has_no_live_formula(hostile_run):
    home, _ = hostile_run
    paths = sorted(p for p in home.rglob("*.csv") if "dagster" not in p.parts)
    kinds = {p.name for p in paths}
    assert {"summary.csv", "risk_register.csv", "segments.csv", "asset_gaps.csv"} <= kinds
    neutralised = 0
    for path in paths:
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                for cell in row:
                    if cell.startswith(FORMULA_START):
                        assert _is_number(cell), (path.name, cell)
                    neutralised += cell.startswith(("'=HYPERLINK", "'+SUM", "'@SUM", "'\tTab"))
    # the hostile names did reach the CSVs (as text), so the check above was exercised
    assert neutralised > 0


def test_hostile_names_reach_the_csv_as_text(hostile_run):
    home, names = hostile_run
    summary = next(home.rglob("summary.csv"))
    df = pl.read_csv(summary, infer_schema=False)
    if "practice_name" not in df.columns:
        pytest.skip("summary.csv no longer carries practice names")
    shown = set(df["practice_name"].drop_nulls().to_list())
    for name in names["practice"]:
        if name not in shown and "'" + name not in shown:
            continue  # practice without registered patients
        want = "'" + name if name.startswith(FORMULA_START) else name
        assert want in shown, name


def test_writer_neutralises_text_only():
    df = pl.DataFrame(
        {
            "text": ["=1+1", "+1", "-1", "@A1", "\tx", "\rx", "a=b", "", None, "plain"],
            "n": [-1, -2, 3, 4, 5, 6, 7, 8, 9, 10],
            "x": [-0.5, 1.0, -2.25, 0.0, 1.5, 2.5, 3.5, 4.5, None, -1.0],
        }
    ).with_columns(cat=pl.col("text").cast(pl.Categorical))
    out = neutralise_formulas(df)
    want = ["'=1+1", "'+1", "'-1", "'@A1", "'\tx", "'\rx", "a=b", "", None, "plain"]
    assert out["text"].to_list() == want
    assert out["cat"].to_list() == want
    assert out["n"].to_list() == df["n"].to_list() and out["n"].dtype == pl.Int64
    assert out["x"].to_list() == df["x"].to_list()
    back = list(csv.reader(csv_bytes(df).decode().splitlines()))
    assert back[0] == ["text", "n", "x", "cat"]
    assert back[1] == ["'=1+1", "-1", "-0.5", "'=1+1"]


def test_write_csv_is_atomic_and_byte_identical(tmp_path):
    df = pl.DataFrame({"a": ["=x", "y"], "b": [1, -2]})
    p = write_csv(df, tmp_path / "sub" / "t.csv")
    assert p.read_bytes() == b"a,b\n'=x,1\ny,-2\n"
    assert write_csv(df, tmp_path / "again.csv").read_bytes() == p.read_bytes()
    assert sorted(x.name for x in p.parent.iterdir()) == ["t.csv"]


# ------------------------------------------------------------------------------ XLSX


def _sheet_cells(data: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """(shared strings, [(cell type, raw value)]) of every sheet; asserts there is no formula."""
    with zipfile.ZipFile(__import__("io").BytesIO(data)) as z:
        shared = re.findall(r"<t[^>]*>(.*?)</t>", z.read("xl/sharedStrings.xml").decode(), re.S)
        cells = []
        for name in z.namelist():
            if name.startswith("xl/worksheets/sheet"):
                xml = z.read(name).decode()
                assert "<f>" not in xml and "<f " not in xml, name
                cells += re.findall(
                    r'<c r="[A-Z]+[0-9]+"(?: s="[0-9]+")?(?: t="(\w+)")?>'
                    r"<v>([^<]*)</v>",
                    xml,
                )
    return shared, cells


def test_xlsx_writes_hostile_text_as_strings():
    import html

    from phm.exports import _xlsx_bytes

    df = pl.DataFrame({"reasons": PAYLOADS, "n": list(range(-3, len(PAYLOADS) - 3))})
    defs = pl.DataFrame({"cohort_id": ["c"], "description": ["=1+1"]})
    data = _xlsx_bytes([("c", df)], defs, __import__("datetime").datetime(2026, 11, 1))
    shared, cells = _sheet_cells(data)
    strings = {html.unescape(s) for s in shared}
    for p in PAYLOADS:
        assert p.replace("\u2028", "_x2028_").replace("\u2029", "_x2029_") in strings or (
            p in strings
        ), p
    assert "=1+1" in strings
    numbers = [float(v) for t, v in cells if t == ""]
    assert -3.0 in numbers  # numbers stay numbers


def test_exported_xlsx_has_no_formulas(hostile_run):
    home, _ = hostile_run
    books = list(home.rglob("*.xlsx"))
    assert books
    for b in books:
        _sheet_cells(b.read_bytes())


# ------------------------------------------------------------------------------ HTML map


class _Scripts(HTMLParser):
    """Every <script> of a page: (type attribute, text)."""

    def __init__(self):
        super().__init__()
        self.scripts: list[tuple[str | None, str, str | None]] = []
        self._open: tuple[str | None, str | None] | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            a = dict(attrs)
            self._open, self._buf = (a.get("type"), a.get("id")), []

    def handle_data(self, data):
        if self._open is not None:
            self._buf.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._open is not None:
            self.scripts.append((self._open[0], "".join(self._buf), self._open[1]))
            self._open = None


def _maps(home: Path) -> list[Path]:
    return sorted(home.rglob("need_map.html"))


def check_map_is_inert(text: str) -> dict:
    """The page's executable scripts hold no payload; returns the parsed JSON data block."""
    parser = _Scripts()
    parser.feed(text)
    parser.close()
    executable = [s for t, s, _ in parser.scripts if t in (None, "", "text/javascript")]
    assert executable
    for s in executable:
        assert "PWNED" not in s
    blocks = [s for t, s, i in parser.scripts if t == "application/json" and i == "phm-map-data"]
    assert len(blocks) == 1
    assert not re.search(r"[<>&\u2028\u2029]", blocks[0])
    # nothing was evaluated as a Jinja template on the way ({{ 6*7 }} would be 42)
    assert "42 PWNED12" not in text and "PWNED12 x" not in text
    # every payload outside the data block is HTML text (no raw markup from a name)
    outside = text.replace(blocks[0], "")
    for p in PAYLOADS:
        for piece in ("<img", "</script><script>", "<!-- PWNED"):
            if piece in p:
                assert p not in outside
    return json.loads(blocks[0])


def test_need_map_keeps_names_as_data(hostile_run):
    home, names = hostile_run
    maps = _maps(home)
    assert maps
    seen_practices, seen_assets = set(), set()
    for path in maps:
        data = check_map_is_inert(path.read_text(encoding="utf-8"))
        tips = [t for _, t in data["markers"]]
        # (delivery reading trims surrounding white space, so the tab payload loses its tab)
        for n in names["practice"]:
            if any(t.split(" ", 1)[1].startswith(n.strip() + " — ") for t in tips):
                seen_practices.add(n)
        for n in names["asset"]:
            if any(t.startswith(n.strip() + " (") for t in tips):
                seen_assets.add(n)
        assert data["areas"]["layers"] and data["areas"]["rows"]
        assert len(data["areas"]["labels"]) == len(data["areas"]["rows"][0])
    # the exact names came back from the JSON block, payloads and all
    assert seen_practices == set(names["practice"])
    assert seen_assets == set(names["asset"])


def test_static_maps_draw_dollar_names(hostile_run):
    home, _ = hostile_run
    pngs = [p for p in home.rglob("*.png") if p.parent.name == "maps"]
    assert any(p.name == "assets_over_need.png" for p in pngs)


# ------------------------------------------------------------------------------ browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_map_runs_nothing_in_a_browser(hostile_run, tmp_path):
    """Chromium loads the map; the DOM after scripts ran has the map, the tooltip text as
    text, no element or title set by a payload."""
    home, _ = hostile_run
    page = _maps(home)[0]
    # open every marker's tooltip once the page is loaded, so the names are put in the DOM
    text = page.read_text(encoding="utf-8")
    probe = (
        "<script>window.addEventListener('load', function () {"
        "document.querySelectorAll('.leaflet-interactive').forEach(function (el) {"
        "el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
        "});"
        "Object.keys(window).filter(function (k) { return /^(marker|circle_marker)_/.test(k); })"
        ".forEach(function (k) { window[k].openTooltip(); });"
        "document.body.setAttribute('data-probe', 'done');"
        "});</script>"
    )
    probed = tmp_path / "probe.html"
    probed.write_text(text.replace("</html>", probe + "</html>"), encoding="utf-8")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probed.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True).stdout
    assert 'data-probe="done"' in dom  # the page's scripts ran to the end
    assert "leaflet-container" in dom and "leaflet-tooltip" in dom
    assert "<pwned" not in dom.lower()
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title is None or "PWNED" not in title.group(1)
    # the tooltips hold the names as text: the serialised DOM escapes their markup
    assert "&lt;img src=x onerror=" in dom
    assert "${document.title='PWNED1'}" in dom
