"""Dagster resources: where the extracts and the run's home are, and the DuckDB warehouse.

``phm run`` (:func:`pipelines.runner.run_pipeline`) points both at the run's workspace
``HOME/.run/<run_id>/`` and promotes it on success; a run started from the UI or the schedule
(``Settings.from_env``) writes in ``HOME`` itself. Either way the warehouse resource holds
the home's lock (``HOME/.lock``, :func:`phm.runhome.home_lock`) from the start of the run to
its end, so there is one run at a time per home, whoever starts it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from phm.paths import REPO_ROOT, exports_dir, warehouse_path
from phm.runhome import home_lock
from phm.warehouse import apply_settings

DEFAULT_EXTRACTS = REPO_ROOT / "var" / "extracts"
DEFAULT_HOME = REPO_ROOT / "var" / "home"


@dataclass(frozen=True)
class Settings:
    """Where a run reads and writes. From the environment (``PHM_EXTRACTS``, ``PHM_HOME``,
    ``PHM_DELIVERY``) or the ``phm run`` options. ``work``: the run's workspace, where its
    outputs go until promotion (None: write in ``home``)."""

    extracts_root: Path
    home: Path
    delivery: str | None = None
    work: Path | None = None

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            extracts_root=Path(os.environ.get("PHM_EXTRACTS") or DEFAULT_EXTRACTS).resolve(),
            home=Path(os.environ.get("PHM_HOME") or DEFAULT_HOME).resolve(),
            delivery=os.environ.get("PHM_DELIVERY") or None,
        )

    @property
    def output_root(self) -> Path:
        return self.work or self.home


PARTITION_TAG = "dagster/partition"


class PHMSettings(dg.ConfigurableResource):
    """The run's inputs and outputs: the extracts root, the delivery (latest complete one
    when empty), the home folder (last good state: models of earlier runs) and the output
    folder this run writes its exports and models to (the home, or the run's workspace)."""

    extracts_root: str
    home: str
    delivery: str = ""
    output: str = ""

    _partition_delivery: str = PrivateAttr(default="")

    @property
    def output_root(self) -> Path:
        return Path(self.output or self.home)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # a run launched for a partition of ``delivery`` (tag dagster/partition = extract
        # date) reads that delivery; an explicit, different delivery is refused
        run = context.dagster_run
        key = (run.tags or {}).get(PARTITION_TAG) if run is not None else None
        self._partition_delivery = key or ""

    @property
    def selected_delivery(self) -> str:
        """The delivery the run reads: the run's partition key, else ``delivery``, else ''
        (the latest complete delivery). Raises ValueError if both are set and differ."""
        key, pinned = self._partition_delivery, self.delivery
        if key and pinned and key != pinned:
            raise ValueError(
                f"this run is for the delivery partition {key} but its settings name delivery "
                f"{pinned} (run config resources.settings.config.delivery or PHM_DELIVERY): "
                "remove the delivery setting or launch the partition of that delivery"
            )
        return key or pinned

    def exports(self, extract_date: str) -> Path:
        path = exports_dir(self.output_root, extract_date)
        path.mkdir(parents=True, exist_ok=True)
        return path


class HomeWarehouse(DuckDBResource):
    """The DuckDB warehouse, holding the home's lock for the whole run, with the project's
    DuckDB settings (threads, memory_limit, temp_directory: phm.warehouse)."""

    home: str

    _stack: ExitStack | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._stack = ExitStack()
        self._stack.enter_context(home_lock(Path(self.home)))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

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
            output=str(settings.output_root),
        ),
        "warehouse": HomeWarehouse(
            database=str(warehouse_path(settings.output_root)), home=str(settings.home)
        ),
    }
