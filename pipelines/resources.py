"""Dagster resources: where the extracts and the run's home are, and the DuckDB warehouse."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from phm.paths import REPO_ROOT, exports_dir, warehouse_path
from phm.warehouse import apply_settings

DEFAULT_EXTRACTS = REPO_ROOT / "var" / "extracts"
DEFAULT_HOME = REPO_ROOT / "var" / "home"


@dataclass(frozen=True)
class Settings:
    """Where a run reads and writes. From the environment (``PHM_EXTRACTS``, ``PHM_HOME``,
    ``PHM_DELIVERY``) or the ``phm run`` options."""

    extracts_root: Path
    home: Path
    delivery: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            extracts_root=Path(os.environ.get("PHM_EXTRACTS") or DEFAULT_EXTRACTS).resolve(),
            home=Path(os.environ.get("PHM_HOME") or DEFAULT_HOME).resolve(),
            delivery=os.environ.get("PHM_DELIVERY") or None,
        )


class PHMSettings(dg.ConfigurableResource):
    """The run's inputs and outputs: the extracts root, the delivery (latest complete one
    when empty) and the home folder holding the warehouse and the exports."""

    extracts_root: str
    home: str
    delivery: str = ""

    def exports(self, extract_date: str) -> Path:
        path = exports_dir(Path(self.home), extract_date)
        path.mkdir(parents=True, exist_ok=True)
        return path


class WarehouseResource(DuckDBResource):
    """The warehouse connection with the project's DuckDB settings (phm.warehouse)."""

    @contextmanager
    def get_connection(self):
        with super().get_connection() as con:
            apply_settings(con, self.database)
            yield con


def build_resources(settings: Settings) -> dict:
    return {
        "settings": PHMSettings(
            extracts_root=str(settings.extracts_root),
            home=str(settings.home),
            delivery=settings.delivery or "",
        ),
        "warehouse": WarehouseResource(database=str(warehouse_path(settings.home))),
    }
