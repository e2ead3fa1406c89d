"""SNOMED CT code lists: catalogue, validated loading and the warehouse reference tables.

Which lists exist, where their files are, their version, publisher and licence status is
DATA, in ``data/definitions/codelists.csv`` (the *catalogue*). The files themselves live in
:func:`phm.paths.codelist_dir` (the vendored ``data/reference/codelists`` unless
``PHM_CODELIST_DIR`` points a deployment at its own folder with the same layout; a
deployment whose lists differ can also supply its own catalogue through
``PHM_CODELIST_CATALOGUE``). ``data/reference/codelists/README.md`` says which list is used
for what.

Every code is checked on load as a SNOMED CT *concept* identifier (SCTID):

* digits only, 6 to 18 of them, no leading zero;
* partition identifier (2nd and 3rd digits from the right) ``00`` or ``10`` (a concept,
  core or extension; ``01``/``11`` would be a description id, ``02``/``12`` a relationship);
* the last digit is the Verhoeff check digit of the others.

Float-formatted ids (``195136004.0``, written by a spreadsheet or by pandas reading the
column as floats) are **repaired** (the ``.0`` removed) only when the integer part has at
most 11 digits and then passes the checks above; otherwise they are **dropped**. Spreadsheet
software shows numbers of 12 or more digits in scientific notation and keeps at most 15
significant digits, so a long float-formatted id may have been truncated before the ``.0``
was added; ``INVALID_SCTIDS.csv`` shows exactly that (``882421000000000.0`` passes the
check digit by chance but is a truncated UK-extension id). Ids of up to 11 digits survive
both, so removing ``.0`` from them is lossless. Every repaired or dropped row is recorded
(list, file, line, raw value, reason) and counted; nothing is dropped silently.

Residual risk, stated honestly: a truncated id that is *not* float-formatted passes the check
digit by chance about one time in ten and cannot be detected here. The affected files
(``INVALID_SCTIDS.csv``) are lists the measures do not use.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from phm.codes import (  # noqa: F401 (re-exported: the generator and tests use them from here)
    CONCEPT_PARTITIONS,
    is_valid_sctid,
    sctid_problem,
    verhoeff_digit,
    verhoeff_is_valid,
)
from phm.paths import DATA_DIR, codelist_dir
from phm.warehouse import write_table

#: the catalogue of code lists shipped with the repository
DEFAULT_CATALOGUE = DATA_DIR / "definitions" / "codelists.csv"
CATALOGUE_ENV = "PHM_CODELIST_CATALOGUE"

CATALOGUE_COLUMNS = (
    "codelist_id",
    "path",
    "format",
    "code_column",
    "term_column",
    "version",
    "source",
    "publisher",
    "licence",
    "description",
)
FORMATS = ("csv", "tsv", "tsv_noheader")

#: longest integer part of a float-formatted id that is repaired rather than dropped
MAX_REPAIRABLE_FLOAT_DIGITS = 11

REFERENCE_SCHEMA = "reference"


class CodelistError(Exception):
    """A code list, its file, or a column in it is missing or malformed."""


# --------------------------------------------------------------------------------------
# SNOMED CT identifier checks
# --------------------------------------------------------------------------------------

_FLOAT = re.compile(r"^([0-9]+)\.0+$")


def clean_sctid(raw: str) -> tuple[str | None, str]:
    """Validate one raw code from a list file.

    Returns ``(code, "ok")``, ``(code, "repaired_float")`` or ``(None, "<reason>")`` where the
    reason is ``float_<problem>``/``float_too_long`` for float-formatted values, else one of
    :func:`sctid_problem`'s answers.
    """
    code = raw.strip().strip('"').strip()
    m = _FLOAT.match(code)
    if m:
        integer = m.group(1)
        if len(integer) > MAX_REPAIRABLE_FLOAT_DIGITS:
            return None, "float_too_long"
        problem = sctid_problem(integer)
        if problem:
            return None, f"float_{problem}"
        return integer, "repaired_float"
    problem = sctid_problem(code)
    if problem:
        return None, problem
    return code, "ok"


# --------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodelistSpec:
    codelist_id: str
    path: str
    format: str
    code_column: str
    term_column: str
    version: str
    source: str
    publisher: str
    licence: str
    description: str


def catalogue_path() -> Path:
    """The catalogue in use: ``PHM_CODELIST_CATALOGUE`` if set, else the repository's."""
    override = os.environ.get(CATALOGUE_ENV)
    return Path(override) if override else DEFAULT_CATALOGUE


