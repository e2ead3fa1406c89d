"""practices: which practice is in which PCN (the reference for every practice_code)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import pandera.polars as pa

from phm.contract import TABLES
from schemas._base import (
    Rule,
    RuleContext,
    build,
    pattern_rule,
    practice_code_rules,
    unique_first_wins,
)

TABLE = TABLES["practices"]


def extra_rules(ctx: RuleContext) -> list[Rule]:
    return [
        *practice_code_rules(ctx),
        *unique_first_wins(ctx, "practice_code"),
        *pattern_rule(ctx, "pcn_code", r"^U[0-9]{5}$", "ODS PCN code (U + 5 digits)"),
        *pattern_rule(ctx, "icb_code", r"^[A-Z0-9]{3}$", "ODS ICB code (3 letters/digits)"),
    ]


def rules(extract_date: date, refs: Mapping[str, object] | None = None) -> list[Rule]:
    """Every rule of this table, in contract column order."""
    return build(TABLE, extra_rules, extract_date, refs)[0]


def schema(extract_date: date, refs: Mapping[str, object] | None = None) -> pa.DataFrameSchema:
    """The pandera polars schema over this table's check frame."""
    return build(TABLE, extra_rules, extract_date, refs)[1]
