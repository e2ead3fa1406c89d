"""Which way imports go: the orchestration (``pipelines/``: Dagster, the ``phm`` command, the
runner, the benchmark) uses the domain packages, never the reverse; the synthetic data
generator (``phm.synth``) is used by the command and the tests only.

Reads every module's import statements (top level and inside functions) with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from phm.paths import REPO_ROOT

DOMAIN_PACKAGES = ("phm", "segmentation", "geo", "schemas")
GENERATOR = "phm.synth"


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = REPO_ROOT) -> set[str]:
    """Absolute names of the modules a file imports (``from a import b`` gives ``a`` and
    ``a.b``, since ``b`` may be a module); relative imports are resolved."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = path.relative_to(root).parts[: -node.level]
                base = ".".join((*package, base) if base else package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def is_orchestration(name: str) -> bool:
    top = name.split(".")[0]
    return top in ("pipelines", "dagster") or top.startswith("dagster_")


def is_generator(name: str) -> bool:
    return name == GENERATOR or name.startswith(GENERATOR + ".")


def domain_files() -> list[Path]:
    return [p for pkg in DOMAIN_PACKAGES for p in sorted((REPO_ROOT / pkg).rglob("*.py"))]


def test_imported_modules_sees_every_form_of_import(tmp_path):
    (tmp_path / "phm" / "x").mkdir(parents=True)
    f = tmp_path / "phm" / "x" / "m.py"
    f.write_text(
        "import dagster as dg\n"
        "from dagster_duckdb import DuckDBResource\n"
        "from pipelines.runner import run_pipeline\n"
        "def f():\n"
        "    from phm import synth\n"
        "    from . import sibling\n"
        "    from ..contract import TABLES\n"
    )
    names = imported_modules(f, tmp_path)
    assert {"dagster", "pipelines.runner", "phm.synth", "phm.x.sibling", "phm.contract"} <= names
    assert {n for n in names if is_orchestration(n)} == {
        "dagster",
        "dagster_duckdb",
        "dagster_duckdb.DuckDBResource",
        "pipelines.runner",
        "pipelines.runner.run_pipeline",
    }
    assert {n for n in names if is_generator(n)} == {"phm.synth"}
    assert module_name(f, tmp_path) == "phm.x.m"


def test_domain_packages_never_import_pipelines_or_dagster():
    files = domain_files()
    assert len(files) > 20
    bad = {
        module_name(p): sorted(n for n in imported_modules(p) if is_orchestration(n)) for p in files
    }
    assert {m: names for m, names in bad.items() if names} == {}


def test_only_the_generator_itself_imports_the_generator():
    bad = {
        module_name(p): sorted(n for n in imported_modules(p) if is_generator(n))
        for p in domain_files()
        if not is_generator(module_name(p))
    }
    assert {m: names for m, names in bad.items() if names} == {}