def read_catalogue(path: Path | None = None) -> dict[str, CodelistSpec]:
    """Read the code-list catalogue CSV; clear errors for a missing file, column or bad row."""
    path = Path(path) if path is not None else catalogue_path()
    if not path.is_file():
        raise CodelistError(f"code-list catalogue not found: {path}")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in CATALOGUE_COLUMNS if c not in header]
        if missing:
            raise CodelistError(
                f"code-list catalogue {path}: missing column(s) {', '.join(missing)} "
                f"(has: {', '.join(header)})"
            )
        specs: dict[str, CodelistSpec] = {}
        for row in reader:
            spec = CodelistSpec(**{c: (row[c] or "").strip() for c in CATALOGUE_COLUMNS})
            where = f"code-list catalogue {path}, line {reader.line_num}"
            if not spec.codelist_id:
                raise CodelistError(f"{where}: empty codelist_id")
            if spec.codelist_id in specs:
                raise CodelistError(f"{where}: duplicate codelist_id {spec.codelist_id!r}")
            if spec.format not in FORMATS:
                raise CodelistError(
                    f"{where}: codelist {spec.codelist_id!r} has format {spec.format!r}; "
                    f"expected one of {', '.join(FORMATS)}"
                )
            if spec.format != "tsv_noheader" and not spec.code_column:
                raise CodelistError(f"{where}: codelist {spec.codelist_id!r} needs code_column")
            specs[spec.codelist_id] = spec
    return specs


# --------------------------------------------------------------------------------------
# Reading list files
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodelistIssue:
    """A code that was repaired or dropped on load."""

    codelist_id: str
    path: str
    line: int
    raw_code: str
    action: str  # "repaired" | "dropped"
    reason: str


@dataclass
class Codelist:
    spec: CodelistSpec
    #: valid code -> term (first term seen for a code listed more than once)
    codes: dict[str, str]
    file_sha256: str
    rows_read: int = 0
    blank_rows: int = 0
    duplicate_rows: int = 0
    issues: list[CodelistIssue] = field(default_factory=list)

    @property
    def repaired(self) -> int:
        return sum(1 for i in self.issues if i.action == "repaired")

    @property
    def dropped(self) -> int:
        return sum(1 for i in self.issues if i.action == "dropped")

    def counts(self) -> dict[str, int]:
        return {
            "rows_read": self.rows_read,
            "codes_loaded": len(self.codes),
            "repaired": self.repaired,
            "dropped": self.dropped,
            "duplicate_rows": self.duplicate_rows,
            "blank_rows": self.blank_rows,
        }


def _iter_rows(spec: CodelistSpec, file: Path) -> Iterable[tuple[int, str, str]]:
    """Yield (line number, raw code, term) from a list file; errors name file and column."""
    text = file.read_text(encoding="utf-8-sig")
    if spec.format == "csv":
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        for col in (spec.code_column, spec.term_column):
            if col and col not in header:
                raise CodelistError(
                    f"codelist {spec.codelist_id!r}: file {file} has no column {col!r} "
                    f"(columns: {', '.join(header)})"
                )
        for row in reader:
            yield (
                reader.line_num,
                row.get(spec.code_column) or "",
                (row.get(spec.term_column) or "") if spec.term_column else "",
            )
        return
    # tab-separated, read line by line (physical line numbers; no quote processing, as
    # published: a few terms carry stray quotes)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    start = 0
    code_i, term_i = 0, 1
    if spec.format == "tsv":
        header = [h.strip() for h in lines[0].rstrip("\r").split("\t")] if lines else []
        for col in (spec.code_column, spec.term_column):
            if col and col not in header:
                raise CodelistError(
                    f"codelist {spec.codelist_id!r}: file {file} has no column {col!r} "
                    f"(header: {', '.join(header)})"
                )
        code_i = header.index(spec.code_column)
        term_i = header.index(spec.term_column) if spec.term_column else -1
        start = 1
    for n, line in enumerate(lines[start:], start=start + 1):
        fields = line.rstrip("\r").split("\t")
        code = fields[code_i] if code_i < len(fields) else ""
        term = fields[term_i] if 0 <= term_i < len(fields) else ""
        yield n, code, term.strip().strip('"')


def read_codelist(spec: CodelistSpec, directory: Path | None = None) -> Codelist:
    """Read and validate one list file (see the module docstring for the rules)."""
    directory = Path(directory) if directory is not None else codelist_dir()
    file = directory / spec.path
    if not file.is_file():
        raise CodelistError(
            f"codelist {spec.codelist_id!r}: file not found: {file} "
            f"(code-list folder {directory}; set PHM_CODELIST_DIR to use another)"
        )
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    result = Codelist(spec=spec, codes={}, file_sha256=sha)
    for line, raw, term in _iter_rows(spec, file):
        if not raw.strip() and not term.strip():
            result.blank_rows += 1
            continue
        result.rows_read += 1
        code, status = clean_sctid(raw)
        if code is None:
            result.issues.append(
                CodelistIssue(spec.codelist_id, spec.path, line, raw, "dropped", status)
            )
            continue
        if status == "repaired_float":
            result.issues.append(
                CodelistIssue(spec.codelist_id, spec.path, line, raw, "repaired", status)
            )
        if code in result.codes:
            result.duplicate_rows += 1
            continue
        result.codes[code] = term.strip()
    return result


