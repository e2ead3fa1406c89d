"""Asset metadata shared by the asset modules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg


def markdown_table(
    headers: tuple[str, str], rows: Mapping[str, object] | Iterable[tuple[str, object]]
) -> dg.MetadataValue:
    """A two-column Markdown table (name, right-aligned value) for asset metadata.

    ``rows`` is a mapping or (name, value) pairs, shown in the order given; floats are shown
    to one decimal place. Values must be counts or timings, never patient identifiers.
    """
    items = rows.items() if isinstance(rows, Mapping) else rows
    lines = [f"| {headers[0]} | {headers[1]} |", "|---|---:|"]
    for name, value in items:
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        lines.append(f"| {name} | {shown} |")
    return dg.MetadataValue.md("\n".join(lines))
