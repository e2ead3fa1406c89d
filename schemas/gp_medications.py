"""gp_medications: issues of prescribed items."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    nhs_number_rules,
    not_after_extract,
    pattern_rule,
    table_schema,
)

TABLE = TABLES["gp_medications"]

#: BNF presentation code: 4-digit section (chapter + section), then letters/digits, <= 15 chars
BNF_CODE = r"^[0-9]{4}[0-9A-Z]{0,11}$"


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    return [
        *nhs_number_rules(ctx),
        *not_after_extract(ctx, "issue_date"),
        *pattern_rule(ctx, "dmd_code", r"^[0-9]{1,18}$", "dm+d id (digits)"),
        *pattern_rule(
            ctx, "bnf_code", BNF_CODE, "BNF code (4-digit section, letters/digits, <= 15 chars)"
        ),
    ]


rules, schema = table_schema(TABLE, extra_rules)
