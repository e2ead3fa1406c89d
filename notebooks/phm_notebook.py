"""Where the notebooks read: the published read-only warehouse copy.

``PHM_WAREHOUSE`` names the file; without it, ``var/home/published/warehouse.duckdb`` (the
copy swapped in after each successful run), else ``var/home/warehouse.duckdb``. Always opened
read-only, so a notebook never blocks a pipeline run.
"""

from __future__ import annotations

import os
from pathlib import Path

from phm.warehouse import connect

REPO = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("PHM_HOME") or REPO / "var" / "home")


def warehouse_path() -> Path:
    if os.environ.get("PHM_WAREHOUSE"):
        return Path(os.environ["PHM_WAREHOUSE"])
    published = HOME / "published" / "warehouse.duckdb"
    return published if published.exists() else HOME / "warehouse.duckdb"


def open_warehouse():
    """A read-only DuckDB connection to the warehouse."""
    return connect(warehouse_path(), read_only=True)

