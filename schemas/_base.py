"""The machinery shared by the table schemas: rules, the check frame, and the pandera build.

How a raw table is validated
----------------------------
1. :func:`check_frame` parses the raw frame (every column a string, as delivered) once,
   vectorised, with polars ``strict=False`` casts: for every contract column it holds the
   *typed* value under the contract name (what staging keeps) and, where that differs from
   the trimmed text, the trimmed text under ``<column>__raw`` (what the parse rules look at).
2. Every rule of the contract is a :class:`ValidationRule`: a short human-readable name that starts
   with the column it is about, the kind of fault it catches (the generator's fault
   vocabulary), and a boolean polars expression over the check frame that is ``True`` when
   the row keeps the rule. Expressions never yield null (a null is counted as a failure).
3. :func:`build_schema` turns the rules into a ``pandera.polars.DataFrameSchema``: one
   ``Column`` per contract column with its polars dtype, and one ``Check`` per rule named by
   the rule. Validating the (eager) check frame with ``lazy=True`` runs every check over the
   data; ``SchemaErrors.failure_cases`` then lists each failing (row index, rule).

Rules are layered so that one fault breaks one rule: *required* looks at the trimmed text;
the parse/format rule applies only to a present value; value rules (allowed values, ranges,
dates, order, uniqueness, references) apply only to a value that parsed, and pass otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pandera.polars as pa
import polars as pl

from phm.codes import (  # noqa: F401 (re-exported for the validator and tests)
    ICD10_CODE,
    ICD10_PATTERN,
    icd10_is_valid,
    nhs_number_check_digit,
    nhs_number_format,
    nhs_number_mod11_ok,
    normalise_icd10,
)
from phm.contract import TABLES, Column, Table

#: suffix of the trimmed-text shadow column kept next to a typed column in the check frame
RAW_SUFFIX = "__raw"
ROW_NUMBER = "_row_number"

#: kinds of fault a rule catches: the synthetic generator's fault vocabulary (faults.csv)
RULE_KINDS = (
    "missing_required",
    "bad_date",
    "not_a_number",
    "bad_nhs_number",
    "malformed_code",
    "not_allowed_value",
    "out_of_range",
    "future_date",
    "date_order",
    "duplicate_key",
    "orphan_reference",
)
_KIND_ORDER = {k: i for i, k in enumerate(RULE_KINDS)}

#: polars dtype of each contract type in staging
POLARS_TYPES: dict[str, pl.DataType] = {
    "str": pl.String(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us"),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
}

DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATETIME_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$"


# --------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationRule:
    """One contract rule: ``expr`` is True for a row that keeps it (never null)."""

    name: str
    column: str
    kind: str
    expr: pl.Expr = field(compare=False, repr=False)
    #: what exactly is checked (allowed values, pattern, bounds), for the docs
    detail: str = ""
    #: the rule compares a row with other rows of the table (e.g. uniqueness): the table
    #: must be validated whole, never slice by slice
    across_rows: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KIND_ORDER:
            raise ValueError(f"rule {self.name!r}: unknown kind {self.kind!r}")
        if not self.name.startswith(self.column):
            raise ValueError(f"rule {self.name!r} must start with its column {self.column!r}")


@dataclass(frozen=True)
class RuleContext:
    """What a table's rules need: the table, the extract date and the delivered reference keys.

    ``refs`` maps a referenced table (``practices``, ``sp_referrals``) to the keys delivered
    in it (any iterable of strings, or a polars Series); they are trimmed here.
    """

    table: Table
    extract_date: date
    refs: Mapping[str, object] = field(default_factory=dict)

    # --- column access -------------------------------------------------------------
    def val(self, column: str) -> pl.Expr:
        """The typed value (null when absent or unparseable)."""
        return pl.col(column)

    def raw(self, column: str) -> pl.Expr:
        """The trimmed delivered text (null when empty)."""
        return pl.col(raw_name(self.table, column))

    def present(self, column: str) -> pl.Expr:
        return self.raw(column).is_not_null()

    # --- dates -----------------------------------------------------------------------
    @property
    def extract_lit(self) -> pl.Expr:
        return pl.lit(self.extract_date, dtype=pl.Date)

    @property
    def extract_end_lit(self) -> pl.Expr:
        """The first instant after the extract date (for datetimes)."""
        end = datetime.combine(self.extract_date + timedelta(days=1), datetime.min.time())
        return pl.lit(end, dtype=pl.Datetime("us"))

    # --- references ------------------------------------------------------------------
    def ref_keys(self, ref_table: str) -> pl.Series:
        if ref_table not in self.refs or self.refs[ref_table] is None:
            raise KeyError(
                f"{self.table.name}: the rule '... exists in {ref_table}' needs the keys "
                f"delivered in {ref_table}: pass refs={{'{ref_table}': ...}}"
            )
        return normalise_keys(self.refs[ref_table])


def normalise_keys(keys: object) -> pl.Series:
    """Delivered reference keys as a trimmed, non-null, distinct String Series."""
    if isinstance(keys, pl.Series):
        s = keys.cast(pl.String)
    elif isinstance(keys, pl.DataFrame):
        s = keys.to_series(0).cast(pl.String)
    else:
        s = pl.Series(values=[None if k is None else str(k) for k in keys], dtype=pl.String)
    s = s.str.strip_chars()
    return s.filter(s.is_not_null() & (s != "")).unique().rename("key")


def raw_name(table: Table, column: str) -> str:
    """Name of the column holding a column's trimmed text in the check frame."""
    return column if _text_is_value(table, column) else column + RAW_SUFFIX


