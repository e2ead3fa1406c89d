"""Loader primitives shared by every definition file: one error, one ``need``, one id pattern.

Every problem in a definition file is a :class:`DefinitionError` naming the file and the
field path inside it (``criteria.all[2].value``), so a clinician editing the YAML is told
where to look.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

#: ids of definitions, events, segments and rules; also column names a rule may refer to
ID = re.compile(r"^[a-z][a-z0-9_]*$")


class DefinitionError(ValueError):
    """A definition file is missing, malformed or refers to something unknown."""

    def __init__(self, path: Path | str, field_path: str, problem: str):
        self.path, self.field_path, self.problem = Path(path), field_path, problem
        super().__init__(f"{path}: {field_path}: {problem}")


def read_yaml(path: Path | str) -> dict[str, Any]:
    """The top-level mapping of a YAML definition file."""
    path = Path(path)
    if not path.is_file():
        raise DefinitionError(path, "(file)", "not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DefinitionError(path, "(file)", f"is not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise DefinitionError(path, "(file)", "must be a mapping of fields")
    return data


def need(d: Any, key: str, path: Path | str, where: str = "", kind: type | tuple = object) -> Any:
    """``d[key]``, which must be present, not null or empty text, and of type ``kind``.

    ``where`` is the field path of ``d`` in the file (``""`` at the top level)."""
    field = f"{where}.{key}" if where else key
    if not isinstance(d, dict) or d.get(key) is None or d.get(key) == "":
        raise DefinitionError(path, field, "is required")
    value = d[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DefinitionError(path, field, f"must be {names}, got {value!r}")
    return value


def need_id(d: Any, key: str, path: Path | str, where: str = "") -> str:
    """A required lower_snake_case id (used in table and column names)."""
    value = need(d, key, path, where, str)
    if not ID.match(value):
        field = f"{where}.{key}" if where else key
        raise DefinitionError(
            path, field, f"must be lower_snake_case ({ID.pattern}), got {value!r}"
        )
    return value


def text(value: Any) -> str:
    """Folded YAML text as one line."""
    return " ".join(str(value).split())
