"""Bridges to Health segments (Lynn et al., Milbank Q 2007;85:185-208), rule-based, one per person.

The segments, their rules, citations and priority order are data:
``data/definitions/bridges_to_health.yaml``, whose rules are written in the rule language
of the cohorts (:mod:`phm.definitions`). :func:`assign_segments` builds
``marts.segments(person_id, segment, segment_reason)`` for every patient in
``marts.patient_measures``: segments are tried in the listed order and the first with a
matching rule wins; the last segment has an ``everyone: true`` rule, so every patient gets
exactly one segment. ``segment_reason`` lists every rule of the winning segment the patient
meets.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb

from phm.definitions import (
    EVENTS_PATH,
    DefinitionError,
    EventDef,
    Rule,
    RuleCompiler,
    literal,
    load_events,
    need,
    need_id,
    parse_rule,
    read_yaml,
    table_columns_of,
    text,
)
from phm.measures._sql import require_tables
from phm.paths import DATA_DIR
from phm.warehouse import current_extract_date

BRIDGES_PATH = DATA_DIR / "definitions" / "bridges_to_health.yaml"
SEGMENTS_TABLE = "marts.segments"
PATIENTS = "marts.patient_measures"

#: a malformed Bridges definition (the definitions layer's error: file, field path, problem)
BridgesDefinitionError = DefinitionError


@dataclass(frozen=True)
class SegmentRule:
    """One cited rule of a segment: its criteria (a rule tree whose top carries the reason)."""

    id: str
    criteria: Rule
    reason: str
    citation: str


@dataclass(frozen=True)
class Segment:
    id: str
    name: str
    lynn_2007: str
    rules: tuple[SegmentRule, ...]


@dataclass(frozen=True)
class BridgesDefinition:
    segments: tuple[Segment, ...]
    source: tuple[str, ...]
    priority_rule: str
    path: Path
    #: the event catalogue the rules were checked against
    events: dict[str, EventDef]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]


def load_bridges_definition(
    path: Path | None = None, events_path: Path = EVENTS_PATH
) -> BridgesDefinition:
    """Read and check ``bridges_to_health.yaml`` (structure, ids, rules, catch-all last)."""
    path = Path(path) if path is not None else BRIDGES_PATH
    data = read_yaml(path)
    events = load_events(events_path)
    segments: list[Segment] = []
    seen_seg: set[str] = set()
    seen_names: set[str] = set()
    raw_segments = need(data, "segments", path, "", list)
    for i, s in enumerate(raw_segments):
        where = f"segments[{i}]"
        sid = need_id(s, "id", path, where)
        if sid in seen_seg:
            raise DefinitionError(path, f"{where}.id", f"duplicate segment id {sid!r}")
        seen_seg.add(sid)
        name = text(need(s, "name", path, where, str))
        if name in seen_names:
            raise DefinitionError(path, f"{where}.name", f"duplicate name {name!r}")
        seen_names.add(name)
        rules: list[SegmentRule] = []
        seen_rules: set[str] = set()
        for j, r in enumerate(need(s, "rules", path, where, list)):
            rwhere = f"{where}.rules[{j}]"
            if isinstance(r, dict) and "when" in r:
                raise DefinitionError(
                    path, f"{rwhere}.when", "SQL text is not accepted: write the rule as a tree"
                )
            rid = need_id(r, "id", path, rwhere)
            if rid in seen_rules:
                raise DefinitionError(path, f"{rwhere}.id", f"duplicate rule id {rid!r}")
            seen_rules.add(rid)
            citation = text(need(r, "citation", path, rwhere, str))
            reason = text(need(r, "reason", path, rwhere, str))
            body = {k: v for k, v in r.items() if k not in ("id", "citation")}
            rules.append(
                SegmentRule(rid, parse_rule(body, path, rwhere, events=events), reason, citation)
            )
        segments.append(Segment(sid, name, text(s.get("lynn_2007") or name), tuple(rules)))
    if len(segments) < 2:
        raise DefinitionError(path, "segments", "needs at least two segments")
    last = segments[-1]
    if not any(r.criteria.kind == "everyone" for r in last.rules):
        raise DefinitionError(
            path,
            f"segments[{len(segments) - 1}].rules",
            f"the last segment ({last.id}) needs a rule `everyone: true` so that every "
            "patient is in exactly one segment",
        )
    return BridgesDefinition(
        segments=tuple(segments),
        source=tuple(text(x) for x in data.get("source") or ()),
        priority_rule=text(data.get("priority_rule") or ""),
        path=path,
        events=events,
    )


def segment_names(definition: BridgesDefinition | None = None) -> list[str]:
    """Segment names in priority order (the order reports list them in)."""
    return (definition or load_bridges_definition()).names


def segments_sql(
    con: duckdb.DuckDBPyConnection, extract_date: dt.date, definition: BridgesDefinition
) -> str:
    """The SELECT of ``(person_id, segment, segment_reason)`` for every patient."""
    columns = {r[0] for r in con.execute(f"DESCRIBE {PATIENTS}").fetchall()}
    c = RuleCompiler(
        columns,
        population=PATIENTS,
        events=definition.events,
        extract_date=extract_date,
        table_columns=table_columns_of(con),
    )
    segment_case, reason_case = [], []
    for s in definition.segments:
        conds = []
        start = len(c.reasons)
        for r in s.rules:
            conds.append(c.condition(r.criteria))
        match = "(" + " OR ".join(conds) + ")"
        reasons = c.reasons[start:]
        segment_case.append(f"WHEN {match} THEN {literal(s.name)}")
        reason_case.append(f"WHEN {match} THEN {c.reasons_sql(reasons)}")
    return f"""{c.with_clause()}
        SELECT pm.person_id,
               CASE {" ".join(segment_case)} END AS segment,
               CASE {" ".join(reason_case)} END AS segment_reason
        FROM {PATIENTS} pm {c.join_clause()}
        ORDER BY pm.person_id"""


def assign_segments(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date | None = None,
    *,
    definition: BridgesDefinition | None = None,
) -> int:
    """Create ``marts.segments(person_id, segment, segment_reason)``; returns its row count.

    ``extract_date`` defaults to the delivery's (``raw._delivery``). Reads
    ``marts.patient_measures``, ``marts.person_identity`` and the tables of the events the
    rules use (``staging.gp_events``, ``staging.sus_apc``, ``reference.codelists``).
    """
    require_tables(
        con,
        PATIENTS,
        "marts.person_identity",
        "staging.gp_events",
        "staging.sus_apc",
        "reference.codelists",
    )
    definition = definition or load_bridges_definition()
    extract_date = extract_date or current_extract_date(con)
    con.execute(
        f"CREATE OR REPLACE TABLE {SEGMENTS_TABLE} AS {segments_sql(con, extract_date, definition)}"
    )
    bad = con.execute(f"SELECT count(*) FROM {SEGMENTS_TABLE} WHERE segment IS NULL").fetchone()[0]
    if bad:
        raise RuntimeError(f"{bad} patient(s) matched no segment")
    return con.execute(f"SELECT count(*) FROM {SEGMENTS_TABLE}").fetchone()[0]
