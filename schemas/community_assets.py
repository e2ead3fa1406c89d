"""community_assets: services people can be connected to (voluntary, community, statutory)."""

from __future__ import annotations

from phm.contract import TABLES
from schemas._base import (
    RuleContext,
    ValidationRule,
    between,
    lsoa_rule,
    table_schema,
    unique_first_wins,
)

TABLE = TABLES["community_assets"]

#: England's bounding box in WGS84, with a small margin: Isles of Scilly (-6.45, 49.86) to
#: Lowestoft Ness (1.76) and Marshall Meadows Bay (55.81)
LATITUDE = (49.8, 55.9)
LONGITUDE = (-6.5, 1.8)


def extra_rules(ctx: RuleContext) -> list[ValidationRule]:
    return [
        *unique_first_wins(ctx, "asset_id"),
        *between(
            ctx, "latitude", *LATITUDE, what=f"within England ({LATITUDE[0]} to {LATITUDE[1]})"
        ),
        *between(
            ctx, "longitude", *LONGITUDE, what=f"within England ({LONGITUDE[0]} to {LONGITUDE[1]})"
        ),
        *lsoa_rule(ctx),
    ]


rules, schema = table_schema(TABLE, extra_rules)
