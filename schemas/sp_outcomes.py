"""sp_outcomes: patient-reported outcome scores around a social prescribing referral."""

from __future__ import annotations

import polars as pl

from phm.contract import SP_MEASURE_RANGES, TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    exists_in,
    not_after_extract,
    ok_when,
    table_schema,
)

TABLE = TABLES["sp_outcomes"]


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    measure, score = ctx.val("measure"), ctx.val("score")
    low = measure.replace_strict(
        {m: lo for m, (lo, _) in SP_MEASURE_RANGES.items()}, default=None, return_dtype=pl.Float64
    )
    high = measure.replace_strict(
        {m: hi for m, (_, hi) in SP_MEASURE_RANGES.items()}, default=None, return_dtype=pl.Float64
    )
    return [
        *exists_in(ctx, "referral_id", "sp_referrals"),
        ValidationRule(
            "score: within the measure's range",
            "score",
            "out_of_range",
            ok_when([score.is_not_null(), low.is_not_null()], score.is_between(low, high)),
            detail="; ".join(f"{m} {lo:g}-{hi:g}" for m, (lo, hi) in SP_MEASURE_RANGES.items())
            + " (inclusive; judged once measure is known)",
        ),
        *not_after_extract(ctx, "recorded_date"),
    ]


rules, schema = table_schema(TABLE, extra_rules)
