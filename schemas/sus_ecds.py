"""sus_ecds: emergency department attendances (ECDS)."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    nhs_number_rules,
    not_after_extract,
    provider_code_rule,
    snomed_rule,
    table_schema,
    unique_first_wins,
)

TABLE = TABLES["sus_ecds"]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "attendance_id"),
        *provider_code_rule(ctx),
        *not_after_extract(ctx, "arrival_datetime"),
        *snomed_rule(ctx, "chief_complaint_snomed"),
    ]


rules, schema = table_schema(TABLE, extra_rules)
