"""Statistical disclosure control: the one function every published count passes through.

Default rule, as NHS Digital (now NHS England) applies to sub-national Hospital Episode
Statistics: counts from 1 to 7 are suppressed (shown as ``*``) and every other count is
rounded to the nearest 5; zero stays zero. Rates built on fewer than ``min_rate_events``
events are not shown (OHID Fingertips convention: fewer than 10).

Configure with ``PHM_SDC_SUPPRESS_MAX`` (default 7), ``PHM_SDC_ROUND_TO`` (default 5) and
``PHM_SDC_MIN_RATE_EVENTS`` (default 10).

Source: NHS Digital, "Hospital Episode Statistics (HES) Analysis Guide", section on
protecting patient confidentiality (suppression of 1-7, rounding to the nearest 5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import polars as pl

SUPPRESSED = "*"


@dataclass(frozen=True)
class DisclosurePolicy:
    suppress_max: int = 7
    round_to: int = 5
    min_rate_events: int = 10

    @classmethod
    def from_env(cls) -> DisclosurePolicy:
        return cls(
            suppress_max=int(os.environ.get("PHM_SDC_SUPPRESS_MAX", 7)),
            round_to=int(os.environ.get("PHM_SDC_ROUND_TO", 5)),
            min_rate_events=int(os.environ.get("PHM_SDC_MIN_RATE_EVENTS", 10)),
        )


def _rounded(expr: pl.Expr, base: int) -> pl.Expr:
    # round half up to the nearest `base` (polars' round is half-to-even on floats)
    if base <= 1:
        return expr.cast(pl.Int64)
    return ((expr.cast(pl.Int64) + base // 2) // base * base).cast(pl.Int64)


def protect_count(expr: pl.Expr, policy: DisclosurePolicy | None = None) -> pl.Expr:
    """A published count as text: ``*`` for 1..suppress_max, else rounded; null stays null."""
    p = policy or DisclosurePolicy.from_env()
    out = (
        pl.when(expr.is_null())
        .then(pl.lit(None, pl.String))
        .when((expr >= 1) & (expr <= p.suppress_max))
        .then(pl.lit(SUPPRESSED))
        .otherwise(_rounded(expr, p.round_to).cast(pl.String))
    )
    return _keep_name(out, expr)


def _keep_name(out: pl.Expr, source: pl.Expr) -> pl.Expr:
    try:
        return out.alias(source.meta.output_name())
    except pl.exceptions.ComputeError:
        return out


def protect_rate(rate: pl.Expr, events: pl.Expr, policy: DisclosurePolicy | None = None) -> pl.Expr:
    """A rate (or its interval bound), null where it rests on fewer than min_rate_events."""
    p = policy or DisclosurePolicy.from_env()
    return _keep_name(pl.when(events >= p.min_rate_events).then(rate).otherwise(pl.lit(None)), rate)


def protect_value(n: int | None, policy: DisclosurePolicy | None = None) -> str | None:
    """One count, e.g. for Dagster metadata."""
    return pl.select(protect_count(pl.lit(n, pl.Int64), policy)).item()
