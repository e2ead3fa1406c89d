"""gp_events: the coded clinical record (diagnoses, symptoms, findings, procedures, invitations)."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    nhs_number_rules,
    not_after_extract,
    practice_code_rules,
    snomed_rule,
    table_schema,
)

TABLE = TABLES["gp_events"]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    return [
        *nhs_number_rules(ctx),
        *not_after_extract(ctx, "event_date"),
        *snomed_rule(ctx, "snomed_code"),
        *practice_code_rules(ctx),
    ]


rules, schema = table_schema(TABLE, extra_rules)
