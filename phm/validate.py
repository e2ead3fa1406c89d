"""Validate raw tables against the data contract: staging (valid, typed) and quarantine.

Pure functions, no Dagster. For one table::

    result = validate_table("gp_events", raw, extract_date, {"practices": practice_codes})
    result.staging      # valid rows, typed per the contract, contract columns + _row_number
    result.quarantine   # invalid rows as delivered + table_name, delivery_date, failed_rules
    result.rule_counts  # rule name -> rows that broke it (every rule of the table, 0 included)

How: the raw strings are parsed once, vectorised (:func:`schemas.check_frame`); the table's
pandera polars schema (:func:`schemas.schema_for`, one named ``Check`` per contract rule)
validates that eager frame lazily (every check runs over the data, with validation depth
forced to ``SCHEMA_AND_DATA`` whatever the environment says); ``SchemaErrors.failure_cases``
gives (row index, rule) for every failure, which becomes each quarantined row's
``failed_rules``. Every raw row ends up in exactly one of staging and quarantine.

Cross-table rules (``practice_code exists in practices``, ``referral_id exists in
sp_referrals``) are checked against the keys *delivered* in the referenced raw table
(:func:`reference_keys`), so a bad row in one table never cascades into another.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

import schemas
from phm.contract import OPTIONAL_COLUMNS, TABLE_NAMES, TABLES
from schemas._base import (
    ROW_NUMBER,
    MissingColumnsError,
    check_frame,
    normalise_keys,
    staging_columns,
)
from schemas._base import normalise_icd10 as _normalise_icd10

__all__ = [
    "QUARANTINE_COLUMNS",
    "MissingColumnsError",
    "ValidationResult",
    "WarehouseValidation",
    "data_quality_markdown",
    "data_quality_summary",
    "missing_v2_fields",
    "normalise_icd10",
    "reference_keys",
    "validate_delivery",
    "validate_in_warehouse",
    "validate_table",
]

#: the columns quarantine adds in front of the delivered columns
QUARANTINE_COLUMNS = ("table_name", "delivery_date", ROW_NUMBER, "failed_rules")


def normalise_icd10(code: pl.Expr | str) -> pl.Expr:
    """ICD-10 in any form SUS sends (``I50.0``, ``I50X``, ``F00.0*``, ``E119-``) -> the
    contract's 4-character form without dot or marks (``I500``, ``I50``, ``F000``, ``E119``);
    3-character codes stay 3 characters; null for anything that is not an ICD-10 code.
    """
    return _normalise_icd10(pl.col(code) if isinstance(code, str) else code)


class _Counts:
    """``rows_delivered`` and ``counts`` of a validation result, from its accepted and
    quarantined row counts (the two result classes below)."""

    rows_accepted: int
    rows_quarantined: int

    @property
    def rows_delivered(self) -> int:
        return self.rows_accepted + self.rows_quarantined

    @property
    def counts(self) -> dict[str, int]:
        return {
            "rows_delivered": self.rows_delivered,
            "rows_accepted": self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
        }


@dataclass(frozen=True)
class ValidationResult(_Counts):
    table: str
    extract_date: date
    staging: pl.DataFrame
    quarantine: pl.DataFrame
    #: rule name -> number of rows that broke it (all rules of the table, in rule order)
    rule_counts: dict[str, int] = field(default_factory=dict)
    #: optional (v2) contract columns the delivered table lacked (validated as null)
    missing_columns: tuple[str, ...] = ()

    @property
    def rows_accepted(self) -> int:
        return self.staging.height

    @property
    def rows_quarantined(self) -> int:
        return self.quarantine.height


# --------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------


def reference_keys(raw_tables: Mapping[str, pl.DataFrame]) -> dict[str, pl.Series]:
    """The keys delivered in each referenced table (trimmed, distinct), from the raw frames.

    Returns e.g. ``{"practices": <practice codes>, "sp_referrals": <referral ids>}`` for the
    referenced tables present in ``raw_tables``.
    """
    out: dict[str, pl.Series] = {}
    for ref, key in schemas.REFERENCED_KEYS.items():
        if ref in raw_tables and key in raw_tables[ref].columns:
            out[ref] = normalise_keys(raw_tables[ref][key])
    return out


def warehouse_reference_keys(con, table: str) -> dict[str, pl.Series]:
    """The keys delivered in the tables ``table`` references, read from ``raw`` in DuckDB
    (the warehouse form of :func:`reference_keys`)."""
    out: dict[str, pl.Series] = {}
    for ref, key in schemas.REFERENCES.get(table, {}).values():
        keys = con.execute(
            f'SELECT DISTINCT "{key}" FROM raw."{ref}" WHERE "{key}" IS NOT NULL'
        ).pl()
        out[ref] = normalise_keys(keys[key])
    return out


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def _run_pandera(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> pl.DataFrame:
    """(index, rule) for every failing check; raises on anything that is not a row failure."""
    empty = pl.DataFrame(schema={"index": pl.Int64, "rule": pl.String})
    # An eager DataFrame gets data checks by default, but a PANDERA_VALIDATION_DEPTH or
    # PANDERA_VALIDATION_ENABLED in the environment would silently turn them off.
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors as err:
            fc = err.failure_cases
        else:
            return empty
    not_rows = fc.filter(pl.col("index").is_null())
    if not_rows.height:
        # a wrong dtype, a missing column or a check that raised: a bug, not a bad row. Name
        # the columns and checks only: pandera's message and failure cases quote the values.
        what = sorted(
            {f"{r['column']}: {r['check']}" for r in not_rows.select("column", "check").to_dicts()}
        )
        raise RuntimeError(
            f"{schema.name}: validation failed outside the row rules: {'; '.join(what)}"
        ) from None
    return fc.select(pl.col("index").cast(pl.Int64), pl.col("check").alias("rule"))


def validate_table(
    table: str,
    raw: pl.DataFrame,
    extract_date: date,
    refs: Mapping[str, object] | None = None,
) -> ValidationResult:
    """Split a raw table into staging (valid, typed) and quarantine (as delivered + rules).

    ``raw``: every delivered column as strings (empty = null), ``_row_number`` (1-based
    data row in the file; numbered in frame order if absent), maybe extra columns.
    ``refs``: keys delivered in the tables this one references (:data:`schemas.REFERENCES`),
    e.g. ``{"practices": {...}}`` for ``gp_events``; see :func:`reference_keys`.

    Raises :class:`MissingColumnsError` when a required contract column is missing; a
    missing optional (v2) column is taken as null and listed in ``missing_columns``.
    """
    if table not in TABLES:
        raise KeyError(f"unknown table {table!r}; tables: {', '.join(TABLE_NAMES)}")
    clash = {"table_name", "delivery_date", "failed_rules"} & set(raw.columns)
    if clash:
        raise ValueError(f"{table}: delivered columns clash with quarantine's: {sorted(clash)}")
    if ROW_NUMBER in raw.columns and raw[ROW_NUMBER].null_count():
        raise ValueError(f"{table}: {ROW_NUMBER} has nulls")
    absent = tuple(c for c in OPTIONAL_COLUMNS.get(table, ()) if c not in raw.columns)
    if absent:
        raw = raw.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in absent)
    try:
        frame = check_frame(table, raw)
    except pl.exceptions.PolarsError as e:
        # a polars conversion error quotes the offending values: name the table only
        raise ValueError(
            f"{table}: could not parse the delivered columns ({type(e).__name__}); "
            "values are not shown, see the raw table"
        ) from None
    rules = schemas.rules_for(table, extract_date, refs)
    schema = schemas.schema_for(table, extract_date, refs)
    try:
        failures = _run_pandera(schema, frame)
    except pl.exceptions.PolarsError as e:
        raise ValueError(
            f"{table}: a validation rule failed to run ({type(e).__name__}); values are not "
            "shown, see the raw table"
        ) from None

    order = {r.name: i for i, r in enumerate(rules)}
    unknown = set(failures["rule"].unique()) - set(order)
    if unknown:
        raise RuntimeError(f"{table}: pandera reported checks that are not rules: {unknown}")
    failures = failures.unique()

    counts = dict(failures.group_by("rule").len().iter_rows())
    rule_counts = {r.name: int(counts.get(r.name, 0)) for r in rules}

    per_row = (
        failures.with_columns(
            pl.col("rule").replace_strict(order, return_dtype=pl.Int32).alias("_order")
        )
        .sort("index", "_order")
        .group_by("index", maintain_order=True)
        .agg(pl.col("rule").alias("failed_rules"))
    )
    bad_idx = per_row["index"]
    mask = np.zeros(frame.height, dtype=bool)
    mask[bad_idx.to_numpy()] = True

    staging = frame.filter(~pl.Series(mask)).select(staging_columns(table))

    delivered = [c for c in raw.columns if c != ROW_NUMBER]
    quarantine = (
        raw.select(delivered)
        .select(pl.all().gather(bad_idx))
        .with_columns(
            pl.lit(table, dtype=pl.String).alias("table_name"),
            pl.lit(extract_date, dtype=pl.Date).alias("delivery_date"),
            frame[ROW_NUMBER].gather(bad_idx).alias(ROW_NUMBER),
            per_row["failed_rules"].alias("failed_rules"),
        )
        .select(*QUARANTINE_COLUMNS, *delivered)
    )
    return ValidationResult(table, extract_date, staging, quarantine, rule_counts, absent)


def validate_delivery(
    raw_tables: Mapping[str, pl.DataFrame], extract_date: date
) -> dict[str, ValidationResult]:
    """Validate every table given, with references taken from the raw frames themselves."""
    refs = reference_keys(raw_tables)
    return {
        t: validate_table(t, raw_tables[t], extract_date, refs)
        for t in TABLE_NAMES
        if t in raw_tables
    }


# --------------------------------------------------------------------------------------
# plausibility gates
# --------------------------------------------------------------------------------------

#: the largest share of a table's rows that may be quarantined before the delivery fails
DEFAULT_MAX_QUARANTINE_SHARE = 0.05


def max_quarantine_share() -> float:
    """``PHM_MAX_QUARANTINE_SHARE`` (default 0.05); 1 switches the gate off."""
    value = os.environ.get("PHM_MAX_QUARANTINE_SHARE")
    if not value:
        return DEFAULT_MAX_QUARANTINE_SHARE
    share = float(value)
    if not 0 <= share <= 1:
        raise ValueError(f"PHM_MAX_QUARANTINE_SHARE must be between 0 and 1, got {value!r}")
    return share


class QuarantineGateError(Exception):
    """Too large a share of a table was quarantined: the delivery is implausible (e.g. a
    column stored in the wrong type) and nothing downstream may use it. The message names
    the table, the share and the rules broken most, never a row value."""

    def __init__(self, table: str, share: float, limit: float, top_rules: list[tuple[str, int]]):
        self.table, self.share, self.limit, self.top_rules = table, share, limit, top_rules
        rules = ", ".join(f"{r} ({n:,} rows)" for r, n in top_rules) or "none"
        super().__init__(
            f"{table}: {100 * share:.1f}% of the delivered rows were quarantined, more than "
            f"the limit of {100 * limit:.1f}% (PHM_MAX_QUARANTINE_SHARE); rules broken most: "
            f"{rules}. The delivery is refused; see docs/operations.md (Plausibility gates)."
        )


def check_quarantine_share(
    result: ValidationResult | WarehouseValidation, limit: float | None = None
) -> float:
    """The quarantined share of ``result``'s table; raises :class:`QuarantineGateError` when it
    exceeds ``limit`` (default :func:`max_quarantine_share`). An empty table passes."""
    limit = max_quarantine_share() if limit is None else limit
    delivered = result.rows_delivered
    share = result.rows_quarantined / delivered if delivered else 0.0
    if share > limit:
        top = sorted(
            ((r, n) for r, n in result.rule_counts.items() if n), key=lambda x: (-x[1], x[0])
        )[:3]
        raise QuarantineGateError(result.table, share, limit, top)
    return share


#: the columns of the patients-without-practice exceptions list (it holds NHS numbers: it is
#: for the ICB data team to correct the practice rows, never published)
WITHOUT_PRACTICE_COLUMNS = (
    "nhs_number",
    "practice_code",
    "registration_start",
    "registration_end",
    "row_number",
    "practice_rules_broken",
)


def patients_without_practice(con) -> pl.DataFrame:
    """Accepted registrations (``staging.gp_patients``) whose practice is not in
    ``staging.practices`` because its practice row was quarantined: without this list they
    would silently be missing from every PCN's lists. Ordered by practice and row number."""
    return con.execute(
        """
        SELECT p.nhs_number, p.practice_code, p.registration_start, p.registration_end,
               p._row_number AS row_number,
               coalesce(
                   (SELECT string_agg(DISTINCT r, ';' ORDER BY r) FROM (
                        SELECT unnest(q.failed_rules) AS r FROM quarantine.practices q
                        WHERE trim(q.practice_code) = p.practice_code)),
                   'practice not accepted') AS practice_rules_broken
        FROM staging.gp_patients p
        WHERE p.practice_code NOT IN (SELECT practice_code FROM staging.practices)
        ORDER BY p.practice_code, p._row_number
        """
    ).pl()


