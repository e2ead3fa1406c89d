"""Prevalence measures as data (``data/definitions/prevalences.yaml``).

Each measure's numerator and denominator are rules of :mod:`phm.definitions` (the cohort
rule language); a ``cohort: <id>`` leaf is that cohort's criteria, so the geography's
frailty is the frailty cohort. :func:`prevalence_flags_sql` compiles them to one SELECT
over ``marts.patient_measures`` (alias ``pm``) adding ``<id>_n`` and ``<id>_denominator``
(0/1) to every patient row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from phm.cohorts import COHORT_DIR, load_cohorts
from phm.definitions import (
    EVENTS_PATH,
    DefinitionError,
    EventDef,
    Rule,
    RuleCompiler,
    load_events,
    need,
    need_id,
    parse_rule,
    read_yaml,
    table_columns_of,
    text,
    uses_events,
)
from phm.paths import DATA_DIR

PREVALENCES_PATH = DATA_DIR / "definitions" / "prevalences.yaml"
PATIENTS = "marts.patient_measures"


@dataclass(frozen=True)
class Prevalence:
    """People meeting ``numerator`` among those meeting ``denominator`` (percent)."""

    id: str
    label: str
    numerator: Rule
    denominator: Rule
    definition: str


def load_prevalences(
    path: Path | str = PREVALENCES_PATH,
    *,
    cohort_dir: Path = COHORT_DIR,
    events_path: Path = EVENTS_PATH,
) -> tuple[Prevalence, ...]:
    path = Path(path)
    raw = read_yaml(path)
    events = load_events(events_path)
    cohorts = {c.id: c.criteria for c in load_cohorts(cohort_dir, events_path)}
    out, seen = [], set()
    for i, p in enumerate(need(raw, "prevalences", path, "", list)):
        where = f"prevalences[{i}]"
        pid = need_id(p, "id", path, where)
        if pid in seen:
            raise DefinitionError(path, f"{where}.id", f"duplicate id {pid!r}")
        seen.add(pid)
        extra = sorted(set(p) - {"id", "label", "definition", "numerator", "denominator"})
        if extra:
            raise DefinitionError(path, f"{where}.{extra[0]}", "unknown field")
        rules = {
            k: parse_rule(
                need(p, k, path, where, dict),
                path,
                f"{where}.{k}",
                events=events,
                cohorts=cohorts,
                reasons=False,
            )
            for k in ("numerator", "denominator")
        }
        out.append(
            Prevalence(
                id=pid,
                label=text(need(p, "label", path, where, str)),
                numerator=rules["numerator"],
                denominator=rules["denominator"],
                definition=text(need(p, "definition", path, where, str)),
            )
        )
    return tuple(out)


def prevalence_flags_sql(
    con: duckdb.DuckDBPyConnection,
    prevalences: tuple[Prevalence, ...] | list[Prevalence],
    select: list[str],
    events: dict[str, EventDef] | None = None,
) -> str:
    """``SELECT <select>, <id>_n, <id>_denominator, ... FROM marts.patient_measures pm``.

    ``<id>_n`` is 1 when the patient meets both numerator and denominator."""
    columns = {r[0] for r in con.execute(f"DESCRIBE {PATIENTS}").fetchall()}
    rules = [r for p in prevalences for r in (p.numerator, p.denominator)]
    extract_date = None
    if uses_events(rules):
        from phm.warehouse import current_extract_date

        extract_date = current_extract_date(con)
        events = events if events is not None else load_events()
    c = RuleCompiler(
        columns,
        population=PATIENTS,
        events=events,
        extract_date=extract_date,
        table_columns=table_columns_of(con),
    )
    cols = list(select)
    for p in prevalences:
        den = c.condition(p.denominator)
        num = c.condition(p.numerator)
        cols += [
            f"CAST(({num}) AND ({den}) AS INTEGER) AS {p.id}_n",
            f"CAST({den} AS INTEGER) AS {p.id}_denominator",
        ]
    return f"{c.with_clause()} SELECT {', '.join(cols)} FROM {PATIENTS} pm {c.join_clause()}"
