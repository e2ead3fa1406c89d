"""ppn: police Public Protection Notifications shared with the practice."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import pandera.polars as pa

from phm.contract import TABLES
from schemas._base import (
    Rule,
    RuleContext,
    build,
    date_order,
    nhs_number_rules,
    not_after_extract,
    unique_first_wins,
)

TABLE = TABLES["ppn"]


def extra_rules(ctx: RuleContext) -> list[Rule]:
    return [
        *nhs_number_rules(ctx),
        *unique_first_wins(ctx, "ppn_id"),
        *not_after_extract(ctx, "incident_date"),
        *not_after_extract(ctx, "shared_date"),
        *date_order(ctx, "shared_date", "incident_date"),
    ]


def rules(extract_date: date, refs: Mapping[str, object] | None = None) -> list[Rule]:
    """Every rule of this table, in contract column order."""
    return build(TABLE, extra_rules, extract_date, refs)[0]


def schema(extract_date: date, refs: Mapping[str, object] | None = None) -> pa.DataFrameSchema:
    """The pandera polars schema over this table's check frame."""
    return build(TABLE, extra_rules, extract_date, refs)[1]