WITHOUT_PRACTICE_METRIC = "patients_without_practice"


#: rows of a table validated and written at a time when every rule of the table looks at one
#: row alone (:func:`schemas.rows_independent`; ``PHM_VALIDATE_SLICE_ROWS`` overrides): the
#: 18-million-row gp_events is then never held whole, as raw, check frame and staging at once
DEFAULT_VALIDATE_SLICE_ROWS = 2_000_000


def validate_slice_rows() -> int:
    """``PHM_VALIDATE_SLICE_ROWS`` (default :data:`DEFAULT_VALIDATE_SLICE_ROWS`)."""
    value = os.environ.get("PHM_VALIDATE_SLICE_ROWS", "").strip()
    if not value:
        return DEFAULT_VALIDATE_SLICE_ROWS
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"PHM_VALIDATE_SLICE_ROWS must be a whole number >= 1, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class WarehouseValidation(_Counts):
    """What :func:`validate_in_warehouse` wrote: the counts of one table's validation (the
    rows themselves are in ``staging.<table>`` and ``quarantine.<table>``)."""

    table: str
    extract_date: date
    rows_accepted: int
    rows_quarantined: int
    #: rule name -> number of rows that broke it (all rules of the table, in rule order)
    rule_counts: dict[str, int] = field(default_factory=dict)
    #: optional (v2) contract columns the raw table lacked (validated as null)
    missing_columns: tuple[str, ...] = ()


