"""Where things live: the repository's reference data and a run's home folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
REFERENCE_DIR = DATA_DIR / "reference"


def codelist_dir() -> Path:
    """The code-list folder: ``PHM_CODELIST_DIR`` if set (a deployment's own), else the vendored one."""
    override = os.environ.get("PHM_CODELIST_DIR")
    return Path(override) if override else REFERENCE_DIR / "codelists"


def warehouse_path(home: Path) -> Path:
    return home / "warehouse.duckdb"


def exports_dir(home: Path, extract_date: str) -> Path:
    return home / "exports" / extract_date


def dagster_home(home: Path) -> Path:
    return home / "dagster"


def sidecar_dir(extracts_root: Path, extract_date: str) -> Path:
    """Generator sidecars (truth file, injected faults) live outside the delivery folder."""
    return extracts_root / "_sidecar" / extract_date


def lock_path(home: Path) -> Path:
    """The lock a run holds for its whole duration (one run at a time per home)."""
    return home / ".lock"


def run_root(home: Path) -> Path:
    """Workspaces of runs in progress: ``HOME/.run/<run_id>/`` (promoted on success)."""
    return home / ".run"


def published_path(home: Path) -> Path:
    """The readers' copy: the pseudonymised analytics mart of the last successful run."""
    return home / "published" / "warehouse.duckdb"
