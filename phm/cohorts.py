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
        - event: ppn_received      # an event from data/definitions/events.yaml
          within_days: 365         # the N days ending on the extract date, inclusive
          min_count: 1             # default 1
          reason: "{count} PPN(s) in the last 12 months, latest {latest_date}"
    sort: [efi_score desc]         # most in need first
    columns: [efi_score, efi_category]   # cohort-specific columns for the exports

Each member row carries ``reasons``: the reasons of every rule the member met, joined with
"; ". The rule language, its loader and its compiler are the definitions layer
(:mod:`phm.definitions`), shared with the Bridges to Health segments and the geography's
prevalences. The whole tree compiles to SQL (no per-patient Python). A malformed file raises
:class:`phm.definitions.DefinitionError` (alias :data:`CohortDefinitionError`) naming the
file and the field.
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
from phm.definitions.compiler import date_sql
from phm.paths import DATA_DIR

COHORT_DIR = DATA_DIR / "cohorts"
PATIENTS = "marts.patient_measures"
#: what rules read: the patient measures, plus risk scores and segments once they exist
POPULATION = "cohort_population"
MEMBERS = "marts.cohort_members"
DEFINITIONS = "marts.cohort_definitions"

#: a malformed cohort file (the definitions layer's error: file, field path, problem)
CohortDefinitionError = DefinitionError


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