# Columns whose staged value is not simply the trimmed text (their parse needs the text).
_TRANSFORMED: dict[tuple[str, str], Callable[[pl.Expr], pl.Expr]] = {}


def transform(table: str, column: str):
    """Register how a str column's staged value is derived from its trimmed text."""

    def deco(fn: Callable[[pl.Expr], pl.Expr]) -> Callable[[pl.Expr], pl.Expr]:
        _TRANSFORMED[(table, column)] = fn
        return fn

    return deco


def _text_is_value(table: Table, column: str) -> bool:
    return table.column(column).type == "str" and (table.name, column) not in _TRANSFORMED


# --------------------------------------------------------------------------------------
# rule builders (each returns a list so table modules can splat them)
# --------------------------------------------------------------------------------------


def ok_when(conditions: Iterable[pl.Expr], check: pl.Expr) -> pl.Expr:
    """``check`` where every condition holds, True elsewhere, never null."""
    applicable = pl.all_horizontal(*conditions)
    return (~applicable | check).fill_null(False)


def standard_rules(ctx: RuleContext) -> list[ValidationRule]:
    """Required, parseable and allowed-value rules that follow from the contract's types."""
    rules: list[ValidationRule] = []
    for col in ctx.table.columns:
        c = col.name
        if not col.nullable:
            rules.append(ValidationRule(f"{c}: required", c, "missing_required", ctx.present(c)))
        parse = _parse_rule(ctx, col)
        if parse is not None:
            rules.append(parse)
        if col.allowed is not None:
            rules.append(
                ValidationRule(
                    f"{c}: one of the allowed values",
                    c,
                    "not_allowed_value",
                    ok_when([ctx.present(c)], ctx.val(c).is_in(list(col.allowed))),
                    detail=", ".join(f"`{v}`" for v in col.allowed),
                )
            )
    return rules


def _parse_rule(ctx: RuleContext, col: Column) -> ValidationRule | None:
    c = col.name
    parsed = ok_when([ctx.present(c)], ctx.val(c).is_not_null())
    match col.type:
        case "date":
            return ValidationRule(
                f"{c}: valid date (YYYY-MM-DD)", c, "bad_date", parsed, "a real calendar date"
            )
        case "datetime":
            return ValidationRule(
                f"{c}: valid datetime (YYYY-MM-DDTHH:MM:SS)",
                c,
                "bad_date",
                parsed,
                "no fraction, no time zone",
            )
        case "int":
            return ValidationRule(
                f"{c}: whole number", c, "not_a_number", parsed, "e.g. `3`, `+3`, `-1`"
            )
        case "float":
            return ValidationRule(
                f"{c}: finite number", c, "not_a_number", parsed, "e.g. `31.5`, `1e3`; not nan/inf"
            )
        case "bool":
            return ValidationRule(
                f"{c}: true or false", c, "not_allowed_value", parsed, "exactly `true` or `false`"
            )
    return None


