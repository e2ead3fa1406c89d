"""Every notebook in notebooks/ runs top to bottom (nbclient, the venv's python3 kernel)
against a small generated home, and any cell error fails the test."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from phm.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_are_committed_without_outputs():
    assert len(NOTEBOOKS) >= 5
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        outputs = [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")]
        assert not outputs, f"{path.name}: clear the outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, small_home, monkeypatch):
    _, home = small_home
    monkeypatch.setenv("PHM_HOME", str(home))
    monkeypatch.setenv("PHM_WAREHOUSE", str(Path(home) / "warehouse.duckdb"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code)