def _raw_slices(cursor, table: str, slice_rows: int | None) -> Iterator[pl.DataFrame]:
    """``raw.<table>`` in delivered order (a table scan keeps DuckDB's insertion order, as an
    ORDER BY would, without sorting millions of rows): whole, or ``slice_rows`` at a time."""
    result = cursor.execute(f'SELECT * FROM raw."{table}"')
    if slice_rows is None:
        yield result.pl()
        return
    reader = result.to_arrow_reader(slice_rows)
    empty = True
    for batch in reader:
        empty = False
        yield pl.from_arrow(batch)
    if empty:  # still one (empty) slice, so that both tables are created with their columns
        yield pl.from_arrow(reader.schema.empty_table())


def validate_in_warehouse(
    con,
    table: str,
    extract_date: date,
    *,
    gate: bool = True,
    seconds: dict | None = None,
    slice_rows: int | None = None,
) -> WarehouseValidation:
    """Validate ``raw.<table>`` and replace ``staging.<table>`` and ``quarantine.<table>``
    with the result, both in one transaction (the asset's and the bench's one path).

    A table whose rules each look at one row (:func:`schemas.rows_independent`: gp_events,
    gp_medications, gp_appointments, sp_outcomes) is validated ``slice_rows`` rows at a time
    (default :func:`validate_slice_rows`), each slice exactly as :func:`validate_table` does
    and appended in delivered order, so memory stays bounded; the others (with uniqueness
    rules) whole. Either way the tables hold what :func:`validate_table` of the whole raw
    table returns. While DuckDB writes one slice (on one thread:
    :func:`phm.ingest.single_threaded_writes`), the next is read and validated on a second
    thread (polars and DuckDB release the GIL).

    With ``gate`` (the pipeline), :func:`check_quarantine_share` runs before the commit: an
    implausible share of bad rows raises :class:`QuarantineGateError` and rolls back, so
    neither table is replaced. ``seconds``, when given, accumulates the seconds of each step
    (``read``, ``validate``, ``write``; for the bench; read and validate overlap the writes).
    """
    from phm.ingest import single_threaded_writes
    from phm.warehouse import write_table

    if table not in TABLES:
        raise KeyError(f"unknown table {table!r}; tables: {', '.join(TABLE_NAMES)}")
    size = None
    if schemas.rows_independent(table):
        size = slice_rows or validate_slice_rows()
    refs = warehouse_reference_keys(con, table)
    steps = {"read": 0.0, "validate": 0.0, "write": 0.0}
    oldest = pl.CompatLevel.oldest()
    cursor = con.cursor()  # the reading thread's own connection to the same database

    def prepare(slices: Iterator[pl.DataFrame]):
        """The next slice validated, as Arrow tables ready to write (None after the last)."""
        t0 = time.perf_counter()
        raw = next(slices, None)
        t1 = time.perf_counter()
        steps["read"] += t1 - t0
        if raw is None:
            return None
        part = validate_table(table, raw, extract_date, refs)
        out = (part, part.staging.to_arrow(compat_level=oldest))
        out += (part.quarantine.to_arrow(compat_level=oldest),)
        steps["validate"] += time.perf_counter() - t1
        return out

    accepted = quarantined = 0
    rule_counts: dict[str, int] = {}
    missing: tuple[str, ...] = ()
    try:
        slices = _raw_slices(cursor, table, size)
        with single_threaded_writes(con), ThreadPoolExecutor(1) as pool:
            con.execute("BEGIN TRANSACTION")
            try:
                pending = pool.submit(prepare, slices)
                first = True
                while (item := pending.result()) is not None:
                    pending = pool.submit(prepare, slices)
                    part, staging, quarantine = item
                    t0 = time.perf_counter()
                    write_table(con, f"staging.{table}", staging, append=not first)
                    write_table(con, f"quarantine.{table}", quarantine, append=not first)
                    steps["write"] += time.perf_counter() - t0
                    first = False
                    accepted += part.rows_accepted
                    quarantined += part.rows_quarantined
                    for rule, n in part.rule_counts.items():
                        rule_counts[rule] = rule_counts.get(rule, 0) + n
                    missing = part.missing_columns
                    del part, staging, quarantine, item
                result = WarehouseValidation(
                    table, extract_date, accepted, quarantined, rule_counts, missing
                )
                if gate:
                    check_quarantine_share(result)
                con.execute("COMMIT")
            except BaseException:
                pending.cancel()
                con.execute("ROLLBACK")
                raise
    finally:
        cursor.close()
    if seconds is not None:
        for step, secs in steps.items():
            seconds[step] = seconds.get(step, 0.0) + secs
    return result


