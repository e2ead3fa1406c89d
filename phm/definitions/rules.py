"""The rule model: one tree language for cohorts, segments, events and prevalences.

A rule is a mapping with exactly one of these keys::

    all: [rule, ...]            # every rule holds
    any: [rule, ...]            # at least one holds
    not: rule                   # the rule does not hold
    measure: age                # a column of the population (marts.patient_measures, ...)
      op: ">="                  #   = != > >= < <= between in not_in is_true is_false
      value: 65                 #   includes_any (a ';'-separated list column holds any value)
    event: ppn_received         # an event of data/definitions/events.yaml
      within_days: 365          #   the N days ending on the extract date, inclusive
      min_count: 1              #   default 1
      per: calendar_month       #   optional: min_count events in one calendar month
    latest_of: [ev_a, ev_b]     # of these events, the person's most recent one
      is: [ev_b]                #   is one of these (same day: the later in the list wins)
      within_days: 730          #   optional window
    cohort: frailty             # the criteria of data/cohorts/frailty.yaml
    everyone: true              # always true (a catch-all)

and an optional ``reason``: words for the person reading the output, with ``{column}``
placeholders (and ``{count}``, ``{latest_date}``, ``{days_ago}``, ``{latest.<column>}`` (the
column of the latest row) and, with ``per: calendar_month``, ``{month}`` on events;
``{latest_label}``, ``{latest_date}``, ``{days_ago}`` on ``latest_of``). Inside an event's
``where`` the leaves are ``column: <column of the event table>`` with the same operators.
No rule carries SQL text: names are checked as identifiers (and against the tables when
compiled) and values become quoted literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phm.definitions.loader import ID, DefinitionError, need, need_id, read_yaml, text
from phm.paths import DATA_DIR

EVENTS_PATH = DATA_DIR / "definitions" / "events.yaml"

#: operator -> SQL comparison (None: compiled specially)
OPS: dict[str, str | None] = {
    "=": "=",
    "!=": "<>",
    ">": ">",
    ">=": ">=",
    "<": "<",
    "<=": "<=",
    "between": None,
    "in": None,
    "not_in": None,
    "includes_any": None,
    "is_true": None,
    "is_false": None,
}
LIST_OPS = ("in", "not_in", "includes_any")
COMBINATORS = ("all", "any", "not")
#: what an event count may be grouped by (``per``): the most events in one such period
PERIODS = ("calendar_month",)
TABLE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_SCALAR = (str, int, float, bool)


@dataclass
class Rule:
    """A leaf (measure, event, cohort, everyone) or a combinator (all, any, not)."""

    kind: str  # measure | event | latest_of | cohort | everyone | all | any | not
    path: Path  # the file, for messages
    where: str  # the field path in the file, for messages
    measure: str | None = None  # a column (of the population, or of an event's table)
    op: str | None = None
    value: Any = None
    event: str | None = None
    within_days: int | None = None
    min_count: int = 1
    per: str | None = None  # None (the whole window) | calendar_month
    latest_of: tuple[str, ...] = ()  # events of a latest_of leaf, in tie-break order
    latest_is: tuple[str, ...] = ()  # which of them must be the latest
    cohort: str | None = None
    reason: str | None = None
    children: list[Rule] = field(default_factory=list)

    def walk(self):
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass(frozen=True)
class EventDef:
    """Dated rows of a table, optionally of some code lists and filtered by a rule."""

    name: str
    description: str
    table: str
    date: str
    where: Rule | None
    codelists: tuple[str, ...]
    path: Path
    #: short words for reasons (``{latest_label}``); default: the name
    label: str | None = None


def parse_rule(
    node: Any,
    path: Path,
    where: str,
    *,
    events: dict[str, EventDef] | None = None,
    cohorts: dict[str, Rule] | None = None,
    leaf: str = "measure",
    reasons: bool = True,
) -> Rule:
    """Parse one rule tree. ``leaf`` is the key of value leaves (``measure``, or ``column``
    inside an event's ``where``); ``events`` / ``cohorts`` are what ``event:`` / ``cohort:``
    leaves may name (None: not allowed here); ``reasons``: whether reasons are allowed."""
    path = Path(path)
    if isinstance(node, str):
        raise DefinitionError(
            path, where, f"must be a rule (all / any / not / {leaf} ...), not text like {node!r}"
        )
    if not isinstance(node, dict):
        raise DefinitionError(path, where, f"must be a mapping, got {node!r}")
    keys = [*COMBINATORS, leaf, "event", "latest_of", "cohort", "everyone"]
    present = [k for k in keys if k in node]
    if len(present) != 1:
        raise DefinitionError(path, where, f"needs exactly one of {', '.join(keys)}")
    kind = present[0]
    allowed = {kind, "reason"}
    if kind == leaf:
        allowed |= {"op", "value"}
    if kind == "event":
        allowed |= {"within_days", "min_count", "per"}
    if kind == "latest_of":
        allowed |= {"is", "within_days"}
    extra = sorted(set(node) - allowed)
    if extra:
        raise DefinitionError(path, f"{where}.{extra[0]}", f"unknown field with {kind!r}")
    reason = node.get("reason")
    if reason is not None:
        if not reasons:
            raise DefinitionError(path, f"{where}.reason", "reasons are not allowed here")
        if not isinstance(reason, str):
            raise DefinitionError(path, f"{where}.reason", "must be text")
        reason = text(reason)
    sub = {"events": events, "cohorts": cohorts, "leaf": leaf, "reasons": reasons}

    if kind == "not":
        child = parse_rule(node["not"], path, f"{where}.not", **sub)
        if reasons and reason is None:
            raise DefinitionError(path, f"{where}.reason", "is required on a 'not' rule")
        return Rule("not", path, where, reason=reason, children=[child])
    if kind in ("all", "any"):
        body = node[kind]
        if not isinstance(body, list) or not body:
            raise DefinitionError(path, f"{where}.{kind}", "must be a non-empty list")
        children = [parse_rule(c, path, f"{where}.{kind}[{i}]", **sub) for i, c in enumerate(body)]
        return Rule(kind, path, where, reason=reason, children=children)
    if kind == "everyone":
        if node["everyone"] is not True:
            raise DefinitionError(path, f"{where}.everyone", "must be true")
        return Rule("everyone", path, where, reason=reason)
    if kind == "cohort":
        if cohorts is None:
            raise DefinitionError(path, f"{where}.cohort", "cohort rules are not allowed here")
        name = need_id(node, "cohort", path, where)
        if name not in cohorts:
            raise DefinitionError(
                path,
                f"{where}.cohort",
                f"unknown cohort {name!r} (known: {', '.join(sorted(cohorts))})",
            )
        return Rule("cohort", path, where, cohort=name, reason=reason, children=[cohorts[name]])
    if kind == "event":
        if events is None:
            raise DefinitionError(path, f"{where}.event", "event rules are not allowed here")
        name = need_id(node, "event", path, where)
        if name not in events:
            raise DefinitionError(
                path,
                f"{where}.event",
                f"unknown event {name!r} (known: {', '.join(sorted(events))})",
            )
        within = node.get("within_days")
        if within is not None and (type(within) is not int or within < 1):
            raise DefinitionError(path, f"{where}.within_days", "must be a whole number >= 1")
        min_count = node.get("min_count", 1)
        if type(min_count) is not int or min_count < 1:
            raise DefinitionError(path, f"{where}.min_count", "must be a whole number >= 1")
        per = node.get("per")
        if per is not None and per not in PERIODS:
            raise DefinitionError(
                path, f"{where}.per", f"unknown period {per!r} (allowed: {', '.join(PERIODS)})"
            )
        return Rule(
            "event",
            path,
            where,
            event=name,
            within_days=within,
            min_count=min_count,
            per=per,
            reason=reason,
        )
    if kind == "latest_of":
        if events is None:
            raise DefinitionError(path, f"{where}.latest_of", "event rules are not allowed here")

        def names(key: str) -> list[str]:
            body = node.get(key)
            if not isinstance(body, list) or not body:
                raise DefinitionError(path, f"{where}.{key}", "must be a non-empty list of events")
            for i, n in enumerate(body):
                if not isinstance(n, str) or n not in events:
                    raise DefinitionError(
                        path,
                        f"{where}.{key}[{i}]",
                        f"unknown event {n!r} (known: {', '.join(sorted(events))})",
                    )
            if len(set(body)) != len(body):
                raise DefinitionError(path, f"{where}.{key}", "names an event twice")
            return body

        of, is_ = names("latest_of"), names("is")
        outside = [n for n in is_ if n not in of]
        if outside:
            raise DefinitionError(path, f"{where}.is", f"{outside[0]!r} is not in latest_of")
        within = node.get("within_days")
        if within is not None and (type(within) is not int or within < 1):
            raise DefinitionError(path, f"{where}.within_days", "must be a whole number >= 1")
        return Rule(
            "latest_of",
            path,
            where,
            within_days=within,
            latest_of=tuple(of),
            latest_is=tuple(is_),
            reason=reason,
        )
    # a value leaf: <leaf>: column, op, value
    column = need_id(node, leaf, path, where)
    op = node.get("op")
    if op not in OPS:
        raise DefinitionError(
            path, f"{where}.op", f"unknown operator {op!r} (allowed: {', '.join(OPS)})"
        )
    value = node.get("value")
    if op in ("is_true", "is_false"):
        if value is not None:
            raise DefinitionError(path, f"{where}.value", f"takes no value with {op}")
    elif op == "between":
        if not (isinstance(value, list) and len(value) == 2):
            raise DefinitionError(path, f"{where}.value", "between needs [low, high]")
    elif op in LIST_OPS:
        if not (isinstance(value, list) and value):
            raise DefinitionError(path, f"{where}.value", f"{op} needs a list")
    elif value is None or isinstance(value, (list, dict)):
        raise DefinitionError(path, f"{where}.value", f"{op} needs one value")
    for v in value if isinstance(value, list) else [] if value is None else [value]:
        if not isinstance(v, _SCALAR):
            raise DefinitionError(path, f"{where}.value", f"{v!r} is not a number, text or bool")
    return Rule("measure", path, where, measure=column, op=op, value=value, reason=reason)


def load_events(path: Path | str = EVENTS_PATH) -> dict[str, EventDef]:
    """The event catalogue (``data/definitions/events.yaml``)."""
    path = Path(path)
    raw = read_yaml(path)
    specs = need(raw, "events", path, "", dict)
    events = {}
    for name, spec in specs.items():
        where = f"events.{name}"
        if not isinstance(name, str) or not ID.match(name):
            raise DefinitionError(path, where, "event names must be lower_snake_case")
        if not isinstance(spec, dict):
            raise DefinitionError(path, where, "must be a mapping")
        known = {"description", "label", "table", "date", "where", "codelists"}
        extra = sorted(set(spec) - known)
        if extra:
            raise DefinitionError(path, f"{where}.{extra[0]}", f"unknown field ({sorted(known)})")
        table = need(spec, "table", path, where, str)
        if not TABLE.match(table):
            raise DefinitionError(path, f"{where}.table", f"{table!r} must be schema.table")
        codelists = spec.get("codelists") or []
        if not isinstance(codelists, list) or not all(
            isinstance(c, str) and ID.match(c) for c in codelists
        ):
            raise DefinitionError(path, f"{where}.codelists", "must be a list of code-list ids")
        filt = spec.get("where")
        events[name] = EventDef(
            name=name,
            description=text(need(spec, "description", path, where, str)),
            table=table,
            date=need_id(spec, "date", path, where),
            where=None
            if filt is None
            else parse_rule(filt, path, f"{where}.where", leaf="column", reasons=False),
            codelists=tuple(codelists),
            path=path,
            label=None if spec.get("label") is None else text(spec["label"]),
        )
    return events