def load_codelists(
    ids: Iterable[str] | None = None,
    *,
    directory: Path | None = None,
    catalogue: Path | Mapping[str, CodelistSpec] | None = None,
) -> dict[str, Codelist]:
    """Read the catalogued lists (all, or ``ids``); a missing list id or file is an error."""
    specs = catalogue if isinstance(catalogue, Mapping) else read_catalogue(catalogue)
    wanted = list(specs) if ids is None else list(dict.fromkeys(ids))
    unknown = [i for i in wanted if i not in specs]
    if unknown:
        raise CodelistError(
            f"code list(s) not in the catalogue: {', '.join(unknown)} "
            f"(catalogue {catalogue if catalogue is not None else catalogue_path()})"
        )
    return {i: read_codelist(specs[i], directory) for i in wanted}


# --------------------------------------------------------------------------------------
# Warehouse
# --------------------------------------------------------------------------------------


@dataclass
class CodelistLoadReport:
    """What :func:`write_codelists` loaded, repaired and dropped."""

    lists: dict[str, dict[str, int]]
    issues: list[CodelistIssue]

    @property
    def codes_loaded(self) -> int:
        return sum(c["codes_loaded"] for c in self.lists.values())

    @property
    def repaired(self) -> int:
        return sum(c["repaired"] for c in self.lists.values())

    @property
    def dropped(self) -> int:
        return sum(c["dropped"] for c in self.lists.values())

    def dropped_by_reason(self) -> dict[str, int]:
        return dict(Counter(i.reason for i in self.issues if i.action == "dropped"))

    def summary(self) -> str:
        return (
            f"{len(self.lists)} code lists, {self.codes_loaded} codes loaded, "
            f"{self.repaired} float-formatted ids repaired, {self.dropped} damaged ids dropped"
        )


def write_codelists(
    con: duckdb.DuckDBPyConnection,
    ids: Iterable[str] | None = None,
    *,
    directory: Path | None = None,
    catalogue: Path | Mapping[str, CodelistSpec] | None = None,
    schema: str = REFERENCE_SCHEMA,
) -> CodelistLoadReport:
    """Load code lists into the warehouse, replacing the previous load.

    Creates (or replaces):

    * ``<schema>.codelists(codelist_id, code, term, source, version)`` — one row per valid
      code per list;
    * ``<schema>.codelist_catalogue(codelist_id, path, format, source, publisher, version,
      licence, description, file_sha256, rows_read, codes_loaded, repaired, dropped,
      duplicate_rows)``;
    * ``<schema>.codelist_issues(codelist_id, path, line, raw_code, action, reason)`` — every
      repaired or dropped row.

    Returns the counts (per list and in total).
    """
    lists = load_codelists(ids, directory=directory, catalogue=catalogue)
    code_rows: dict[str, list] = {
        k: [] for k in ("codelist_id", "code", "term", "source", "version")
    }
    cat_rows: list[dict] = []
    issues: list[CodelistIssue] = []
    for cid, cl in lists.items():
        for code, term in cl.codes.items():
            code_rows["codelist_id"].append(cid)
            code_rows["code"].append(code)
            code_rows["term"].append(term)
            code_rows["source"].append(cl.spec.source)
            code_rows["version"].append(cl.spec.version)
        s = cl.spec
        cat_rows.append(
            {
                "codelist_id": cid,
                "path": s.path,
                "format": s.format,
                "source": s.source,
                "publisher": s.publisher,
                "version": s.version,
                "licence": s.licence,
                "description": s.description,
                "file_sha256": cl.file_sha256,
                **{
                    k: v
                    for k, v in cl.counts().items()
                    if k in ("rows_read", "codes_loaded", "repaired", "dropped", "duplicate_rows")
                },
            }
        )
        issues.extend(cl.issues)

    codes_df = pl.DataFrame(code_rows, schema={k: pl.String for k in code_rows})
    cat_df = pl.DataFrame(cat_rows)
    issue_df = pl.DataFrame(
        [i.__dict__ for i in issues],
        schema={
            "codelist_id": pl.String,
            "path": pl.String,
            "line": pl.Int64,
            "raw_code": pl.String,
            "action": pl.String,
            "reason": pl.String,
        },
    )
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    write_table(con, f"{schema}.codelists", codes_df.sort("codelist_id", "code"))
    write_table(con, f"{schema}.codelist_catalogue", cat_df)
    write_table(con, f"{schema}.codelist_issues", issue_df)
    return CodelistLoadReport(lists={cid: cl.counts() for cid, cl in lists.items()}, issues=issues)
