"""Bridges to Health segments (Lynn et al., Milbank Q 2007;85:185-208), rule-based, one per person.

The segments, their rules, citations and priority order are data:
``data/definitions/bridges_to_health.yaml``. :func:`assign_segments` builds
``marts.segments(person_id, segment, segment_reason)`` for every patient in
``marts.patient_measures``: segments are tried in the listed order and the first with a
matching rule wins; the last segment's rule is always true, so every patient gets exactly
one segment. ``segment_reason`` lists every rule of the winning segment the patient meets.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml

from phm.measures import load_efi_definition, load_ltc_conditions
from phm.measures._sql import date_literal, require_tables, window_start
from phm.paths import DATA_DIR
from phm.warehouse import current_extract_date

BRIDGES_PATH = DATA_DIR / "definitions" / "bridges_to_health.yaml"
SEGMENTS_TABLE = "marts.segments"

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r"'(?:[^']|'')*'")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
#: words a rule may use besides input column names
_SQL_WORDS = {
    "and",
    "or",
    "not",
    "in",
    "is",
    "null",
    "true",
    "false",
    "between",
    "like",
    "coalesce",
    "abs",
    "least",
    "greatest",
}
_FORBIDDEN = (";", "--", "/*")


class BridgesDefinitionError(Exception):
    """bridges_to_health.yaml is missing, malformed or refers to an unknown input."""


@dataclass(frozen=True)
class Rule:
    id: str
    when: str
    reason: str
    citation: str


@dataclass(frozen=True)
class Segment:
    id: str
    name: str
    lynn_2007: str
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class BridgesDefinition:
    segments: tuple[Segment, ...]
    palliative_codelist: str
    maternity_methods: tuple[str, ...]
    source: tuple[str, ...]
    priority_rule: str

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]


def _need(d: dict, key: str, where: str) -> Any:
    if not isinstance(d, dict) or d.get(key) in (None, ""):
        raise BridgesDefinitionError(f"{where}: missing {key!r}")
    return d[key]


def load_bridges_definition(path: Path | None = None) -> BridgesDefinition:
    """Read and check ``bridges_to_health.yaml`` (structure, ids, catch-all last segment)."""
    path = Path(path) if path is not None else BRIDGES_PATH
    if not path.is_file():
        raise BridgesDefinitionError(f"definition file not found: {path}")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise BridgesDefinitionError(f"{path}: expected a mapping at the top level")
    inputs = _need(data, "inputs", str(path))
    pal = _need(_need(inputs, "has_palliative_care_code", f"{path}: inputs"), "codelist", str(path))
    mat = _need(
        _need(inputs, "maternity_spells_12m", f"{path}: inputs"), "admission_methods", str(path)
    )
    segments: list[Segment] = []
    seen_seg: set[str] = set()
    seen_names: set[str] = set()
    for i, s in enumerate(_need(data, "segments", str(path))):
        where = f"{path}: segment #{i + 1} ({s.get('id', '?') if isinstance(s, dict) else '?'})"
        sid = str(_need(s, "id", where))
        if not _IDENT.match(sid) or sid in seen_seg:
            raise BridgesDefinitionError(f"{where}: id must be unique and match {_IDENT.pattern}")
        seen_seg.add(sid)
        name = str(_need(s, "name", where))
        if name in seen_names:
            raise BridgesDefinitionError(f"{where}: duplicate name {name!r}")
        seen_names.add(name)
        rules: list[Rule] = []
        seen_rules: set[str] = set()
        for j, r in enumerate(_need(s, "rules", where)):
            rwhere = f"{where}, rule #{j + 1}"
            rid = str(_need(r, "id", rwhere))
            if not _IDENT.match(rid) or rid in seen_rules:
                raise BridgesDefinitionError(
                    f"{rwhere}: id must be unique and match {_IDENT.pattern}"
                )
            seen_rules.add(rid)
            when = " ".join(str(_need(r, "when", rwhere)).split())
            if any(x in when for x in _FORBIDDEN):
                raise BridgesDefinitionError(f"{rwhere}: 'when' must be one boolean expression")
            rules.append(
                Rule(
                    id=rid,
                    when=when,
                    reason=" ".join(str(_need(r, "reason", rwhere)).split()),
                    citation=" ".join(str(_need(r, "citation", rwhere)).split()),
                )
            )
        segments.append(
            Segment(
                id=sid, name=name, lynn_2007=str(s.get("lynn_2007") or name), rules=tuple(rules)
            )
        )
    if len(segments) < 2:
        raise BridgesDefinitionError(f"{path}: needs at least two segments")
    last = segments[-1]
    if not any(r.when.strip().lower() == "true" for r in last.rules):
        raise BridgesDefinitionError(
            f"{path}: the last segment ({last.id}) must have a rule `when: true` so that every "
            "patient is in exactly one segment"
        )
    return BridgesDefinition(
        segments=tuple(segments),
        palliative_codelist=str(pal),
        maternity_methods=tuple(str(m) for m in mat),
        source=tuple(" ".join(str(x).split()) for x in data.get("source") or ()),
        priority_rule=" ".join(str(data.get("priority_rule") or "").split()),
    )


def segment_names(definition: BridgesDefinition | None = None) -> list[str]:
    """Segment names in priority order (the order reports list them in)."""
    return (definition or load_bridges_definition()).names


def _build_inputs(
    con: duckdb.DuckDBPyConnection, extract_date: dt.date, definition: BridgesDefinition
) -> list[str]:
    """Create the temp table ``_segment_inputs``; returns its column names."""
    efi = load_efi_definition()
    ed = date_literal(extract_date)
    w0 = window_start(extract_date, 365)
    methods = ", ".join(f"'{m}'" for m in definition.maternity_methods)
    deficit_cols = ", ".join(
        f"coalesce(list_contains(string_split(pm.efi_deficits, ';'), '{d.id}'), false) "
        f"AS efi_has_{d.id}"
        for d in efi.all_deficits
    )
    names = ", ".join(
        f"CASE WHEN pm.has_{c.id} THEN {_sql_text(c.name)} END" for c in load_ltc_conditions()
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _segment_inputs AS
        WITH pal AS (
            SELECT DISTINCT i.person_id
            FROM staging.gp_events e
            JOIN reference.codelists c ON c.code = e.snomed_code AND c.codelist_id = ?
            JOIN marts.person_identity i USING (nhs_number)
            WHERE e.event_date <= {ed}
        ),
        mat AS (
            SELECT i.person_id, count(*) AS n
            FROM staging.sus_apc a JOIN marts.person_identity i USING (nhs_number)
            WHERE a.admission_method IN ({methods}) AND a.admission_date BETWEEN {w0} AND {ed}
            GROUP BY i.person_id
        )
        SELECT pm.*,
               pal.person_id IS NOT NULL AS has_palliative_care_code,
               CAST(coalesce(mat.n, 0) AS INTEGER) AS maternity_spells_12m,
               concat_ws(', ', {names}) AS ltc_list,
               {deficit_cols}
        FROM marts.patient_measures pm
        LEFT JOIN pal USING (person_id)
        LEFT JOIN mat USING (person_id)
        """,
        [definition.palliative_codelist],
    )
    return [r[0] for r in con.execute("DESCRIBE _segment_inputs").fetchall()]


