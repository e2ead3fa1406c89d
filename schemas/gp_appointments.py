"""gp_appointments: GP practice appointments (booked ones may lie after the extract date)."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    nhs_number_rules,
    ok_when,
    practice_code_rules,
    table_schema,
)

TABLE = TABLES["gp_appointments"]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    when = ctx.val("appointment_date")
    status = ctx.val("status")
    known_status = status.is_in(list(TABLE.column("status").allowed or ()))
    # judged only once the status is a known one, so a bad status is one fault, not two
    future_ok = ok_when(
        [when.is_not_null(), known_status], (when <= ctx.extract_lit) | (status == "booked")
    )
    return [
        *nhs_number_rules(ctx),
        ValidationRule(
            "appointment_date: not after extract_date unless status is booked",
            "appointment_date",
            "future_date",
            future_ok,
            detail="judged once status is one of the allowed values",
        ),
        *practice_code_rules(ctx),
    ]


rules, schema = table_schema(TABLE, extra_rules)
