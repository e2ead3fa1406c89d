"""Clinical definitions as data: reading, validating and loading them into the warehouse.

The definitions live in ``data/definitions/`` (LTC conditions, eFI deficits, measure texts)
and ``data/reference/hfrs/`` (HFRS weights); nothing clinical is a constant in code. This
module reads them, checks them against the code-list catalogue, writes them as
``reference.*`` tables for the SQL in the sibling modules, and renders the definition text
that asset descriptions show (:func:`describe`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from phm.codelists import CodelistSpec, read_catalogue
from phm.definitions import DefinitionError, need_id, read_yaml
from phm.imd import IMD2019_PATH
from phm.paths import DATA_DIR, REFERENCE_DIR
from phm.warehouse import write_table

DEFINITIONS_DIR = DATA_DIR / "definitions"
LTC_PATH = DEFINITIONS_DIR / "ltc_conditions.yaml"
EFI_PATH = DEFINITIONS_DIR / "efi_deficits.yaml"
MEASURES_PATH = DEFINITIONS_DIR / "measures.yaml"
HFRS_PATH = REFERENCE_DIR / "hfrs" / "hfrs_gilbert2018.csv"
IMD_PATH = IMD2019_PATH

CONDITION_TYPES = ("mental", "physical")
_BNF_PREFIX = re.compile(r"^[0-9A-Z]{2,15}$")
_ICD3 = re.compile(r"^[A-Z][0-9]{2}$")


# --------------------------------------------------------------------------------------
# LTC conditions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    on: str  # "latest" | "first"
    days: int


@dataclass(frozen=True)
class MedicationRule:
    bnf_prefixes: tuple[str, ...]
    days: int
    min_issues: int
    combine: str  # "and" | "or"
    #: issues whose BNF code starts with one of these never count (e.g. tricyclics, 040301)
    exclude_bnf_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LtcCondition:
    id: str
    name: str
    type: str
    barnett_2012: str | None
    diagnosis: tuple[str, ...]
    resolved: tuple[str, ...]
    window: Window | None
    medication: MedicationRule | None
    rule_source: str
    note: str
    #: counts toward the cohorts' "mental health condition" (type mental, not excluded by the
    #: file's ``mental_health_condition.exclude``, e.g. learning disability)
    mental_health_condition: bool = False


_read_yaml = read_yaml


def _need(d: dict, key: str, path: Path, where: str) -> Any:
    """``d[key]`` (required; null is missing). The shared loader's ``need`` treats empty
    text as missing too; here a value may be any YAML type."""
    field = f"{where}.{key}" if where else key
    if not isinstance(d, dict) or key not in d or d[key] is None:
        raise DefinitionError(path, field, "is required")
    return d[key]


def _check_codelists(
    ids: tuple[str, ...], catalogue: dict[str, CodelistSpec], path: Path, where: str
) -> None:
    unknown = [i for i in ids if i not in catalogue]
    if unknown:
        raise DefinitionError(
            path, where, f"code list(s) {', '.join(unknown)} not in the code-list catalogue"
        )


def load_ltc_conditions(
    path: Path | None = None, catalogue: dict[str, CodelistSpec] | None = None
) -> list[LtcCondition]:
    """Read and validate ``ltc_conditions.yaml``."""
    path = Path(path) if path is not None else LTC_PATH
    catalogue = catalogue if catalogue is not None else read_catalogue()
    data = _read_yaml(path)
    out: list[LtcCondition] = []
    seen: set[str] = set()
    for i, c in enumerate(_need(data, "conditions", path, "")):
        where = f"conditions[{i}]"
        cid = need_id(c, "id", path, where)
        if cid in seen:
            raise DefinitionError(path, f"{where}.id", f"duplicate id {cid!r}")
        seen.add(cid)
        ctype = _need(c, "type", path, where)
        if ctype not in CONDITION_TYPES:
            raise DefinitionError(path, f"{where}.type", f"{ctype!r} not one of {CONDITION_TYPES}")
        diagnosis = tuple(_need(c, "diagnosis", path, where))
        if not diagnosis:
            raise DefinitionError(path, f"{where}.diagnosis", "needs at least one code list")
        resolved = tuple(c.get("resolved") or ())
        _check_codelists(diagnosis + resolved, catalogue, path, where)
        if set(diagnosis) & set(resolved):
            raise DefinitionError(path, where, "a code list is both diagnosis and resolved")
        window = None
        if c.get("window"):
            w = c["window"]
            if w.get("applies_to") not in ("latest", "first") or int(w.get("days", 0)) < 1:
                raise DefinitionError(
                    path, f"{where}.window", "needs applies_to: latest|first and days >= 1"
                )
            window = Window(on=w["applies_to"], days=int(w["days"]))
        medication = None
        if c.get("medication"):
            m = c["medication"]
            mwhere = f"{where}.medication"
            prefixes = tuple(str(p) for p in _need(m, "bnf_prefixes", path, mwhere))
            bad = [p for p in prefixes if not _BNF_PREFIX.match(p)]
            if bad or not prefixes:
                raise DefinitionError(path, f"{mwhere}.bnf_prefixes", f"bad BNF prefix(es) {bad}")
            for p in prefixes:
                if any(q != p and q.startswith(p) for q in prefixes):
                    raise DefinitionError(
                        path, f"{mwhere}.bnf_prefixes", f"overlapping BNF prefixes ({p})"
                    )
            excludes = tuple(str(p) for p in (m.get("exclude_bnf_prefixes") or ()))
            bad = [p for p in excludes if not _BNF_PREFIX.match(p)]
            if bad:
                raise DefinitionError(
                    path, f"{mwhere}.exclude_bnf_prefixes", f"bad BNF prefix(es) {bad}"
                )
            outside = [x for x in excludes if not any(x.startswith(p) and x != p for p in prefixes)]
            if outside:
                raise DefinitionError(
                    path,
                    f"{mwhere}.exclude_bnf_prefixes",
                    f"{outside} not strictly inside an included prefix {list(prefixes)}",
                )
            combine = _need(m, "combine", path, mwhere)
            if combine not in ("and", "or"):
                raise DefinitionError(path, f"{mwhere}.combine", "must be 'and' or 'or'")
            medication = MedicationRule(
                bnf_prefixes=prefixes,
                days=int(_need(m, "days", path, mwhere)),
                min_issues=int(_need(m, "min_issues", path, mwhere)),
                combine=combine,
                exclude_bnf_prefixes=excludes,
            )
        out.append(
            LtcCondition(
                id=cid,
                name=str(_need(c, "name", path, where)),
                type=ctype,
                barnett_2012=c.get("barnett_2012"),
                diagnosis=diagnosis,
                resolved=resolved,
                window=window,
                medication=medication,
                rule_source=str(c.get("rule_source") or "").strip(),
                note=str(c.get("note") or "").strip(),
                mental_health_condition=ctype == "mental",
            )
        )
    mh = data.get("mental_health_condition") or {}
    if not isinstance(mh, dict):
        raise DefinitionError(path, "mental_health_condition", "must be a mapping")
    excluded = [str(x) for x in (mh.get("exclude") or ())]
    by_id = {c.id: c for c in out}
    for i, x in enumerate(excluded):
        if x not in by_id or by_id[x].type != "mental":
            raise DefinitionError(
                path,
                f"mental_health_condition.exclude[{i}]",
                f"{x!r} is not a condition of type mental",
            )
    return [replace(c, mental_health_condition=False) if c.id in excluded else c for c in out]


# --------------------------------------------------------------------------------------
# eFI
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EfiDeficit:
    id: str
    name: str
    codelist: str | None  # None for polypharmacy


@dataclass(frozen=True)
class Polypharmacy:
    id: str
    name: str
    min_distinct: int
    days: int
    bnf_chapters: tuple[str, ...]
    rule: str


@dataclass(frozen=True)
class EfiDefinition:
    deficits: tuple[EfiDeficit, ...]  # the 35 coded deficits
    polypharmacy: Polypharmacy
    denominator: int
    #: (category, min_count, max_count), in order
    categories: tuple[tuple[str, int, int], ...]
    deviations: tuple[str, ...]
    source: tuple[str, ...]

    @property
    def all_deficits(self) -> tuple[EfiDeficit, ...]:
        return (*self.deficits, EfiDeficit(self.polypharmacy.id, self.polypharmacy.name, None))


def load_efi_definition(
    path: Path | None = None, catalogue: dict[str, CodelistSpec] | None = None
) -> EfiDefinition:
    """Read and validate ``efi_deficits.yaml``."""
    path = Path(path) if path is not None else EFI_PATH
    catalogue = catalogue if catalogue is not None else read_catalogue()
    data = _read_yaml(path)
    deficits = []
    for i, d in enumerate(_need(data, "deficits", path, "")):
        where = f"deficits[{i}]"
        did = need_id(d, "id", path, where)
        cl = str(_need(d, "codelist", path, where))
        _check_codelists((cl,), catalogue, path, f"{where}.codelist")
        deficits.append(EfiDeficit(did, str(_need(d, "name", path, where)), cl))
    p = _need(data, "polypharmacy", path, "")
    poly = Polypharmacy(
        id=need_id(p, "id", path, "polypharmacy"),
        name=str(_need(p, "name", path, "polypharmacy")),
        min_distinct=int(_need(p, "min_distinct", path, "polypharmacy")),
        days=int(_need(p, "days", path, "polypharmacy")),
        bnf_chapters=tuple(str(c) for c in _need(p, "bnf_chapters", path, "polypharmacy")),
        rule=str(p.get("rule") or "").strip(),
    )
    ids = [d.id for d in deficits] + [poly.id]
    if len(set(ids)) != len(ids):
        raise DefinitionError(path, "deficits", "duplicate deficit ids")
    denominator = int(_need(data, "denominator", path, ""))
    if denominator != len(ids):
        raise DefinitionError(path, "denominator", f"{denominator} but {len(ids)} deficits defined")
    cats = tuple(
        (str(c["category"]), int(c["min_count"]), int(c["max_count"]))
        for c in _need(data, "categories", path, "")
    )
    expected_min = 0
    for name, lo, hi in cats:
        if lo != expected_min or hi < lo:
            raise DefinitionError(path, "categories", f"must tile 0..{denominator} ({name})")
        expected_min = hi + 1
    if expected_min != denominator + 1:
        raise DefinitionError(path, "categories", f"must end at {denominator}")
    return EfiDefinition(
        deficits=tuple(deficits),
        polypharmacy=poly,
        denominator=denominator,
        categories=cats,
        deviations=tuple(str(x).strip() for x in data.get("deviations") or ()),
        source=tuple(str(x).strip() for x in data.get("source") or ()),
    )


# --------------------------------------------------------------------------------------
# HFRS
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HfrsWeight:
    icd10_code: str
    weight: Decimal
    icd10_title: str


def load_hfrs_weights(path: Path | None = None) -> list[HfrsWeight]:
    """Read the Gilbert et al. 2018 table (``data/reference/hfrs/hfrs_gilbert2018.csv``)."""
    path = Path(path) if path is not None else HFRS_PATH
    if not path.is_file():
        raise DefinitionError(path, "(file)", "HFRS weights file not found")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for col in ("icd10_code", "weight", "icd10_title"):
            if col not in (reader.fieldnames or []):
                raise DefinitionError(path, col, "missing column")
        out = []
        for row in reader:
            code = row["icd10_code"].strip()
            if not _ICD3.match(code):
                raise DefinitionError(
                    path, f"line {reader.line_num}.icd10_code", f"bad ICD-10 code {code!r}"
                )
            out.append(HfrsWeight(code, Decimal(row["weight"].strip()), row["icd10_title"].strip()))
    if len({w.icd10_code for w in out}) != len(out):
        raise DefinitionError(path, "icd10_code", "duplicate ICD-10 codes")
    return out


# --------------------------------------------------------------------------------------
# Loading into the warehouse
# --------------------------------------------------------------------------------------


def required_codelists(
    conditions: list[LtcCondition] | None = None, efi: EfiDefinition | None = None
) -> list[str]:
    """Every code-list id the measures use, in a stable order."""
    conditions = conditions if conditions is not None else load_ltc_conditions()
    efi = efi if efi is not None else load_efi_definition()
    ids: list[str] = []
    for c in conditions:
        ids.extend(c.diagnosis + c.resolved)
    ids.extend(d.codelist for d in efi.deficits if d.codelist)
    return list(dict.fromkeys(ids))


def write_definition_tables(
    con: duckdb.DuckDBPyConnection,
    *,
    conditions: list[LtcCondition] | None = None,
    efi: EfiDefinition | None = None,
    hfrs: list[HfrsWeight] | None = None,
    schema: str = "reference",
) -> None:
    """Create (or replace) the definition tables the measure SQL reads.

    * ``reference.ltc_conditions(condition_id, condition_name, condition_type, barnett_2012,
      window_on, window_days, medication_bnf_prefixes, medication_days, medication_min_issues,
      medication_combine, medication_exclude_bnf_prefixes, mental_health_condition,
      rule_source, note)``
    * ``reference.ltc_condition_codelists(condition_id, role, codelist_id)`` — role
      ``diagnosis`` or ``resolved``
    * ``reference.efi_deficit_definitions(deficit_id, deficit_name, codelist_id)`` — 36 rows,
      polypharmacy with a null code list
    * ``reference.hfrs_weights(icd10_code, weight DECIMAL(3,1), icd10_title)``
    """
    conditions = conditions if conditions is not None else load_ltc_conditions()
    efi = efi if efi is not None else load_efi_definition()
    hfrs = hfrs if hfrs is not None else load_hfrs_weights()
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    cond_df = pl.DataFrame(
        [
            {
                "condition_id": c.id,
                "condition_name": c.name,
                "condition_type": c.type,
                "barnett_2012": c.barnett_2012,
                "window_on": c.window.on if c.window else None,
                "window_days": c.window.days if c.window else None,
                "medication_bnf_prefixes": list(c.medication.bnf_prefixes)
                if c.medication
                else None,
                "medication_days": c.medication.days if c.medication else None,
                "medication_min_issues": c.medication.min_issues if c.medication else None,
                "medication_combine": c.medication.combine if c.medication else None,
                "medication_exclude_bnf_prefixes": list(c.medication.exclude_bnf_prefixes)
                if c.medication
                else None,
                "mental_health_condition": c.mental_health_condition,
                "rule_source": c.rule_source,
                "note": c.note,
            }
            for c in conditions
        ],
        schema={
            "condition_id": pl.String,
            "condition_name": pl.String,
            "condition_type": pl.String,
            "barnett_2012": pl.String,
            "window_on": pl.String,
            "window_days": pl.Int32,
            "medication_bnf_prefixes": pl.List(pl.String),
            "medication_days": pl.Int32,
            "medication_min_issues": pl.Int32,
            "medication_combine": pl.String,
            "medication_exclude_bnf_prefixes": pl.List(pl.String),
            "mental_health_condition": pl.Boolean,
            "rule_source": pl.String,
            "note": pl.String,
        },
    )
    write_table(con, f"{schema}.ltc_conditions", cond_df)
    links = [
        {"condition_id": c.id, "role": role, "codelist_id": cl}
        for c in conditions
        for role, lists in (("diagnosis", c.diagnosis), ("resolved", c.resolved))
        for cl in lists
    ]
    write_table(
        con,
        f"{schema}.ltc_condition_codelists",
        pl.DataFrame(
            links, schema={"condition_id": pl.String, "role": pl.String, "codelist_id": pl.String}
        ),
    )
    write_table(
        con,
        f"{schema}.efi_deficit_definitions",
        pl.DataFrame(
            [
                {"deficit_id": d.id, "deficit_name": d.name, "codelist_id": d.codelist}
                for d in efi.all_deficits
            ],
            schema={"deficit_id": pl.String, "deficit_name": pl.String, "codelist_id": pl.String},
        ),
    )
    hfrs_df = pl.DataFrame(
        [
            {"icd10_code": w.icd10_code, "weight": str(w.weight), "icd10_title": w.icd10_title}
            for w in hfrs
        ],
        schema={"icd10_code": pl.String, "weight": pl.String, "icd10_title": pl.String},
    )
    write_table(con, f"{schema}.hfrs_weights", hfrs_df)
    # exact decimals: weights are published to one decimal place
    con.execute(
        f"CREATE OR REPLACE TABLE {schema}.hfrs_weights AS "
        f"SELECT icd10_code, CAST(weight AS DECIMAL(3,1)) AS weight, icd10_title "
        f"FROM {schema}.hfrs_weights ORDER BY weight DESC, icd10_code"
    )


# --------------------------------------------------------------------------------------
# Definition text
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _measures_yaml() -> dict[str, Any]:
    return _read_yaml(MEASURES_PATH)


def measure_tables() -> list[str]:
    """The measures tables that have a definition text."""
    return list(_measures_yaml()["tables"])


def describe(table: str) -> str:
    """Markdown definition of a measures table (e.g. for a Dagster asset description)."""
    tables = _measures_yaml()["tables"]
    if table not in tables:
        raise KeyError(f"no definition text for {table!r}; known: {', '.join(tables)}")
    t = tables[table]
    parts = [f"**{t['title']}**", "", " ".join(str(t["description"]).split())]
    if table in ("marts.ltc_registers", "marts.patient_measures"):
        conds = load_ltc_conditions()
        parts += ["", "Conditions:"]
        for c in conds:
            extra = []
            if c.window:
                extra.append(f"{c.window.on} code within {c.window.days} days")
            if c.medication:
                m = c.medication
                extra.append(
                    f"{m.combine} >= {m.min_issues} issue(s) of BNF "
                    f"{'/'.join(m.bnf_prefixes)}"
                    + (
                        f" except {'/'.join(m.exclude_bnf_prefixes)}"
                        if m.exclude_bnf_prefixes
                        else ""
                    )
                    + f" within {m.days} days"
                )
            if c.type == "mental" and not c.mental_health_condition:
                extra.append("not a mental health condition for the cohorts")
            lists = ", ".join(c.diagnosis) + (
                f"; resolved: {', '.join(c.resolved)}" if c.resolved else ""
            )
            parts.append(
                f"- `{c.id}` {c.name} ({c.type}): {lists}"
                + (f" [{'; '.join(extra)}]" if extra else "")
            )
    if table in ("marts.efi_deficits", "marts.efi", "marts.patient_measures"):
        efi = load_efi_definition()
        parts += ["", "eFI deficits: " + ", ".join(f"`{d.id}`" for d in efi.all_deficits) + "."]
    parts += ["", f"Definition source: `{t['source']}`; full documentation: `docs/measures.md`."]
    return "\n".join(parts)