# --------------------------------------------------------------------------------------
# data quality summary
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completeness:
    """Share of ``among`` rows (None = all accepted rows) for which ``has`` holds."""

    table: str
    label: str
    columns: tuple[str, ...]
    has: pl.Expr
    among: pl.Expr | None = None


_CURRENT = pl.col("registration_end").is_null()

#: completeness of key fields, measured on the accepted (staging) rows
COMPLETENESS: tuple[Completeness, ...] = (
    Completeness("practices", "icb_code recorded", ("icb_code",), pl.col("icb_code").is_not_null()),
    Completeness(
        "gp_patients",
        "current patients with an LSOA (lsoa11_code)",
        ("registration_end", "lsoa11_code"),
        pl.col("lsoa11_code").is_not_null(),
        _CURRENT,
    ),
    Completeness(
        "gp_patients",
        "current patients with an LSOA 2021 code (lsoa21_code, v2)",
        ("registration_end", "lsoa21_code"),
        pl.col("lsoa21_code").is_not_null(),
        _CURRENT,
    ),
    Completeness(
        "gp_patients",
        "current patients with an ethnic_category recorded",
        ("registration_end", "ethnic_category"),
        pl.col("ethnic_category").is_not_null(),
        _CURRENT,
    ),
    Completeness(
        "gp_patients",
        "current patients with a known ethnic_category (not Z or 99)",
        ("registration_end", "ethnic_category"),
        pl.col("ethnic_category").is_not_null() & ~pl.col("ethnic_category").is_in(["Z", "99"]),
        _CURRENT,
    ),
    Completeness(
        "gp_patients",
        "current patients with a known sex (not U)",
        ("registration_end", "sex"),
        pl.col("sex") != "U",
        _CURRENT,
    ),
    Completeness(
        "gp_events",
        "events with a numeric_value",
        ("numeric_value",),
        pl.col("numeric_value").is_not_null(),
    ),
    Completeness(
        "gp_medications", "issues with a bnf_code", ("bnf_code",), pl.col("bnf_code").is_not_null()
    ),
    Completeness(
        "gp_medications", "issues with a quantity", ("quantity",), pl.col("quantity").is_not_null()
    ),
    Completeness(
        "gp_appointments", "appointments with a mode", ("mode",), pl.col("mode").is_not_null()
    ),
    Completeness(
        "sus_apc",
        "spells with a discharge_date",
        ("discharge_date",),
        pl.col("discharge_date").is_not_null(),
    ),
    Completeness(
        "sus_apc",
        "spells with a discharge_method (v2)",
        ("discharge_method",),
        pl.col("discharge_method").is_not_null(),
    ),
    Completeness(
        "sus_apc",
        "spells with a discharge_destination (v2)",
        ("discharge_destination",),
        pl.col("discharge_destination").is_not_null(),
    ),
    Completeness(
        "sus_apc",
        "spells with secondary_diagnoses",
        ("secondary_diagnoses",),
        pl.col("secondary_diagnoses").is_not_null(),
    ),
    Completeness(
        "sus_ecds",
        "attendances with a chief_complaint_snomed",
        ("chief_complaint_snomed",),
        pl.col("chief_complaint_snomed").is_not_null(),
    ),
    Completeness(
        "sp_referrals",
        "referrals with a first_contact_date",
        ("first_contact_date",),
        pl.col("first_contact_date").is_not_null(),
    ),
    Completeness(
        "community_assets",
        "assets with an lsoa11_code",
        ("lsoa11_code",),
        pl.col("lsoa11_code").is_not_null(),
    ),
)