def pattern_rule(
    ctx: RuleContext, column: str, pattern: str, what: str, kind: str = "malformed_code"
) -> list[ValidationRule]:
    """The trimmed text, when present, matches ``pattern`` (a full-match regex)."""
    return [
        ValidationRule(
            f"{column}: {what}",
            column,
            kind,
            ok_when([ctx.present(column)], ctx.raw(column).str.contains(pattern)),
            detail=f"matches `{pattern}`",
        )
    ]


def not_after_extract(ctx: RuleContext, column: str) -> list[ValidationRule]:
    v = ctx.val(column)
    if ctx.table.column(column).type == "datetime":
        check, detail = v < ctx.extract_end_lit, "any time on the extract date is allowed"
    else:
        check, detail = v <= ctx.extract_lit, ""
    return [
        ValidationRule(
            f"{column}: not after extract_date",
            column,
            "future_date",
            ok_when([v.is_not_null()], check),
            detail=detail,
        )
    ]


def not_before(ctx: RuleContext, column: str, earliest: date) -> list[ValidationRule]:
    v = ctx.val(column)
    return [
        ValidationRule(
            f"{column}: not before {earliest.isoformat()}",
            column,
            "out_of_range",
            ok_when([v.is_not_null()], v >= pl.lit(earliest, dtype=pl.Date)),
        )
    ]


def date_order(ctx: RuleContext, later: str, earlier: str) -> list[ValidationRule]:
    """``later >= earlier`` when both are valid dates and ``earlier`` is not after the
    extract date (a future ``earlier`` is that column's own fault, reported once)."""
    a, b = ctx.val(later), ctx.val(earlier)
    return [
        ValidationRule(
            f"{later} >= {earlier}",
            later,
            "date_order",
            ok_when([a.is_not_null(), b.is_not_null(), b <= ctx.extract_lit], a >= b),
            detail=f"judged when both are valid dates and {earlier} is not after extract_date",
        )
    ]


def between(
    ctx: RuleContext, column: str, low: float, high: float, what: str | None = None
) -> list[ValidationRule]:
    v = ctx.val(column)
    label = what or f"between {low:g} and {high:g}"
    return [
        ValidationRule(
            f"{column}: {label}",
            column,
            "out_of_range",
            ok_when([v.is_not_null()], v.is_between(low, high)),
        )
    ]


def unique_first_wins(
    ctx: RuleContext,
    column: str,
    among: pl.Expr | None = None,
    what: str = "unique",
    among_label: str = "",
) -> list[ValidationRule]:
    """Key unique in file order: the first delivered row (lowest ``_row_number``) is kept.

    Uniqueness is over the delivered (trimmed) key of every row, valid or not, so a later
    copy of a key is a duplicate even when the first row is quarantined for another fault.
    ``among`` restricts the rule to a subset of rows (e.g. current registrations).
    """
    key = ctx.raw(column)
    rn = pl.col(ROW_NUMBER)
    conditions = [key.is_not_null()]
    partition: list[pl.Expr] = [key]
    if among is not None:
        conditions.append(among)
        partition.append(among)
    first = rn == rn.min().over(partition)
    return [
        ValidationRule(
            f"{column}: {what} (first delivered row wins)",
            column,
            "duplicate_key",
            ok_when(conditions, first),
            detail=(
                f"over the trimmed delivered value of every row{among_label}, valid or not; "
                "the lowest `_row_number` is kept"
            ),
            across_rows=True,
        )
    ]


def exists_in(
    ctx: RuleContext, column: str, ref_table: str, *, after: list[ValidationRule] | None = None
) -> list[ValidationRule]:
    """The value is among the keys delivered in ``ref_table`` (checked once it is well-formed)."""
    conditions = [ctx.present(column)] + [r.expr for r in after or []]
    keys = ctx.ref_keys(ref_table)
    return [
        ValidationRule(
            f"{column} exists in {ref_table}",
            column,
            "orphan_reference",
            ok_when(conditions, ctx.raw(column).is_in(keys.implode())),
            detail=f"among the (trimmed) values delivered in raw {ref_table}, valid or not",
        )
    ]


def order_rules(table: Table, rules: list[ValidationRule]) -> list[ValidationRule]:
    """Rules in contract column order, then by kind (required, parse, format, ... references)."""
    pos = {c: i for i, c in enumerate(table.column_names)}
    names = [r.name for r in rules]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"{table.name}: duplicate rule names {sorted(dupes)}")
    return sorted(rules, key=lambda r: (pos[r.column], _KIND_ORDER[r.kind]))


