"""sus_op: hospital outpatient appointments."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    nhs_number_rules,
    not_after_extract,
    pattern_rule,
    table_schema,
    unique_first_wins,
)

TABLE = TABLES["sus_op"]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "appointment_id"),
        *not_after_extract(ctx, "appointment_date"),
        *pattern_rule(ctx, "treatment_function_code", r"^[0-9]{3}$", "3 digits"),
    ]


rules, schema = table_schema(TABLE, extra_rules)