#: the summary metric naming an optional (v2) contract field the delivery did not include
MISSING_FIELD_METRIC = "v2_field_missing"

_SUMMARY_SCHEMA = {
    "table": pl.String,
    "metric": pl.String,
    "detail": pl.String,
    "value": pl.Int64,
    "denominator": pl.Int64,
    "share": pl.Float64,
}


def _completeness_rows(table: str, staging: pl.DataFrame) -> list[dict]:
    rows = []
    for c in COMPLETENESS:
        if c.table != table or any(col not in staging.columns for col in c.columns):
            continue
        if c.among is None:
            num_e, den_e = c.has.fill_null(False).sum(), pl.len()
        else:
            num_e = (c.among & c.has).fill_null(False).sum()
            den_e = c.among.fill_null(False).sum()
        num, den = staging.select(num_e.alias("n"), den_e.alias("d")).row(0)
        rows.append(
            {
                "table": table,
                "metric": "completeness",
                "detail": c.label,
                "value": int(num),
                "denominator": int(den),
                "share": (num / den) if den else None,
            }
        )
    return rows


DEPRIVATION_UNKNOWN_METRIC = "deprivation_unknown"


def _deprivation_rows(table: str, staging: pl.DataFrame) -> list[dict]:
    """gp_patients: current patients whose deprivation is unknown under the configured index
    (:func:`phm.imd.imd_config`): an LSOA the index does not cover, or no LSOA. They are kept
    and shown as "deprivation unknown" downstream; here they are counted."""
    from phm.imd import imd_config, read_imd_deciles

    if table != "gp_patients":
        return []
    imd = imd_config()
    col = imd.lsoa_column
    if col not in staging.columns or "registration_end" not in staging.columns:
        return []
    covered = read_imd_deciles(imd)["lsoa_code"]
    current = staging.filter(_CURRENT)
    den = current.height
    n_null = current.select(pl.col(col).is_null().sum()).item()
    n_uncovered = current.select(
        (pl.col(col).is_not_null() & ~pl.col(col).is_in(covered.implode())).sum()
    ).item()
    return [
        {
            "table": table,
            "metric": DEPRIVATION_UNKNOWN_METRIC,
            "detail": detail,
            "value": int(n),
            "denominator": den,
            "share": (n / den) if den else None,
        }
        for detail, n in (
            (f"current patients whose {col} {imd.label} does not cover", n_uncovered),
            (f"current patients with no {col}", n_null),
        )
    ]