# --------------------------------------------------------------------------------------
# codes
# --------------------------------------------------------------------------------------


def split_list(text: pl.Expr) -> pl.Expr:
    """``;``-separated text -> list of trimmed, non-empty items."""
    return text.str.split(";").list.eval(
        pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != "")
    )


# --------------------------------------------------------------------------------------
# the check frame
# --------------------------------------------------------------------------------------


class MissingColumnsError(ValueError):
    """A raw table lacks contract columns (a file-level fault: ingest should catch it first)."""


def _trimmed(name: str) -> pl.Expr:
    """Trimmed text, null when empty (``replace`` is cheaper than ``when`` here: the
    stripped column is not computed twice)."""
    return pl.col(name).cast(pl.String).str.strip_chars().replace("", None)


def _typed(table: Table, col: Column, text: pl.Expr) -> pl.Expr:
    if (table.name, col.name) in _TRANSFORMED:  # a str column with its own normalisation
        return _TRANSFORMED[(table.name, col.name)](text)
    match col.type:
        case "str":
            return text
        case "date":
            return pl.when(text.str.contains(_DATE_RE)).then(
                text.str.to_date(DATE_FORMAT, strict=False)
            )
        case "datetime":
            return pl.when(text.str.contains(_DATETIME_RE)).then(
                text.str.to_datetime(DATETIME_FORMAT, time_unit="us", strict=False)
            )
        case "int":
            return text.cast(pl.Int64, strict=False)
        case "float":
            f = text.cast(pl.Float64, strict=False)
            return pl.when(f.is_finite()).then(f)
        case "bool":
            return pl.when(text == "true").then(True).when(text == "false").then(False)
    raise AssertionError(col.type)


def check_frame(table: Table | str, raw: pl.DataFrame) -> pl.DataFrame:
    """Parse a raw frame once: typed contract columns, trimmed text shadows, ``_row_number``.

    Rows stay in input order (the check frame's row i is raw row i). A missing
    ``_row_number`` is numbered 1..n in frame order. A missing contract column (nullable or
    not: the column must be delivered, its values may be empty) raises
    :class:`MissingColumnsError`; extra columns are ignored.
    """
    t = TABLES[table] if isinstance(table, str) else table
    missing = [c for c in t.column_names if c not in raw.columns]
    if missing:
        raise MissingColumnsError(f"{t.name}: missing contract column(s): {', '.join(missing)}")
    lf = raw.lazy()
    if ROW_NUMBER not in raw.columns:
        lf = lf.with_row_index(ROW_NUMBER, offset=1)
    text_cols = [c.name for c in t.columns]
    # 1. trimmed text of every contract column (under its own name or the shadow name)
    lf = lf.select(
        pl.col(ROW_NUMBER).cast(pl.Int64),
        *(_trimmed(c).alias(raw_name(t, c)) for c in text_cols),
    )
    # 2. typed values parsed from the trimmed text
    typed = [
        _typed(t, c, pl.col(raw_name(t, c.name))).cast(POLARS_TYPES[c.type]).alias(c.name)
        for c in t.columns
        if not _text_is_value(t, c.name)
    ]
    if typed:
        lf = lf.with_columns(typed)
    return lf.collect()


def staging_columns(table: Table | str) -> list[str]:
    t = TABLES[table] if isinstance(table, str) else table
    return [*t.column_names, ROW_NUMBER]


# --------------------------------------------------------------------------------------
# pandera
# --------------------------------------------------------------------------------------


def _check_fn(expr: pl.Expr):
    def fn(data) -> pl.LazyFrame:
        return data.lazyframe.select(expr.alias("check_output"))

    return fn


