"""sp_referrals: the social prescribing / care-connector caseload.

``reasons`` is staged as the trimmed reasons joined by ``;`` (empty items dropped).
"""

from __future__ import annotations

import polars as pl

from phm.contract import SP_REASONS, TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    nhs_number_rules,
    not_after_extract,
    ok_when,
    split_list,
    table_schema,
    transform,
    unique_first_wins,
)

TABLE = TABLES["sp_referrals"]


@transform("sp_referrals", "reasons")
def _reasons(text: pl.Expr) -> pl.Expr:
    items = split_list(text)
    return pl.when(items.list.len() > 0).then(items.list.join(";"))


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    items = split_list(ctx.raw("reasons"))
    reasons_ok = (items.list.len() > 0) & items.list.eval(
        pl.element().is_in(list(SP_REASONS))
    ).list.all()
    discharged = ctx.val("status") == "discharged"
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "referral_id"),
        *not_after_extract(ctx, "referral_date"),
        ValidationRule(
            "reasons: one or more allowed reasons separated by ';'",
            "reasons",
            "not_allowed_value",
            ok_when([ctx.present("reasons")], reasons_ok),
            detail="items trimmed, empty items ignored; " + ", ".join(f"`{r}`" for r in SP_REASONS),
        ),
        ValidationRule(
            "contact_attempts: >= 0",
            "contact_attempts",
            "out_of_range",
            ok_when([ctx.val("contact_attempts").is_not_null()], ctx.val("contact_attempts") >= 0),
        ),
        *not_after_extract(ctx, "first_contact_date"),
        ValidationRule(
            "discharge_date: required when status is discharged",
            "discharge_date",
            "missing_required",
            ok_when([discharged.fill_null(False)], ctx.present("discharge_date")),
        ),
        *not_after_extract(ctx, "discharge_date"),
    ]


rules, schema = table_schema(TABLE, extra_rules)
