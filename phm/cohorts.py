"""Cohorts defined as data: one YAML file per cohort, compiled to one DuckDB query.

A cohort file (``data/cohorts/<id>.yaml``) says who is in the cohort and why::

    id: frailty
    title: Frailty (65 and over)
    description: ...
    source: the published or local rule it follows
    criteria:                      # a tree of all / any / not over rules
      all:
        - measure: age             # a column of marts.patient_measures
          op: ">="                 # = != > >= < <= between in not_in is_true is_false
          value: 65
          reason: "age {age}"      # words for the care coordinator; {column} placeholders
        - event: ppn_received      # an event from data/cohorts/_events.yaml
          within_days: 365         # the N days ending on the extract date, inclusive
          min_count: 1             # default 1
          reason: "{count} PPN(s) in the last 12 months, latest {latest_date}"
    sort: [efi_score desc]         # most in need first
    columns: [efi_score, efi_category]   # cohort-specific columns for the exports

Each member row carries ``reasons``: the reasons of every rule the member met, joined with
"; ". The whole tree compiles to SQL (no per-patient Python). A malformed file raises
:class:`CohortDefinitionError` naming the file and the field.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from phm.paths import DATA_DIR

COHORT_DIR = DATA_DIR / "cohorts"
EVENTS_FILE = "_events.yaml"
PATIENTS = "marts.patient_measures"
#: what rules read: the patient measures, plus risk scores and segments once they exist
POPULATION = "cohort_population"
MEMBERS = "marts.cohort_members"
DEFINITIONS = "marts.cohort_definitions"

_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_OPS = {
    "=": "=",
    "!=": "<>",
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "between": None,
    "in": None,
    "not_in": None,
    "is_true": None,
    "is_false": None,
}
_EVENT_FIELDS = {"count", "latest_date", "days_ago"}


class CohortDefinitionError(ValueError):
    def __init__(self, path: Path | str, field_path: str, problem: str):
        self.path, self.field_path, self.problem = Path(path), field_path, problem
        super().__init__(f"{path}: {field_path}: {problem}")


@dataclass(frozen=True)
class EventDef:
    name: str
    description: str
    table: str
    date: str
    where: str | None = None
    codelists: tuple[str, ...] = ()


@dataclass
class Rule:
    """A leaf (measure or event) or a combinator (all / any / not)."""

    kind: str  # measure | event | all | any | not
    where: str  # field path in the file, for messages
    measure: str | None = None
    op: str | None = None
    value: Any = None
    event: str | None = None
    within_days: int | None = None
    min_count: int = 1
    reason: str | None = None
    children: list[Rule] = field(default_factory=list)


@dataclass
class Cohort:
    id: str
    title: str
    description: str
    source: str
    criteria: Rule
    sort: list[tuple[str, str]]
    columns: list[str]
    path: Path


def _need(d: dict, key: str, path: Path, where: str, kind: type | tuple = str):
    if key not in d or d[key] is None:
        raise CohortDefinitionError(path, f"{where}{key}", "is required")
    value = d[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CohortDefinitionError(path, f"{where}{key}", f"must be {names}, got {value!r}")
    return value


def load_events(directory: Path = COHORT_DIR) -> dict[str, EventDef]:
    path = Path(directory) / EVENTS_FILE
    if not path.is_file():
        raise CohortDefinitionError(path, "(file)", "the event catalogue is missing")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    events = {}
    for name, spec in (raw.get("events") or {}).items():
        where = f"events.{name}."
        if not isinstance(spec, dict):
            raise CohortDefinitionError(path, f"events.{name}", "must be a mapping")
        events[name] = EventDef(
            name=name,
            description=_need(spec, "description", path, where),
            table=_need(spec, "table", path, where),
            date=_need(spec, "date", path, where),
            where=spec.get("where"),
            codelists=tuple(spec.get("codelists") or ()),
        )
    return events


def _parse_rule(node: Any, path: Path, where: str, events: dict[str, EventDef]) -> Rule:
    if not isinstance(node, dict):
        raise CohortDefinitionError(path, where, f"must be a mapping, got {node!r}")
    combinators = [k for k in ("all", "any", "not") if k in node]
    leaves = [k for k in ("measure", "event") if k in node]
    if len(combinators) + len(leaves) != 1:
        raise CohortDefinitionError(
            path, where, "needs exactly one of all, any, not, measure or event"
        )
    reason = node.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise CohortDefinitionError(path, f"{where}.reason", "must be text")
    if combinators:
        kind = combinators[0]
        body = node[kind]
        if kind == "not":
            child = _parse_rule(body, path, f"{where}.not", events)
            if reason is None:
                raise CohortDefinitionError(path, f"{where}.reason", "is required on a 'not' rule")
            return Rule("not", where, reason=reason, children=[child])
        if not isinstance(body, list) or not body:
            raise CohortDefinitionError(path, f"{where}.{kind}", "must be a non-empty list")
        children = [
            _parse_rule(c, path, f"{where}.{kind}[{i}]", events) for i, c in enumerate(body)
        ]
        return Rule(kind, where, reason=reason, children=children)
    if "measure" in node:
        measure = _need(node, "measure", path, f"{where}.")
        op = node.get("op")
        if op not in _OPS:
            raise CohortDefinitionError(
                path, f"{where}.op", f"unknown operator {op!r} (allowed: {', '.join(_OPS)})"
            )
        value = node.get("value")
        if op in ("is_true", "is_false"):
            if value is not None:
                raise CohortDefinitionError(path, f"{where}.value", f"takes no value with {op}")
        elif op == "between":
            if not (isinstance(value, list) and len(value) == 2):
                raise CohortDefinitionError(path, f"{where}.value", "between needs [low, high]")
        elif op in ("in", "not_in"):
            if not (isinstance(value, list) and value):
                raise CohortDefinitionError(path, f"{where}.value", f"{op} needs a list")
        elif value is None or isinstance(value, (list, dict)):
            raise CohortDefinitionError(path, f"{where}.value", f"{op} needs one value")
        return Rule("measure", where, measure=measure, op=op, value=value, reason=reason)
    name = _need(node, "event", path, f"{where}.")
    if name not in events:
        raise CohortDefinitionError(
            path, f"{where}.event", f"unknown event {name!r} (known: {', '.join(sorted(events))})"
        )
    within = node.get("within_days")
    if within is not None and (not isinstance(within, int) or within < 1):
        raise CohortDefinitionError(path, f"{where}.within_days", "must be a whole number >= 1")
    min_count = node.get("min_count", 1)
    if not isinstance(min_count, int) or min_count < 1:
        raise CohortDefinitionError(path, f"{where}.min_count", "must be a whole number >= 1")
    return Rule("event", where, event=name, within_days=within, min_count=min_count, reason=reason)


def load_cohort(path: Path, events: dict[str, EventDef]) -> Cohort:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CohortDefinitionError(path, "(file)", f"is not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise CohortDefinitionError(path, "(file)", "must be a mapping of fields")
    known = {"id", "title", "description", "source", "criteria", "sort", "columns"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CohortDefinitionError(path, unknown[0], f"unknown field (allowed: {sorted(known)})")
    cid = _need(raw, "id", path, "")
    if not _ID.match(cid):
        raise CohortDefinitionError(path, "id", "must be lower_snake_case")
    if cid != path.stem:
        raise CohortDefinitionError(path, "id", f"{cid!r} must match the file name {path.stem!r}")
    sort = []
    for i, item in enumerate(raw.get("sort") or []):
        parts = str(item).split()
        if len(parts) not in (1, 2) or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
            raise CohortDefinitionError(path, f"sort[{i}]", "must be '<column> [asc|desc]'")
        sort.append((parts[0], parts[1] if len(parts) == 2 else "asc"))
    columns = raw.get("columns") or []
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise CohortDefinitionError(path, "columns", "must be a list of column names")
    return Cohort(
        id=cid,
        title=_need(raw, "title", path, ""),
        description=" ".join(_need(raw, "description", path, "").split()),
        source=" ".join(_need(raw, "source", path, "").split()),
        criteria=_parse_rule(_need(raw, "criteria", path, "", dict), path, "criteria", events),
        sort=sort,
        columns=columns,
        path=path,
    )


def load_cohorts(directory: Path = COHORT_DIR) -> list[Cohort]:
    """Every ``*.yaml`` cohort in ``directory`` (files starting with ``_`` are not cohorts)."""
    directory = Path(directory)
    events = load_events(directory)
    cohorts = [
        load_cohort(p, events)
        for p in sorted(directory.glob("*.yaml"))
        if not p.name.startswith("_")
    ]
    if not cohorts:
        raise CohortDefinitionError(directory, "(folder)", "holds no cohort definitions")
    return cohorts


# ---------------------------------------------------------------- compilation


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class _Compiler:
    def __init__(self, cohort: Cohort, columns: set[str], events: dict[str, EventDef], ed: dt.date):
        self.cohort, self.columns, self.events, self.ed = cohort, columns, events, ed
        self.ctes: list[str] = []
        self.joins: list[str] = []
        self.reasons: list[str] = []

    def column(self, name: str, where: str) -> str:
        if name not in self.columns:
            raise CohortDefinitionError(
                self.cohort.path,
                where,
                f"unknown measure {name!r} (not a column of {PATIENTS} or its risk/segment tables)",
            )
        return f"pm.{name}"

    def template(self, text: str, where: str, event_alias: str | None = None) -> str:
        parts, pos = [], 0
        for m in _PLACEHOLDER.finditer(text):
            if m.start() > pos:
                parts.append(_literal(text[pos : m.start()]))
            name = m.group(1)
            if event_alias and name in _EVENT_FIELDS:
                expr = {
                    "count": f"{event_alias}.n",
                    "latest_date": f"strftime({event_alias}.latest, '%Y-%m-%d')",
                    "days_ago": f"(DATE '{self.ed}' - {event_alias}.latest)",
                }[name]
            else:
                expr = self.column(name, f"{where}.reason")
                if name.endswith("_score"):
                    expr = f"round({expr}, 2)"
            parts.append(f"coalesce(CAST({expr} AS VARCHAR), 'unknown')")
            pos = m.end()
        if pos < len(text):
            parts.append(_literal(text[pos:]))
        return " || ".join(parts) if parts else "''"

    def event_source(self, rule: Rule) -> str:
        ev = self.events[rule.event]
        alias = f"ev{len(self.ctes)}"
        date = f"CAST({ev.date} AS DATE)"
        conds = [f"{date} <= DATE '{self.ed}'"]
        if rule.within_days:
            start = self.ed - dt.timedelta(days=rule.within_days - 1)
            conds.append(f"{date} >= DATE '{start}'")
        if ev.where:
            conds.append(f"({ev.where})")
        if ev.codelists:
            lists = ", ".join(_literal(c) for c in ev.codelists)
            conds.append(
                "snomed_code IN (SELECT code FROM reference.codelists "
                f"WHERE codelist_id IN ({lists}))"
            )
        self.ctes.append(
            f"""{alias} AS (
                SELECT i.person_id, count(*) AS n, max({date}) AS latest
                FROM {ev.table} e JOIN marts.person_identity i USING (nhs_number)
                WHERE {" AND ".join(conds)}
                GROUP BY i.person_id)"""
        )
        self.joins.append(f"LEFT JOIN {alias} USING (person_id)")
        return alias

    def condition(self, rule: Rule) -> str:
        if rule.kind == "measure":
            col = self.column(rule.measure, f"{rule.where}.measure")
            op = rule.op
            if op == "between":
                lo, hi = rule.value
                cond = f"{col} BETWEEN {_literal(lo)} AND {_literal(hi)}"
            elif op in ("in", "not_in"):
                values = ", ".join(_literal(v) for v in rule.value)
                cond = f"{col} {'NOT IN' if op == 'not_in' else 'IN'} ({values})"
            elif op == "is_true":
                cond = f"{col} IS TRUE"
            elif op == "is_false":
                cond = f"{col} IS NOT TRUE"
            else:
                cond = f"{col} {_OPS[op]} {_literal(rule.value)}"
            cond = f"coalesce({cond}, FALSE)"
            if rule.reason:
                self.reasons.append(
                    f"CASE WHEN {cond} THEN {self.template(rule.reason, rule.where)} END"
                )
            return cond
        if rule.kind == "event":
            alias = self.event_source(rule)
            cond = f"coalesce({alias}.n, 0) >= {rule.min_count}"
            if rule.reason:
                self.reasons.append(
                    f"CASE WHEN {cond} THEN {self.template(rule.reason, rule.where, alias)} END"
                )
            return cond
        if rule.kind == "not":
            n_reasons = len(self.reasons)
            inner = self.condition(rule.children[0])
            del self.reasons[n_reasons:]  # reasons of a negated rule are not reasons
            cond = f"NOT ({inner})"
            self.reasons.append(
                f"CASE WHEN {cond} THEN {self.template(rule.reason, rule.where)} END"
            )
            return cond
        joiner = " AND " if rule.kind == "all" else " OR "
        n_reasons = len(self.reasons)
        cond = "(" + joiner.join(self.condition(c) for c in rule.children) + ")"
        if rule.reason:
            self.reasons.insert(
                n_reasons, f"CASE WHEN {cond} THEN {self.template(rule.reason, rule.where)} END"
            )
        return cond

    def order_by(self) -> str:
        terms = []
        for i, (col, direction) in enumerate(self.cohort.sort):
            terms.append(f"{self.column(col, f'sort[{i}]')} {direction.upper()} NULLS LAST")
        return ", ".join([*terms, "pm.person_id"])


def compile_cohort(
    cohort: Cohort, columns: set[str], events: dict[str, EventDef], extract_date: dt.date
) -> str:
    """The SELECT that lists the cohort's members with reasons and rank."""
    c = _Compiler(cohort, columns, events, extract_date)
    for i, col in enumerate(cohort.columns):
        c.column(col, f"columns[{i}]")
    cond = c.condition(cohort.criteria)
    with_clause = ("WITH " + ",\n".join(c.ctes)) if c.ctes else ""
    reasons = "concat_ws('; ', " + ", ".join(c.reasons) + ")" if c.reasons else "''"
    return f"""{with_clause}
        SELECT {_literal(cohort.id)} AS cohort_id, pm.person_id,
               CAST(row_number() OVER (ORDER BY {c.order_by()}) AS INTEGER) AS rank,
               {reasons} AS reasons
        FROM {POPULATION} pm {" ".join(c.joins)}
        WHERE {cond}"""


