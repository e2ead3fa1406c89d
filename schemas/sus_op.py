"""sus_op: hospital outpatient appointments."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import pandera.polars as pa

from phm.contract import TABLES
from schemas._base import (
    Rule,
    RuleContext,
    build,
    nhs_number_rules,
    not_after_extract,
    pattern_rule,
    unique_first_wins,
)

TABLE = TABLES["sus_op"]


def extra_rules(ctx: RuleContext) -> list[Rule]:
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "appointment_id"),
        *not_after_extract(ctx, "appointment_date"),
        *pattern_rule(ctx, "treatment_function_code", r"^[0-9]{3}$", "3 digits"),
    ]


def rules(extract_date: date, refs: Mapping[str, object] | None = None) -> list[Rule]:
    """Every rule of this table, in contract column order."""
    return build(TABLE, extra_rules, extract_date, refs)[0]


def schema(extract_date: date, refs: Mapping[str, object] | None = None) -> pa.DataFrameSchema:
    """The pandera polars schema over this table's check frame."""
    return build(TABLE, extra_rules, extract_date, refs)[1]