def build_schema(table: Table, rules: list[ValidationRule]) -> pa.DataFrameSchema:
    """A pandera polars schema over the check frame: dtypes per contract + one Check per rule.

    Nullability is a named rule (``<column>: required`` on the delivered text), so that an
    unparseable value is reported once, as unparseable, and not also as missing; the
    pandera columns are therefore declared nullable.
    """
    by_col: dict[str, list[pa.Check]] = {c: [] for c in table.column_names}
    for r in rules:
        by_col[r.column].append(
            pa.Check(_check_fn(r.expr), name=r.name, error=r.name, ignore_na=False)
        )
    columns = {
        c.name: pa.Column(
            POLARS_TYPES[c.type],
            checks=by_col[c.name],
            nullable=True,
            required=True,
            coerce=False,
            description=c.description or None,
        )
        for c in table.columns
    }
    columns[ROW_NUMBER] = pa.Column(pl.Int64, nullable=True, coerce=False)
    return pa.DataFrameSchema(
        columns,
        name=table.name,
        strict=False,
        coerce=False,
        description=table.description,
        metadata={"rules": [r.name for r in rules]},
    )


# --------------------------------------------------------------------------------------
# rules shared by several tables
# --------------------------------------------------------------------------------------

ODS_PRACTICE = r"^[A-Z][0-9]{5}$"
LSOA11 = r"^E01[0-9]{6}$"
SNOMED_ID = r"^[0-9]{6,18}$"


def nhs_number_rules(ctx: RuleContext, column: str = "nhs_number") -> list[ValidationRule]:
    raw = ctx.raw(column)
    fmt = nhs_number_format(raw)
    return [
        ValidationRule(
            f"{column}: 10 digits",
            column,
            "bad_nhs_number",
            ok_when([ctx.present(column)], fmt),
            detail="no spaces or dashes inside",
        ),
        ValidationRule(
            f"{column}: valid Modulus 11 check digit",
            column,
            "bad_nhs_number",
            ok_when([ctx.present(column), fmt], nhs_number_mod11_ok(raw)),
            detail=(
                "as `nhs_number.is_valid`: 11 - (sum of digits 1-9 weighted 10..2) mod 11, "
                "11 -> 0, 10 never valid; a number in the Scottish CHI range "
                "(0101000000-3112999999) must also start with a real DDMMYY date"
            ),
        ),
    ]


def practice_code_rules(ctx: RuleContext, column: str = "practice_code") -> list[ValidationRule]:
    """Format always; existence among the delivered practices for tables that reference them."""
    fmt = pattern_rule(ctx, column, ODS_PRACTICE, "ODS practice code (letter + 5 digits)")
    if ctx.table.name == "practices":
        return fmt
    return fmt + exists_in(ctx, column, "practices", after=fmt)


def lsoa_rule(ctx: RuleContext, column: str = "lsoa11_code") -> list[ValidationRule]:
    return pattern_rule(ctx, column, LSOA11, "LSOA 2011 code (E01 + 6 digits)")


def snomed_rule(ctx: RuleContext, column: str) -> list[ValidationRule]:
    return pattern_rule(ctx, column, SNOMED_ID, "SNOMED CT id (6-18 digits)")


def provider_code_rule(ctx: RuleContext, column: str = "provider_code") -> list[ValidationRule]:
    return pattern_rule(
        ctx, column, r"^[A-Z0-9]{3}(?:[A-Z0-9]{2})?$", "ODS provider code (3 or 5 letters/digits)"
    )


def table_schema(
    table: Table, extra_rules: Callable[[RuleContext], list[ValidationRule]]
) -> tuple[
    Callable[[date, Mapping[str, object] | None], list[ValidationRule]],
    Callable[[date, Mapping[str, object] | None], pa.DataFrameSchema],
]:
    """A table module's ``rules`` and ``schema`` functions: the contract's standard rules for
    ``table`` plus its ``extra_rules``, for a delivery's extract date and referenced keys."""

    def rules(extract_date: date, refs: Mapping[str, object] | None = None) -> list[ValidationRule]:
        """Every rule of this table, in contract column order."""
        return build(table, extra_rules, extract_date, refs)[0]

    def schema(extract_date: date, refs: Mapping[str, object] | None = None) -> pa.DataFrameSchema:
        """The pandera polars schema over this table's check frame."""
        return build(table, extra_rules, extract_date, refs)[1]

    return rules, schema


def build(
    table: Table,
    rules_fn: Callable[[RuleContext], list[ValidationRule]],
    extract_date: date,
    refs: Mapping[str, object] | None = None,
) -> tuple[list[ValidationRule], pa.DataFrameSchema]:
    ctx = RuleContext(table, extract_date, refs or {})
    rules = order_rules(table, standard_rules(ctx) + rules_fn(ctx))
    return rules, build_schema(table, rules)
