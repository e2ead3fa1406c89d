"""The definitions layer: one loader, one rule model and one compiler to DuckDB SQL.

Cohorts (``data/cohorts/``), Bridges to Health segments
(``data/definitions/bridges_to_health.yaml``), events (``data/definitions/events.yaml``)
and the geography's prevalence measures (``data/definitions/prevalences.yaml``) are all
written as the same rule trees (see :mod:`phm.definitions.rules` and docs/cohorts.md).
"""

from phm.definitions.compiler import RuleCompiler, literal, table_columns_of, uses_events
from phm.definitions.loader import ID, DefinitionError, need, need_id, read_yaml, text
from phm.definitions.rules import EVENTS_PATH, OPS, EventDef, Rule, load_events, parse_rule

__all__ = [
    "EVENTS_PATH",
    "ID",
    "OPS",
    "DefinitionError",
    "EventDef",
    "Rule",
    "RuleCompiler",
    "literal",
    "load_events",
    "need",
    "need_id",
    "parse_rule",
    "read_yaml",
    "table_columns_of",
    "text",
    "uses_events",
]