def _population_view(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Create the temporary view the rules read; returns its columns."""
    from phm.warehouse import table_exists

    if not table_exists(con, PATIENTS):
        raise LookupError(f"{PATIENTS} does not exist: build the patient measures first")
    select, joins = ["pm.*"], []
    if table_exists(con, "marts.risk_scores"):
        select.append("r.risk_score, r.risk_tier, r.risk_factors")
        joins.append("LEFT JOIN marts.risk_scores r USING (person_id)")
    if table_exists(con, "marts.segments"):
        select.append("s.segment")
        joins.append("LEFT JOIN marts.segments s USING (person_id)")
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {POPULATION} AS SELECT {', '.join(select)} "
        f"FROM {PATIENTS} pm {' '.join(joins)}"
    )
    return {d[0] for d in con.execute(f"SELECT * FROM {POPULATION} LIMIT 0").description}


def build_cohorts(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    directory: Path = COHORT_DIR,
) -> dict[str, int]:
    """Create ``marts.cohort_members`` (cohort_id, person_id, rank, reasons) and
    ``marts.cohort_definitions`` for every cohort file. Returns members per cohort."""
    events = load_events(directory)
    cohorts = load_cohorts(directory)
    columns = _population_view(con)
    selects = [compile_cohort(c, columns, events, extract_date) for c in cohorts]
    con.execute(
        f"CREATE OR REPLACE TABLE {MEMBERS} AS "
        + " UNION ALL ".join(f"SELECT * FROM ({s})" for s in selects)
        + " ORDER BY cohort_id, rank"
    )
    con.execute(
        f"""CREATE OR REPLACE TABLE {DEFINITIONS} (
            cohort_id VARCHAR, title VARCHAR, description VARCHAR, source VARCHAR,
            file VARCHAR, sort VARCHAR, columns VARCHAR)"""
    )
    con.executemany(
        f"INSERT INTO {DEFINITIONS} VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                c.id,
                c.title,
                c.description,
                c.source,
                c.path.name,
                ", ".join(f"{col} {d}" for col, d in c.sort),
                ",".join(c.columns),
            )
            for c in cohorts
        ],
    )
    counts = dict(
        con.execute(f"SELECT cohort_id, count(*) FROM {MEMBERS} GROUP BY cohort_id").fetchall()
    )
    return {c.id: counts.get(c.id, 0) for c in cohorts}
