"""Pandera schemas for the extract data contract: one module per contract table.

Each table module defines ``TABLE`` (from :mod:`phm.contract`), ``extra_rules(ctx)`` (its
rules beyond the contract's types, nullability and allowed values, which are derived for
every table in :func:`schemas._base.standard_rules`), ``rules(extract_date, refs)`` and
``schema(extract_date, refs)``. The extract date and the keys delivered in referenced tables
are parameters, so the schema is built per delivery::

    from schemas import schema_for
    schema = schema_for("gp_events", date(2026, 11, 1), {"practices": {"C82001", ...}})

The schema validates the *check frame* (:func:`check_frame`), not the raw strings: raw text
is parsed once, then every rule is a pandera ``Check`` named by the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from types import ModuleType

import pandera.polars as pa
import polars as pl

from phm.contract import TABLE_NAMES
from schemas import (
    community_assets,
    gp_appointments,
    gp_events,
    gp_medications,
    gp_patients,
    ppn,
    practices,
    sp_outcomes,
    sp_referrals,
    sus_apc,
    sus_ecds,
    sus_op,
)
from schemas._base import (
    RULE_KINDS,
    MissingColumnsError,
    ValidationRule,
    check_frame,
    nhs_number_check_digit,
    normalise_icd10,
    staging_columns,
)

#: table name -> its schema module
REGISTRY: dict[str, ModuleType] = {
    m.TABLE.name: m
    for m in (
        practices,
        gp_patients,
        gp_events,
        gp_medications,
        gp_appointments,
        sus_apc,
        sus_ecds,
        sus_op,
        ppn,
        sp_referrals,
        sp_outcomes,
        community_assets,
    )
}
assert tuple(REGISTRY) == TABLE_NAMES, "one schema module per contract table, in contract order"

#: cross-table references: table -> {column: (referenced table, its key column)}
REFERENCES: dict[str, dict[str, tuple[str, str]]] = {
    "gp_patients": {"practice_code": ("practices", "practice_code")},
    "gp_events": {"practice_code": ("practices", "practice_code")},
    "gp_appointments": {"practice_code": ("practices", "practice_code")},
    "sp_outcomes": {"referral_id": ("sp_referrals", "referral_id")},
}

#: referenced table -> its key column (what ``refs`` must hold for the referencing tables)
REFERENCED_KEYS: dict[str, str] = {
    ref: key for cols in REFERENCES.values() for ref, key in cols.values()
}

#: the extract date used when only rule names are wanted (docs, catalogue)
_ANY_DATE = date(2000, 1, 1)


def _module(table: str) -> ModuleType:
    try:
        return REGISTRY[table]
    except KeyError:
        raise KeyError(f"no schema for table {table!r}; tables: {', '.join(REGISTRY)}") from None


def rules_for(
    table: str, extract_date: date, refs: Mapping[str, object] | None = None
) -> list[ValidationRule]:
    """Every rule of ``table`` with its expression, in contract column order."""
    return _module(table).rules(extract_date, refs)


def schema_for(
    table: str, extract_date: date, refs: Mapping[str, object] | None = None
) -> pa.DataFrameSchema:
    """The pandera polars schema of ``table`` for a delivery.

    ``refs`` maps each table ``table`` references (see :data:`REFERENCES`) to the keys
    delivered in it, e.g. ``{"practices": {"C82001", "C82002"}}``.
    """
    return _module(table).schema(extract_date, refs)


def rows_independent(table: str) -> bool:
    """True when every rule of ``table`` looks at one row alone (no ``across_rows`` rule such
    as uniqueness): its rows may then be validated slice by slice with the same result."""
    return not any(r.across_rows for r in rules_for(table, _ANY_DATE, _placeholder_refs()))


def _placeholder_refs() -> dict[str, pl.Series]:
    return {ref: pl.Series([], dtype=pl.String) for ref in REFERENCED_KEYS}


def rule_names(table: str) -> list[str]:
    """The names of ``table``'s rules (they do not depend on the extract date or refs)."""
    return [r.name for r in rules_for(table, _ANY_DATE, _placeholder_refs())]


def rule_catalogue() -> pl.DataFrame:
    """Every rule of every table: ``table, column, rule, kind, detail``.

    ``kind`` is the synthetic generator's fault name (``faults.csv``) the rule catches, so a
    fault ``(table, column, fault)`` is matched by the rule(s) with that table, column, kind.
    """
    rows = [
        {"table": t, "column": r.column, "rule": r.name, "kind": r.kind, "detail": r.detail}
        for t in REGISTRY
        for r in rules_for(t, _ANY_DATE, _placeholder_refs())
    ]
    return pl.DataFrame(
        rows, schema=dict.fromkeys(("table", "column", "rule", "kind", "detail"), pl.String)
    )


def rules_markdown() -> str:
    """The rules of every table as markdown (the body of ``docs/validation.md``'s rule list)."""
    cat = rule_catalogue()
    out: list[str] = []
    for t in REGISTRY:
        doc = (REGISTRY[t].TABLE.description or "").strip()
        out += [
            f"### {t}",
            "",
            doc,
            "",
            "| column | rule | fault kind | detail |",
            "|---|---|---|---|",
        ]
        for r in cat.filter(pl.col("table") == t).iter_rows(named=True):
            detail = r["detail"].replace("|", "\\|")
            out.append(f"| `{r['column']}` | `{r['rule']}` | {r['kind']} | {detail} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


__all__ = [
    "REFERENCED_KEYS",
    "REFERENCES",
    "REGISTRY",
    "RULE_KINDS",
    "MissingColumnsError",
    "ValidationRule",
    "check_frame",
    "nhs_number_check_digit",
    "normalise_icd10",
    "rows_independent",
    "rule_catalogue",
    "rule_names",
    "rules_for",
    "rules_markdown",
    "schema_for",
    "staging_columns",
]