def _table_rows(
    table: str,
    delivered: int,
    accepted: int,
    quarantined: int,
    rule_counts: Mapping[str, int],
    staging: pl.DataFrame,
    missing_columns: tuple[str, ...] | list[str] = (),
) -> list[dict]:
    base = {"table": table, "detail": None, "denominator": None, "share": None}
    rows = [
        {**base, "metric": "rows_delivered", "value": delivered},
        {**base, "metric": "rows_accepted", "value": accepted},
        {**base, "metric": "rows_quarantined", "value": quarantined},
    ]
    # v2 fields the delivery lacks (a v1 delivery): value = rows without the field
    rows += [
        {**base, "metric": MISSING_FIELD_METRIC, "detail": f"{table}.{c}", "value": delivered}
        for c in OPTIONAL_COLUMNS.get(table, ())
        if c in missing_columns
    ]
    rows += [
        {**base, "metric": "rule_broken", "detail": rule, "value": int(n)}
        for rule, n in rule_counts.items()
        if n
    ]
    return rows + _completeness_rows(table, staging) + _deprivation_rows(table, staging)


def data_quality_summary(source) -> pl.DataFrame:
    """Data quality of a delivery, one row per measure; counts only, no patient identifiers.

    ``source``: validation results (a mapping table -> :class:`ValidationResult` or an
    iterable of them), or a DuckDB connection whose ``raw``, ``staging`` and ``quarantine``
    schemas hold the tables (as the pipeline writes them).

    Columns: ``table``; ``metric`` (``rows_delivered``, ``rows_accepted``,
    ``rows_quarantined``, ``rule_broken``, ``completeness``, ``patients_without_practice``
    (accepted registrations whose practice row was quarantined), ``v2_field_missing`` with
    ``detail`` = ``table.column`` for an optional v2 field the delivery lacked,
    ``deprivation_unknown`` = current gp_patients whose LSOA the configured deprivation index
    does not cover, or with no LSOA); ``detail`` (the rule or the
    completeness measure); ``value`` (a row count; for completeness the rows that have the
    field); ``denominator`` and ``share`` (completeness only).
    """
    rows: list[dict] = []
    if hasattr(source, "execute"):
        rows = _summary_from_warehouse(source)
    else:
        results = list(source.values()) if isinstance(source, Mapping) else list(source)
        for r in sorted(results, key=lambda r: TABLE_NAMES.index(r.table)):
            rows += _table_rows(
                r.table,
                r.rows_delivered,
                r.rows_accepted,
                r.rows_quarantined,
                r.rule_counts,
                r.staging,
                r.missing_columns,
            )
        by_table = {r.table: r for r in results}
        if {"gp_patients", "practices"} <= set(by_table):
            patients, practices = by_table["gp_patients"].staging, by_table["practices"].staging
            n = patients.filter(~pl.col("practice_code").is_in(practices["practice_code"])).height
            rows.append(_without_practice_row(n))
    return pl.DataFrame(rows, schema=_SUMMARY_SCHEMA)


