"""ppn: police Public Protection Notifications shared with the practice."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    date_order,
    nhs_number_rules,
    not_after_extract,
    table_schema,
    unique_first_wins,
)

TABLE = TABLES["ppn"]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "ppn_id"),
        *not_after_extract(ctx, "incident_date"),
        *not_after_extract(ctx, "shared_date"),
        *date_order(ctx, "shared_date", "incident_date"),
    ]


rules, schema = table_schema(TABLE, extra_rules)
