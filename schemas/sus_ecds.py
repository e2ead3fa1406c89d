"""sus_ecds: emergency department attendances (ECDS)."""

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
    provider_code_rule,
    snomed_rule,
    unique_first_wins,
)

TABLE = TABLES["sus_ecds"]


def extra_rules(ctx: RuleContext) -> list[Rule]:
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "attendance_id"),
        *provider_code_rule(ctx),
        *not_after_extract(ctx, "arrival_datetime"),
        *snomed_rule(ctx, "chief_complaint_snomed"),
    ]


def rules(extract_date: date, refs: Mapping[str, object] | None = None) -> list[Rule]:
    """Every rule of this table, in contract column order."""
    return build(TABLE, extra_rules, extract_date, refs)[0]


def schema(extract_date: date, refs: Mapping[str, object] | None = None) -> pa.DataFrameSchema:
    """The pandera polars schema over this table's check frame."""
    return build(TABLE, extra_rules, extract_date, refs)[1]