def _without_practice_row(n: int) -> dict:
    return {
        "table": "gp_patients",
        "metric": WITHOUT_PRACTICE_METRIC,
        "detail": "accepted registrations whose practice row was quarantined",
        "value": int(n),
        "denominator": None,
        "share": None,
    }


def missing_v2_fields(source) -> list[str]:
    """``table.column`` for every optional (v2) contract field the delivery lacked, in
    contract order; ``source`` as for :func:`data_quality_summary` (or its frame)."""
    s = source if isinstance(source, pl.DataFrame) else data_quality_summary(source)
    return s.filter(pl.col("metric") == MISSING_FIELD_METRIC)["detail"].to_list()


def _warehouse_missing_columns(con, existing: set[tuple[str, str]]) -> dict[str, list[str]]:
    """table -> optional columns the ingested delivery lacked (from ``raw._delivery``)."""
    if ("raw", "_delivery") not in existing:
        return {}
    cols = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'raw' AND table_name = '_delivery'"
        ).fetchall()
    }
    if "missing_columns" not in cols:
        return {}
    row = con.execute("SELECT missing_columns FROM raw._delivery").fetchone()
    return json.loads(row[0]) if row and row[0] else {}


def _summary_from_warehouse(con) -> list[dict]:
    existing = {
        (s, t)
        for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
        ).fetchall()
    }
    rows: list[dict] = []
    missing = _warehouse_missing_columns(con, existing)
    for t in TABLE_NAMES:
        if not {("raw", t), ("staging", t), ("quarantine", t)} <= existing:
            continue
        delivered = con.execute(f'SELECT count(*) FROM raw."{t}"').fetchone()[0]
        accepted = con.execute(f'SELECT count(*) FROM staging."{t}"').fetchone()[0]
        quarantined = con.execute(f'SELECT count(*) FROM quarantine."{t}"').fetchone()[0]
        broken = dict(
            con.execute(
                f'SELECT rule, count(*) FROM (SELECT unnest(failed_rules) AS rule FROM quarantine."{t}") '
                "GROUP BY rule"
            ).fetchall()
        )
        names = schemas.rule_names(t)
        rule_counts = {n: broken.pop(n, 0) for n in names} | broken
        cols = sorted({c for m in COMPLETENESS if m.table == t for c in m.columns})
        staging = (
            con.execute(f'SELECT {", ".join(cols)} FROM staging."{t}"').pl()
            if cols
            else pl.DataFrame()
        )
        rows += _table_rows(
            t, delivered, accepted, quarantined, rule_counts, staging, missing.get(t, ())
        )
    if {
        ("staging", "gp_patients"),
        ("staging", "practices"),
        ("quarantine", "practices"),
    } <= existing:
        n = con.execute(
            "SELECT count(*) FROM staging.gp_patients WHERE practice_code NOT IN "
            "(SELECT practice_code FROM staging.practices)"
        ).fetchone()[0]
        rows.append(_without_practice_row(n))
    return rows


