"""gp_events: the coded clinical record (diagnoses, symptoms, findings, procedures, invitations)."""

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
    practice_code_rules,
    snomed_rule,
)

TABLE = TABLES["gp_events"]


def extra_rules(ctx: RuleContext) -> list[Rule]:
    return [
        *nhs_number_rules(ctx),
        *not_after_extract(ctx, "event_date"),
        *snomed_rule(ctx, "snomed_code"),
        *practice_code_rules(ctx),
    ]


def rules(extract_date: date, refs: Mapping[str, object] | None = None) -> list[Rule]:
    """Every rule of this table, in contract column order."""
    return build(TABLE, extra_rules, extract_date, refs)[0]


def schema(extract_date: date, refs: Mapping[str, object] | None = None) -> pa.DataFrameSchema:
    """The pandera polars schema over this table's check frame."""
    return build(TABLE, extra_rules, extract_date, refs)[1]
