"""gp_patients: one row per registration, current and recently ended."""

from __future__ import annotations

from datetime import date

from phm.contract import TABLES
from schemas._base import (
    LSOA11,
    RuleContext,
    ValidationRule,
    date_order,
    lsoa_rule,
    nhs_number_rules,
    not_after_extract,
    not_before,
    pattern_rule,
    practice_code_rules,
    table_schema,
    unique_first_wins,
)

TABLE = TABLES["gp_patients"]

EARLIEST_BIRTH = date(1900, 1, 1)


def lsoa21_rule(ctx: RuleContext) -> list[ValidationRule]:
    """v2 optional ``lsoa21_code``: an LSOA 2021 code, ``E01`` + 6 digits (same form as 2011;
    whether the deprivation index covers it is a data-quality count, not a row fault)."""
    return pattern_rule(ctx, "lsoa21_code", LSOA11, "LSOA 2021 code (E01 + 6 digits)")


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    current = ctx.raw("registration_end").is_null()
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(
            ctx,
            "nhs_number",
            among=current,
            what="at most one current registration",
            among_label=" with an empty registration_end",
        ),
        *not_after_extract(ctx, "date_of_birth"),
        *not_before(ctx, "date_of_birth", EARLIEST_BIRTH),
        *lsoa_rule(ctx),
        *lsoa21_rule(ctx),
        *practice_code_rules(ctx),
        *not_after_extract(ctx, "registration_start"),
        *not_after_extract(ctx, "registration_end"),
        *date_order(ctx, "registration_end", "registration_start"),
        *not_after_extract(ctx, "date_of_death"),
    ]


rules, schema = table_schema(TABLE, extra_rules)