def load_cohort(path: Path, events: dict[str, EventDef]) -> Cohort:
    path = Path(path)
    raw = read_yaml(path)
    known = {"id", "title", "description", "source", "criteria", "sort", "columns"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DefinitionError(path, unknown[0], f"unknown field (allowed: {sorted(known)})")
    cid = need_id(raw, "id", path)
    if cid != path.stem:
        raise DefinitionError(path, "id", f"{cid!r} must match the file name {path.stem!r}")
    sort = []
    for i, item in enumerate(raw.get("sort") or []):
        parts = str(item).split()
        if len(parts) not in (1, 2) or (len(parts) == 2 and parts[1] not in ("asc", "desc")):
            raise DefinitionError(path, f"sort[{i}]", "must be '<column> [asc|desc]'")
        sort.append((parts[0], parts[1] if len(parts) == 2 else "asc"))
    columns = raw.get("columns") or []
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise DefinitionError(path, "columns", "must be a list of column names")
    return Cohort(
        id=cid,
        title=need(raw, "title", path, "", str),
        description=text(need(raw, "description", path, "", str)),
        source=text(need(raw, "source", path, "", str)),
        criteria=parse_rule(need(raw, "criteria", path, "", dict), path, "criteria", events=events),
        sort=sort,
        columns=columns,
        path=path,
    )


def load_cohorts(directory: Path = COHORT_DIR, events_path: Path = EVENTS_PATH) -> list[Cohort]:
    """Every ``*.yaml`` cohort in ``directory`` (files starting with ``_`` are not cohorts)."""
    directory = Path(directory)
    events = load_events(events_path)
    cohorts = [
        load_cohort(p, events)
        for p in sorted(directory.glob("*.yaml"))
        if not p.name.startswith("_")
    ]
    if not cohorts:
        raise DefinitionError(directory, "(folder)", "holds no cohort definitions")
    return cohorts


# ---------------------------------------------------------------- compilation


def compile_cohort(
    cohort: Cohort,
    columns: set[str],
    events: dict[str, EventDef],
    extract_date: dt.date,
    table_columns=None,
) -> str:
    """The SELECT that lists the cohort's members with reasons and rank.

    ``table_columns(table)`` gives the columns of the events' tables (to check them)."""
    c = RuleCompiler(
        columns,
        population=f"{PATIENTS} or its risk/segment tables",
        events=events,
        extract_date=extract_date,
        table_columns=table_columns,
    )
    for i, col in enumerate(cohort.columns):
        c.column(col, cohort.path, f"columns[{i}]")
    cond = c.condition(cohort.criteria)
    order = [
        f"{c.column(col, cohort.path, f'sort[{i}]')} {direction.upper()} NULLS LAST"
        for i, (col, direction) in enumerate(cohort.sort)
    ]
    order_by = ", ".join([*order, "pm.person_id"])
    return f"""{c.with_clause()}
        SELECT {literal(cohort.id)} AS cohort_id, pm.person_id,
               CAST(row_number() OVER (ORDER BY {order_by}) AS INTEGER) AS rank,
               {c.reasons_sql()} AS reasons
        FROM {POPULATION} pm {c.join_clause()}
        WHERE {cond}"""


def _population_view(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> set[str]:
    """Create the temporary view the rules read; returns its columns.

    The population is ``marts.patient_measures`` (currently registered, not dead by the GP
    record) less everyone whose hospital record shows a death (:func:`phm.hospital.
    hospital_deaths_sql`): the GP record can lag behind a death in hospital, and nobody who
    has died may be on a call list."""
    from phm.hospital import SPELLS_VIEW, hospital_deaths_sql
    from phm.warehouse import table_exists

    if not table_exists(con, PATIENTS):
        raise LookupError(f"{PATIENTS} does not exist: build the patient measures first")
    select, joins, where = ["pm.*"], [], ""
    if table_exists(con, SPELLS_VIEW) and table_exists(con, "marts.person_identity"):
        where = f" WHERE pm.person_id NOT IN ({hospital_deaths_sql(date_sql(extract_date))})"
    if table_exists(con, "marts.risk_scores"):
        select.append("r.risk_score, r.risk_tier, r.risk_factors")
        joins.append("LEFT JOIN marts.risk_scores r USING (person_id)")
    if table_exists(con, "marts.segments"):
        select.append("s.segment")
        joins.append("LEFT JOIN marts.segments s USING (person_id)")
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {POPULATION} AS SELECT {', '.join(select)} "
        f"FROM {PATIENTS} pm {' '.join(joins)}{where}"
    )
    return {d[0] for d in con.execute(f"SELECT * FROM {POPULATION} LIMIT 0").description}


#: written by the risk model step when it could not train (pipelines.assets.segmentation)
RISK_STATUS_TABLE = "reports.risk_model_status"


def _uses_risk(cohort: Cohort) -> bool:
    return any((r.measure or "").startswith("risk_") for r in cohort.criteria.walk())


def _risk_unavailable_note(con: duckdb.DuckDBPyConnection) -> str | None:
    """A note for cohorts built on the risk scores when this delivery has none: the list is
    empty because the risk model was skipped, not because nobody is at risk."""
    from phm.warehouse import table_exists

    if not table_exists(con, RISK_STATUS_TABLE):
        return None
    row = con.execute(f"SELECT status, reason FROM {RISK_STATUS_TABLE} LIMIT 1").fetchone()
    if row is None or row[0] != "skipped":
        return None
    return (
        " NOT AVAILABLE FOR THIS DELIVERY: the risk model was skipped, so this list is empty "
        f"({row[1]})."
    )


def build_cohorts(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    directory: Path = COHORT_DIR,
    events_path: Path = EVENTS_PATH,
) -> dict[str, int]:
    """Create ``marts.cohort_members`` (cohort_id, person_id, rank, reasons) and
    ``marts.cohort_definitions`` for every cohort file. Returns members per cohort."""
    events = load_events(events_path)
    cohorts = load_cohorts(directory, events_path)
    columns = _population_view(con, extract_date)
    tables = table_columns_of(con)
    selects = [compile_cohort(c, columns, events, extract_date, tables) for c in cohorts]
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
    risk_note = _risk_unavailable_note(con)
    con.executemany(
        f"INSERT INTO {DEFINITIONS} VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                c.id,
                c.title,
                c.description + (risk_note if risk_note and _uses_risk(c) else ""),
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