def _check_rule_columns(definition: BridgesDefinition, columns: list[str]) -> None:
    known = {c.lower() for c in columns}
    for s in definition.segments:
        for r in s.rules:
            words = {w.lower() for w in _TOKEN.findall(_STRING.sub("''", r.when))}
            unknown = sorted(w for w in words if w not in known and w not in _SQL_WORDS)
            if unknown:
                raise BridgesDefinitionError(
                    f"segment {s.id}, rule {r.id}: unknown input(s) {', '.join(unknown)} in "
                    f"`{r.when}`"
                )
            for col in _PLACEHOLDER.findall(r.reason):
                if col not in known:
                    raise BridgesDefinitionError(
                        f"segment {s.id}, rule {r.id}: reason refers to unknown column {{{col}}}"
                    )


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _reason_sql(reason: str) -> str:
    """A reason template as a SQL string expression ({col} -> the column's value)."""
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(reason):
        if m.start() > pos:
            parts.append(_sql_text(reason[pos : m.start()]))
        parts.append(f"coalesce(CAST({m.group(1)} AS VARCHAR), 'unknown')")
        pos = m.end()
    if pos < len(reason):
        parts.append(_sql_text(reason[pos:]))
    return " || ".join(parts) if parts else "''"


def assign_segments(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date | None = None,
    *,
    definition: BridgesDefinition | None = None,
) -> int:
    """Create ``marts.segments(person_id, segment, segment_reason)``; returns its row count.

    ``extract_date`` defaults to the delivery's (``raw._delivery``). Reads
    ``marts.patient_measures``, ``marts.person_identity``, ``staging.gp_events``,
    ``staging.sus_apc`` and ``reference.codelists``.
    """
    require_tables(
        con,
        "marts.patient_measures",
        "marts.person_identity",
        "staging.gp_events",
        "staging.sus_apc",
        "reference.codelists",
    )
    definition = definition or load_bridges_definition()
    extract_date = extract_date or current_extract_date(con)
    columns = _build_inputs(con, extract_date, definition)
    _check_rule_columns(definition, columns)

    matches = []
    for s in definition.segments:
        matches.append(f"coalesce({' OR '.join(f'({r.when})' for r in s.rules)}, false)")
    segment_case = " ".join(
        f"WHEN {m} THEN {_sql_text(s.name)}"
        for m, s in zip(matches, definition.segments, strict=True)
    )
    reason_case = " ".join(
        f"WHEN {m} THEN concat_ws('; ', "
        + ", ".join(
            f"CASE WHEN coalesce(({r.when}), false) THEN {_reason_sql(r.reason)} END"
            for r in s.rules
        )
        + ")"
        for m, s in zip(matches, definition.segments, strict=True)
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE {SEGMENTS_TABLE} AS
        SELECT person_id,
               CASE {segment_case} END AS segment,
               CASE {reason_case} END AS segment_reason
        FROM _segment_inputs
        ORDER BY person_id
        """
    )
    con.execute("DROP TABLE IF EXISTS _segment_inputs")
    bad = con.execute(f"SELECT count(*) FROM {SEGMENTS_TABLE} WHERE segment IS NULL").fetchone()[0]
    if bad:
        raise BridgesDefinitionError(f"{bad} patient(s) matched no segment")
    return con.execute(f"SELECT count(*) FROM {SEGMENTS_TABLE}").fetchone()[0]
