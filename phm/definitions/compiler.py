"""Compile rule trees (:mod:`phm.definitions.rules`) to DuckDB SQL.

A :class:`RuleCompiler` turns a rule into one boolean SQL expression over a population
table aliased ``pm`` (one row per person, keyed ``person_id``), plus the event sub-queries
(CTEs) and joins the expression needs and, for every rule with a ``reason``, a SQL text
expression that gives the reason when the rule holds. Every leaf is null-safe (a missing
value does not meet a rule). Column names are checked against the tables they come from;
values are quoted literals, so no text from a definition file is ever run as SQL.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from phm.definitions.loader import DefinitionError
from phm.definitions.rules import OPS, EventDef, Rule

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?)\}")
#: reason placeholders of an event leaf (plus ``latest.<column>``; ``month`` with ``per``)
EVENT_FIELDS = ("count", "latest_date", "days_ago", "month")
#: reason placeholders of a ``latest_of`` leaf
LATEST_OF_FIELDS = ("latest_label", "latest_date", "days_ago")
LATEST_COLUMN = "latest."


def literal(value: Any) -> str:
    """A SQL literal for a definition value (numbers, booleans, or quoted text)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def date_sql(d: dt.date) -> str:
    return f"DATE '{d.isoformat()}'"


class RuleCompiler:
    """Compiles rules over ``columns`` of the population (alias ``alias``).

    ``table_columns(table)`` gives the columns of an event's table (needed for events);
    ``extract_date`` anchors event windows. ``ctes``, ``joins`` and ``reasons`` accumulate
    over every :meth:`condition` call; see :meth:`query_parts`."""

    def __init__(
        self,
        columns: set[str],
        *,
        population: str = "the population",
        alias: str = "pm",
        events: dict[str, EventDef] | None = None,
        extract_date: dt.date | None = None,
        table_columns: Callable[[str], set[str]] | None = None,
        leaf: str = "measure",
    ):
        #: the key of value leaves (``column`` inside an event's ``where``), for messages
        self.leaf = leaf
        self.columns, self.population, self.alias = set(columns), population, alias
        self.events = events or {}
        self.ed = extract_date
        self.table_columns = table_columns
        self.ctes: list[str] = []
        self.joins: list[str] = []
        self.reasons: list[str] = []
        #: > 0 while compiling inside a ``cohort`` leaf, whose inner reasons are not used
        self._quiet = 0

    # ------------------------------------------------------------------ names and text

    def column(self, name: str, path, where: str) -> str:
        if name not in self.columns:
            raise DefinitionError(
                path, where, f"unknown column {name!r} (not in {self.population})"
            )
        return f"{self.alias}.{name}"

    def template(
        self,
        text: str,
        path,
        where: str,
        event_alias: str | None = None,
        fields: tuple[str, ...] = EVENT_FIELDS,
    ) -> str:
        """A reason template as a SQL text expression: ``{column}`` -> its value ("unknown"
        when null; ``*_score`` columns rounded to 2 decimals); on an event, also its fields
        (``fields``) and ``{latest.<column>}``."""
        parts, pos = [], 0
        for m in PLACEHOLDER.finditer(text):
            if m.start() > pos:
                parts.append(literal(text[pos : m.start()]))
            name = m.group(1)
            if event_alias and name.startswith(LATEST_COLUMN):
                expr = f"{event_alias}.{_latest_alias(name)}"
            elif event_alias and name in fields:
                expr = {
                    "count": f"{event_alias}.n",
                    "latest_date": f"strftime({event_alias}.latest, '%Y-%m-%d')",
                    "days_ago": f"({date_sql(self.ed)} - {event_alias}.latest)",
                    "month": f"strftime({event_alias}.month, '%Y-%m')",
                    "latest_label": f"{event_alias}.label",
                }[name]
            elif "." in name:
                raise DefinitionError(
                    path, f"{where}.reason", f"{{{name}}} is only allowed in an event's reason"
                )
            else:
                expr = self.column(name, path, f"{where}.reason")
                if name.endswith("_score"):
                    expr = f"round({expr}, 2)"
            parts.append(f"coalesce(CAST({expr} AS VARCHAR), 'unknown')")
            pos = m.end()
        if pos < len(text):
            parts.append(literal(text[pos:]))
        return " || ".join(parts) if parts else "''"

    # ------------------------------------------------------------------ events

    def _event(self, name: str, rule: Rule, field: str) -> EventDef:
        ev = self.events.get(name)
        if ev is None:
            raise DefinitionError(rule.path, f"{rule.where}.{field}", f"unknown event {name!r}")
        if self.ed is None or self.table_columns is None:
            raise DefinitionError(
                rule.path, f"{rule.where}.{field}", "events need an extract date and the warehouse"
            )
        return ev

    def event_rows(self, ev: EventDef, within_days: int | None, extra: tuple[str, ...] = ()):
        """``(from_where_sql, date_sql)``: the event's rows (alias ``e``, joined to the person
        as ``i``) in the window; ``extra`` columns of the table are checked to exist."""
        cols = self.table_columns(ev.table)
        where = f"events.{ev.name}"
        if not cols:
            raise DefinitionError(ev.path, f"{where}.table", f"table {ev.table} does not exist")
        if "nhs_number" not in cols:
            raise DefinitionError(ev.path, f"{where}.table", f"{ev.table} has no nhs_number")
        if ev.date not in cols:
            raise DefinitionError(
                ev.path, f"{where}.date", f"unknown column {ev.date!r} of {ev.table}"
            )
        for c in extra:
            if c not in cols:
                raise DefinitionError(
                    ev.path, where, f"unknown column {c!r} of {ev.table} (in a reason)"
                )
        date = f"CAST(e.{ev.date} AS DATE)"
        conds = [f"{date} <= {date_sql(self.ed)}"]
        if within_days:
            conds.append(f"{date} >= {date_sql(self.ed - dt.timedelta(days=within_days - 1))}")
        if ev.where is not None:
            sub = RuleCompiler(cols, population=ev.table, alias="e", leaf="column")
            conds.append(sub.condition(ev.where))
        if ev.codelists:
            if "snomed_code" not in cols:
                raise DefinitionError(
                    ev.path, f"{where}.codelists", f"{ev.table} has no snomed_code column"
                )
            lists = ", ".join(literal(c) for c in ev.codelists)
            conds.append(
                "e.snomed_code IN (SELECT code FROM reference.codelists "
                f"WHERE codelist_id IN ({lists}))"
            )
        sql = (
            f"FROM {ev.table} e JOIN marts.person_identity i USING (nhs_number) "
            f"WHERE {' AND '.join(conds)}"
        )
        return sql, date

    def _add_cte(self, body: str) -> str:
        alias = f"ev{len(self.ctes)}"
        self.ctes.append(f"{alias} AS ({body})")
        self.joins.append(f"LEFT JOIN {alias} USING (person_id)")
        return alias

    def event_source(self, rule: Rule) -> str:
        """Add the CTE counting the person's events of ``rule`` in its window; its alias.

        Columns: ``n`` (the count; with ``per: calendar_month`` the most in one month),
        ``latest`` (the latest date), ``month`` (with ``per``: the month of that most, the
        later on a tie) and ``latest__<column>`` for each ``{latest.<column>}`` of the reason
        (the value on the latest row; on a tie of dates the lowest value, so it is stable)."""
        ev = self._event(rule.event, rule, "event")
        wanted = sorted(
            {
                m.group(1)[len(LATEST_COLUMN) :]
                for m in PLACEHOLDER.finditer(rule.reason or "")
                if m.group(1).startswith(LATEST_COLUMN)
            }
        )
        if wanted and rule.per:
            raise DefinitionError(
                rule.path, f"{rule.where}.reason", "{latest.<column>} cannot be used with 'per'"
            )
        rows, date = self.event_rows(ev, rule.within_days, tuple(wanted))
        if rule.per == "calendar_month":
            return self._add_cte(
                f"""SELECT person_id, max(n) AS n, max(latest) AS latest,
                       first(month ORDER BY n DESC, month DESC) AS month
                FROM (SELECT i.person_id, CAST(date_trunc('month', {date}) AS DATE) AS month,
                             count(*) AS n, max({date}) AS latest
                      {rows} GROUP BY ALL)
                GROUP BY person_id"""
            )
        latest_cols = "".join(
            f", first(e.{c} ORDER BY {date} DESC, e.{c} ASC NULLS LAST) AS "
            f"{_latest_alias(LATEST_COLUMN + c)}"
            for c in wanted
        )
        return self._add_cte(
            f"""SELECT i.person_id, count(*) AS n, max({date}) AS latest{latest_cols}
                {rows} GROUP BY i.person_id"""
        )

    def latest_of_source(self, rule: Rule) -> str:
        """Add the CTE giving, per person, which of ``rule.latest_of`` happened last
        (``name``, ``label``, ``latest``; on the same day the one later in the list)."""
        parts = []
        for k, name in enumerate(rule.latest_of):
            ev = self._event(name, rule, f"latest_of[{k}]")
            rows, date = self.event_rows(ev, rule.within_days)
            parts.append(
                f"SELECT i.person_id, {date} AS d, {k} AS k, {literal(name)} AS name, "
                f"{literal(ev.label or name)} AS label {rows}"
            )
        union = " UNION ALL ".join(parts)
        return self._add_cte(
            f"""SELECT person_id, count(*) AS n, max(d) AS latest,
                   first(name ORDER BY d DESC, k DESC) AS name,
                   first(label ORDER BY d DESC, k DESC) AS label
                FROM ({union}) GROUP BY person_id"""
        )

    # ------------------------------------------------------------------ rules

    def _reason(
        self,
        rule: Rule,
        cond: str,
        event_alias: str | None = None,
        fields: tuple[str, ...] = EVENT_FIELDS,
    ) -> str | None:
        if self._quiet:
            return None
        return (
            f"CASE WHEN {cond} THEN "
            f"{self.template(rule.reason, rule.path, rule.where, event_alias, fields)} END"
        )

    def condition(self, rule: Rule) -> str:
        """The rule as a null-safe SQL boolean; adds its reasons (in tree order)."""
        if rule.kind == "measure":
            col = self.column(rule.measure, rule.path, f"{rule.where}.{self.leaf}")
            op, v = rule.op, rule.value
            if op == "between":
                cond = f"{col} BETWEEN {literal(v[0])} AND {literal(v[1])}"
            elif op in ("in", "not_in"):
                values = ", ".join(literal(x) for x in v)
                cond = f"{col} {'NOT IN' if op == 'not_in' else 'IN'} ({values})"
            elif op == "includes_any":
                values = ", ".join(literal(x) for x in v)
                cond = f"list_has_any(string_split({col}, ';'), [{values}])"
            elif op == "is_true":
                cond = f"{col} IS TRUE"
            elif op == "is_false":
                cond = f"{col} IS NOT TRUE"
            else:
                cond = f"{col} {OPS[op]} {literal(v)}"
            cond = f"coalesce({cond}, FALSE)"
            if rule.reason:
                self.reasons.append(self._reason(rule, cond))
            return cond
        if rule.kind == "event":
            alias = self.event_source(rule)
            cond = f"coalesce({alias}.n, 0) >= {rule.min_count}"
            if rule.reason:
                fields = EVENT_FIELDS if rule.per else EVENT_FIELDS[:3]
                self.reasons.append(self._reason(rule, cond, alias, fields))
            return cond
        if rule.kind == "latest_of":
            alias = self.latest_of_source(rule)
            values = ", ".join(literal(n) for n in rule.latest_is)
            cond = f"coalesce({alias}.name IN ({values}), FALSE)"
            if rule.reason:
                self.reasons.append(self._reason(rule, cond, alias, LATEST_OF_FIELDS))
            return cond
        if rule.kind == "everyone":
            if rule.reason:
                self.reasons.append(self._reason(rule, "TRUE"))
            return "TRUE"
        if rule.kind in ("not", "cohort"):
            n_reasons = len(self.reasons)
            self._quiet += rule.kind == "cohort"
            try:
                inner = self.condition(rule.children[0])
            finally:
                self._quiet -= rule.kind == "cohort"
            # reasons of a negated rule are not reasons; a cohort rule gives its own reason
            del self.reasons[n_reasons:]
            cond = f"NOT ({inner})" if rule.kind == "not" else f"({inner})"
            if rule.reason:
                self.reasons.append(self._reason(rule, cond))
            return cond
        joiner = " AND " if rule.kind == "all" else " OR "
        n_reasons = len(self.reasons)
        cond = "(" + joiner.join(self.condition(c) for c in rule.children) + ")"
        if rule.reason:
            self.reasons.insert(n_reasons, self._reason(rule, cond))
        return cond

    def reasons_sql(self, reasons: list[str | None] | None = None) -> str:
        """The reasons (default: all so far) joined with '; ' (nulls skipped)."""
        reasons = [r for r in (self.reasons if reasons is None else reasons) if r]
        return "concat_ws('; ', " + ", ".join(reasons) + ")" if reasons else "''"

    def with_clause(self) -> str:
        return ("WITH " + ",\n".join(self.ctes)) if self.ctes else ""

    def join_clause(self) -> str:
        return " ".join(self.joins)


def _latest_alias(placeholder: str) -> str:
    """``latest.discharged_to`` -> the CTE column ``latest__discharged_to``."""
    return "latest__" + placeholder[len(LATEST_COLUMN) :]


def uses_events(rules) -> bool:
    return any(r.kind in ("event", "latest_of") for rule in rules for r in rule.walk())


def table_columns_of(con) -> Callable[[str], set[str]]:
    """``table -> its columns`` from a DuckDB connection (empty when the table is missing)."""
    cache: dict[str, set[str]] = {}

    def columns(table: str) -> set[str]:
        if table not in cache:
            schema, name = table.split(".")
            rows = con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ?",
                [schema, name],
            ).fetchall()
            cache[table] = {r[0] for r in rows}
        return cache[table]

    return columns