def _pct(x: float | None) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def data_quality_markdown(source, extract_date: date | None = None) -> str:
    """The data-quality summary as markdown: rows per table, broken rules, completeness.

    ``source``: a frame from :func:`data_quality_summary`, or anything it accepts.
    """
    s = source if isinstance(source, pl.DataFrame) else data_quality_summary(source)
    title = "# Data quality" + (f": delivery of {extract_date.isoformat()}" if extract_date else "")
    out = [title, ""]

    counts = (
        s.filter(pl.col("metric").str.starts_with("rows_"))
        .pivot(on="metric", index="table", values="value")
        .fill_null(0)
    )
    out += [
        "## Rows",
        "",
        "| table | delivered | accepted | quarantined | quarantined % |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in counts.iter_rows(named=True):
        d, a, q = (
            r.get("rows_delivered", 0),
            r.get("rows_accepted", 0),
            r.get("rows_quarantined", 0),
        )
        out.append(f"| {r['table']} | {d:,} | {a:,} | {q:,} | {_pct(q / d if d else None)} |")
    if counts.height:
        tot = counts.select(pl.exclude("table").sum()).row(0, named=True)
        d, a, q = (
            tot.get("rows_delivered", 0),
            tot.get("rows_accepted", 0),
            tot.get("rows_quarantined", 0),
        )
        out.append(f"| **all** | {d:,} | {a:,} | {q:,} | {_pct(q / d if d else None)} |")

    lacking = s.filter(pl.col("metric") == MISSING_FIELD_METRIC)
    out += ["", "## Contract v2 fields", ""]
    if lacking.height:
        out += [
            "The delivery lacks these optional v2 fields (a v1 delivery); they are null in "
            "raw and staging:",
            "",
        ]
        out += [f"- `{r['detail']}`" for r in lacking.iter_rows(named=True)]
    else:
        out.append("The delivery has every v2 field.")

    orphans = s.filter(pl.col("metric") == WITHOUT_PRACTICE_METRIC)
    if orphans.height:
        n = int(orphans["value"].sum())
        out += ["", "## Patients without a practice", ""]
        if n:
            out.append(
                f"{n:,} accepted registration(s) name a practice whose row was quarantined: "
                "these patients are in no PCN's lists until the practice row is corrected. "
                "The data team's list (with NHS numbers, not for publication) is "
                "`exceptions/<extract_date>/patients_without_practice.csv` in the pipeline's "
                "home."
            )
        else:
            out.append("Every accepted registration names an accepted practice.")

    broken = s.filter(pl.col("metric") == "rule_broken")
    out += ["", "## Broken rules", ""]
    if broken.height:
        out += ["| table | rule | rows |", "|---|---|---:|"]
        out += [
            f"| {r['table']} | `{r['detail']}` | {r['value']:,} |"
            for r in broken.iter_rows(named=True)
        ]
    else:
        out.append("No rule was broken: every delivered row was accepted.")

    comp = s.filter(pl.col("metric") == "completeness")
    out += ["", "## Completeness of key fields (accepted rows)", ""]
    if comp.height:
        out += ["| table | measure | rows | of | share |", "|---|---|---:|---:|---:|"]
        out += [
            f"| {r['table']} | {r['detail']} | {r['value']:,} | {r['denominator']:,} | {_pct(r['share'])} |"
            for r in comp.iter_rows(named=True)
        ]
    else:
        out.append("No completeness measures (no accepted rows).")

    unknown = s.filter(pl.col("metric") == DEPRIVATION_UNKNOWN_METRIC)
    if unknown.height:
        out += [
            "",
            "## Deprivation unknown",
            "",
            'Kept, and shown as "deprivation unknown" in the measures and cohort summaries '
            "(never in a deprivation-based cohort or silently out of its denominator):",
            "",
        ]
        out += [
            f"- {r['detail']}: {r['value']:,} of {r['denominator']:,} ({_pct(r['share'])})"
            for r in unknown.iter_rows(named=True)
        ]
    return "\n".join(out) + "\n"
