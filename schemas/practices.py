"""practices: which practice is in which PCN (the reference for every practice_code)."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    pattern_rule,
    practice_code_rules,
    table_schema,
    unique_first_wins,
)

TABLE = TABLES["practices"]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    return [
        *practice_code_rules(ctx),
        *unique_first_wins(ctx, "practice_code"),
        *pattern_rule(ctx, "pcn_code", r"^U[0-9]{5}$", "ODS PCN code (U + 5 digits)"),
        *pattern_rule(ctx, "icb_code", r"^[A-Z0-9]{3}$", "ODS ICB code (3 letters/digits)"),
    ]


rules, schema = table_schema(TABLE, extra_rules)
