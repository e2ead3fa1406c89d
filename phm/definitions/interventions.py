"""Interventions as data: who received an intervention and on which date.

Each intervention is one YAML file in ``data/interventions/`` (the file name is the id)::

    id: social_prescribing
    title: Social prescribing
    description: ...
    source: ...                      # the published or local rule it follows
    enabled: true
    who:
      event: sp_first_contact        # an event of data/definitions/events.yaml
      within_days: 1095              # optional: only events in this window
    index_date: earliest             # earliest | latest date of that event per person

``who`` is a rule of the project's one rule language (docs/cohorts.md) and must be a single
``event`` leaf: the intervention *is* a dated event. A disabled intervention (``enabled:
false``) needs a ``note`` saying why (e.g. no code list is vendored) and may omit ``who``.

:func:`treated_sql` compiles the enabled definitions to one query with columns
``person_id, intervention, index_date`` (one row per person and intervention). The event is
checked by the same :class:`~phm.definitions.compiler.RuleCompiler` as every other rule (table,
``nhs_number``, date column, ``where`` rule, code lists); the dated rows are then selected with
the same conditions (dated on or before the extract date, in the window, meeting the event's
``where``, of its code lists). No SQL text is read from a definition file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phm.definitions.compiler import RuleCompiler, date_sql, literal
from phm.definitions.loader import DefinitionError, need, need_id, read_yaml, text
from phm.definitions.rules import EVENTS_PATH, EventDef, Rule, load_events, parse_rule
from phm.paths import DATA_DIR

INTERVENTIONS_DIR = DATA_DIR / "interventions"
INDEX_DATES = ("earliest", "latest")
FIELDS = {"id", "title", "description", "source", "enabled", "note", "who", "index_date"}


@dataclass(frozen=True)
class InterventionDef:
    id: str
    title: str
    description: str
    source: str
    enabled: bool
    note: str | None
    who: Rule | None  # an event leaf (None when disabled without one)
    index_date: str  # earliest | latest
    path: Path


def load_intervention(path: Path | str, events: dict[str, EventDef]) -> InterventionDef:
    path = Path(path)
    raw = read_yaml(path)
    extra = sorted(set(raw) - FIELDS)
    if extra:
        raise DefinitionError(path, extra[0], f"unknown field ({sorted(FIELDS)})")
    iid = need_id(raw, "id", path)
    if iid != path.stem:
        raise DefinitionError(path, "id", f"must equal the file name {path.stem!r}, got {iid!r}")
    enabled = need(raw, "enabled", path, "", bool)
    note = text(raw["note"]) if raw.get("note") else None
    if not enabled and not note:
        raise DefinitionError(path, "note", "is required when enabled is false (say why)")
    who = None
    if enabled or raw.get("who") is not None:
        who = parse_rule(need(raw, "who", path, "", dict), path, "who", events=events)
        if who.kind != "event":
            raise DefinitionError(
                path, "who", "must be one event leaf (event: <name>): an intervention is dated"
            )
    index_date = raw.get("index_date", "earliest")
    if index_date not in INDEX_DATES:
        raise DefinitionError(
            path, "index_date", f"must be one of {', '.join(INDEX_DATES)}, got {index_date!r}"
        )
    return InterventionDef(
        id=iid,
        title=text(need(raw, "title", path, "", str)),
        description=text(need(raw, "description", path, "", str)),
        source=text(need(raw, "source", path, "", str)),
        enabled=enabled,
        note=note,
        who=who,
        index_date=index_date,
        path=path,
    )


def load_interventions(
    directory: Path | str = INTERVENTIONS_DIR, events_path: Path | str = EVENTS_PATH
) -> list[InterventionDef]:
    """Every ``*.yaml`` in ``directory``, sorted by id (enabled and disabled)."""
    events = load_events(events_path)
    return sorted(
        (load_intervention(p, events) for p in sorted(Path(directory).glob("*.yaml"))),
        key=lambda d: d.id,
    )


def _event_rows_sql(
    ev: EventDef,
    rule: Rule,
    extract_date: dt.date,
    table_columns: Callable[[str], set[str]],
) -> str:
    """``person_id, d`` for every row of the event (the conditions of the compiler's events)."""
    cols = table_columns(ev.table)
    date = f"CAST(e.{ev.date} AS DATE)"
    conds = [f"{date} IS NOT NULL", f"{date} <= {date_sql(extract_date)}"]
    if rule.within_days:
        start = extract_date - dt.timedelta(days=rule.within_days - 1)
        conds.append(f"{date} >= {date_sql(start)}")
    if ev.where is not None:
        sub = RuleCompiler(cols, population=ev.table, alias="e", leaf="column")
        conds.append(sub.condition(ev.where))
    if ev.codelists:
        lists = ", ".join(literal(c) for c in ev.codelists)
        conds.append(
            "e.snomed_code IN (SELECT code FROM reference.codelists "
            f"WHERE codelist_id IN ({lists}))"
        )
    return (
        f"SELECT i.person_id, {date} AS d FROM {ev.table} e "
        f"JOIN marts.person_identity i USING (nhs_number) WHERE {' AND '.join(conds)}"
    )


def treated_sql(
    definitions: list[InterventionDef],
    extract_date: dt.date,
    table_columns: Callable[[str], set[str]],
    events: dict[str, EventDef] | None = None,
) -> str:
    """One query ``person_id, intervention, index_date`` over the enabled definitions
    (an empty result with those columns when none is enabled)."""
    events = events if events is not None else load_events()
    parts = []
    for d in definitions:
        if not d.enabled:
            continue
        # the rule compiler checks the event against the warehouse (table, columns, lists)
        RuleCompiler(
            set(), events=events, extract_date=extract_date, table_columns=table_columns
        ).event_source(d.who)
        agg = "min" if d.index_date == "earliest" else "max"
        rows = _event_rows_sql(events[d.who.event], d.who, extract_date, table_columns)
        parts.append(
            f"SELECT person_id, {literal(d.id)} AS intervention, {agg}(d) AS index_date "
            f"FROM ({rows}) GROUP BY person_id"
        )
    if not parts:
        return (
            "SELECT CAST(NULL AS VARCHAR) AS person_id, CAST(NULL AS VARCHAR) AS intervention, "
            "CAST(NULL AS DATE) AS index_date WHERE FALSE"
        )
    return "\nUNION ALL\n".join(parts)
