"""Row-level fault injection and the ``faults.csv`` sidecar.

Each injected fault breaks exactly one contract rule in one row, and never makes another row
invalid:

- referenced keys are never altered in place (``practices.practice_code``,
  ``sp_referrals.referral_id``); the practices table only gets appended rows, and
  ``sp_referrals`` rows that have outcome rows are not faulted at all;
- duplicate keys are appended after the original (so "first occurrence wins" keeps the
  original), and the original is never faulted;
- the file still parses: values are plain strings, quoted by the CSV writer when needed.

The vocabulary of ``fault`` (documented in docs/synthetic-data.md) is :data:`FAULT_KINDS`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from phm.contract import SP_MEASURE_RANGES, TABLE_NAMES

FAULT_KINDS = (
    "bad_nhs_number",
    "future_date",
    "date_order",
    "malformed_code",
    "not_allowed_value",
    "out_of_range",
    "missing_required",
    "duplicate_key",
    "orphan_reference",
    "not_a_number",
    "bad_date",
)

FAULT_COLUMNS = ("table", "row_number", "column", "fault", "value")

EPOCH = dt.date(1970, 1, 1)


def iso(day: int) -> str:
    return (EPOCH + dt.timedelta(days=int(day))).isoformat()


@dataclass
class Context:
    extract_day: int
    practice_codes: list[str]
    pcn_codes: list[str]
    referral_ids: set[str]
    #: rows (by table) that must not be faulted in place
    protected: dict[str, np.ndarray] = field(default_factory=dict)


Values = Callable[[np.random.Generator, pl.DataFrame, Context], list]
Rows = Callable[[np.random.Generator, pl.DataFrame, Context], pl.DataFrame]
Mask = Callable[[pl.DataFrame, Context], np.ndarray]


@dataclass(frozen=True)
class Option:
    column: str
    kind: str
    values: Values | None = None  # in-place: the bad value per chosen row (None = empty)
    rows: Rows | None = None  # appended: build the new rows from the chosen originals
    eligible: Mask | None = None

    @property
    def appends(self) -> bool:
        return self.rows is not None


# --- value makers -------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, choices: list[str], k: int) -> list[str]:
    return [choices[i] for i in np.floor(rng.random(k) * len(choices)).astype(int)]


def bad_nhs(rng: np.random.Generator, df: pl.DataFrame, ctx: Context) -> list[str]:
    """Wrong check digit, nine digits, or a letter in place of a digit (all in the 999 range)."""
    out = []
    kinds = np.floor(rng.random(df.height) * 3).astype(int)
    shifts = 1 + np.floor(rng.random(df.height) * 9).astype(int)
    pos = 3 + np.floor(rng.random(df.height) * 6).astype(int)
    letters = _pick(rng, ["O", "I", "S", "B", "Z"], df.height)
    for v, k, s, p, letter in zip(
        df["nhs_number"].to_list(), kinds, shifts, pos, letters, strict=True
    ):
        if k == 0:
            out.append(v[:9] + str((int(v[9]) + s) % 10))
        elif k == 1:
            out.append(v[:9])
        else:
            out.append(v[:p] + letter + v[p + 1 :])
    return out


def _bad_dates(rng: np.random.Generator, k: int, time: bool = False) -> list[str]:
    years = 2018 + np.floor(rng.random(k) * 6).astype(int)
    kinds = np.floor(rng.random(k) * 4).astype(int)
    out = []
    for y, kind in zip(years, kinds, strict=True):
        if kind == 0:
            s = f"{y}-02-30"
        elif kind == 1:
            s = f"{y}-13-07"
        elif kind == 2:
            s = f"31/04/{y}"
        else:
            s = "unknown"
        if time and kind != 3:
            s += "T10:15:00" if kind != 2 else " 10:15"
        out.append(s)
    return out


def bad_date(rng, df, ctx):
    return _bad_dates(rng, df.height)


def bad_datetime(rng, df, ctx):
    return _bad_dates(rng, df.height, time=True)


def future(rng, df, ctx):
    return [iso(ctx.extract_day + 1 + int(d)) for d in np.floor(rng.random(df.height) * 365)]


def _before(col: str, max_days: int) -> Values:
    def make(rng, df, ctx):
        days = df[col].cast(pl.Int32).to_numpy()
        back = 1 + np.floor(rng.random(df.height) * max_days).astype(int)
        return [iso(d - b) for d, b in zip(days, back, strict=True)]

    return make


def const(*choices: str) -> Values:
    def make(rng, df, ctx):
        return _pick(rng, list(choices), df.height)

    return make


def missing(rng, df, ctx):
    return [None] * df.height


def dob_before_1900(rng, df, ctx):
    return [
        iso((dt.date(1850, 1, 1) - EPOCH).days + int(d))
        for d in np.floor(rng.random(df.height) * 18000)
    ]


def bad_snomed(rng, df, ctx):
    k = df.height
    out = []
    for i, d in enumerate(np.floor(rng.random(k) * 90000).astype(int) + 10000):
        out.append(str(d) if i % 2 == 0 else f"{d}A{i % 7}")
    return out


def bad_lsoa(rng, df, ctx):
    d = np.floor(rng.random(df.height) * 99999).astype(int)
    return [f"E02{x:05d}" if i % 2 == 0 else f"E01{x:05d}" for i, x in enumerate(d)]


def _alive_dest(df, ctx) -> np.ndarray:
    """Spells discharged alive with a destination other than 79 (method 4/5 there breaks only
    the died-with-79 rule)."""
    d = df["discharge_destination"]
    ok = df["discharge_date"].is_not_null() & d.is_not_null() & (d != "79") & (d != "98")
    return ok.to_numpy()


def _discharged_alive(df, ctx) -> np.ndarray:
    """Spells with a discharge_date and a live discharge method (98 there breaks only the
    not-discharged rule)."""
    m = df["discharge_method"]
    ok = df["discharge_date"].is_not_null() & m.is_not_null() & ~m.is_in(["4", "5", "8"])
    return ok.to_numpy()


def orphan_practice(rng, df, ctx):
    existing = set(ctx.practice_codes)
    out = []
    for d in np.floor(rng.random(df.height) * 1000).astype(int):
        code = f"Y98{d:03d}"
        out.append(code if code not in existing else "Y98999")
    return out


def orphan_referral(rng, df, ctx):
    out = []
    for d in np.floor(rng.random(df.height) * 1_000_000).astype(int):
        rid = f"SPR9{d:06d}"
        out.append(rid if rid not in ctx.referral_ids else "SPR9999999X")
    return out


def score_out_of_range(rng, df, ctx):
    out = []
    for m, u in zip(df["measure"].to_list(), rng.random(df.height), strict=True):
        lo, hi = SP_MEASURE_RANGES[m]
        out.append(f"{float(hi + 1 + int(u * 5))}" if u < 0.7 else f"{float(lo - 1 - int(u * 3))}")
    return out


def bnf_too_long(rng, df, ctx):
    return [
        f"{v}{'XX' if i % 2 else '01'}"
        for i, v in enumerate(df["bnf_code"].fill_null("0407010H0AAAMAM").to_list())
    ]


def reasons_not_allowed(rng, df, ctx):
    return [
        f"{v};gardening" if i % 2 else "loneliness" for i, v in enumerate(df["reasons"].to_list())
    ]


# --- appended rows ------------------------------------------------------------------------------


def copy_rows(rng, df, ctx):
    return df


def patient_second_registration(rng, df, ctx):
    codes = ctx.practice_codes
    new_practice = []
    for v, u in zip(df["practice_code"].to_list(), rng.random(df.height), strict=True):
        i = int(u * len(codes))
        new_practice.append(codes[i] if codes[i] != v else codes[(i + 1) % len(codes)])
    start = df["registration_start"].cast(pl.Int32).to_numpy()
    new_start = start + np.floor(
        rng.random(df.height) * np.maximum(ctx.extract_day - start, 0)
    ).astype(np.int32)
    return df.with_columns(
        pl.Series("practice_code", new_practice),
        pl.Series("registration_start", new_start).cast(pl.Date),
    )


def _new_practice_codes(rng, ctx, k: int) -> list[str]:
    existing = set(ctx.practice_codes)
    out: list[str] = []
    for d in rng.permutation(1000):
        code = f"Y99{d:03d}"
        if code not in existing:
            out.append(code)
        if len(out) == k:
            break
    return out


def practice_branch(rng, df, ctx):
    return df.with_columns((pl.col("practice_name") + " (BRANCH SURGERY)").alias("practice_name"))


def practice_bad_code(rng, df, ctx):
    d = np.floor(rng.random(df.height) * 9999).astype(int)
    codes = [f"C{x:04d}" if i % 2 == 0 else f"CY{x:04d}" for i, x in enumerate(d)]
    return df.with_columns(
        pl.Series("practice_code", codes), (pl.lit("SYNTHETIC TEST SURGERY")).alias("practice_name")
    )


def practice_bad_pcn(rng, df, ctx):
    codes = _new_practice_codes(rng, ctx, df.height)
    bad = [
        f"U{int(u * 9999):04d}" if i % 2 == 0 else f"P{int(u * 99999):05d}"
        for i, u in enumerate(rng.random(df.height))
    ]
    return df.with_columns(
        pl.Series("practice_code", codes),
        pl.lit("SYNTHETIC NEW SURGERY").alias("practice_name"),
        pl.Series("pcn_code", bad),
    )


def practice_no_name(rng, df, ctx):
    codes = _new_practice_codes(rng, ctx, df.height)
    return df.with_columns(
        pl.Series("practice_code", codes), pl.lit(None, dtype=pl.Utf8).alias("practice_name")
    )


# --- eligibility ----------------------------------------------------------------------------------


def current_reg(df, ctx):
    return df["registration_end"].is_null().to_numpy()


def past_not_booked(df, ctx):
    d = df["appointment_date"].cast(pl.Int32).to_numpy()
    return (d <= ctx.extract_day) & (df["status"] != "booked").to_numpy()


def discharged(df, ctx):
    return (df["status"] == "discharged").to_numpy()


OPTIONS: dict[str, list[Option]] = {
    "practices": [
        Option("practice_code", "duplicate_key", rows=practice_branch),
        Option("practice_code", "malformed_code", rows=practice_bad_code),
        Option("pcn_code", "malformed_code", rows=practice_bad_pcn),
        Option("practice_name", "missing_required", rows=practice_no_name),
    ],
    "gp_patients": [
        Option(
            "nhs_number", "duplicate_key", rows=patient_second_registration, eligible=current_reg
        ),
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("date_of_birth", "future_date", future),
        Option("date_of_birth", "out_of_range", dob_before_1900),
        Option("date_of_birth", "bad_date", bad_date),
        Option("sex", "not_allowed_value", const("X", "Male", "9")),
        Option("ethnic_category", "not_allowed_value", const("T", "White British", "O")),
        Option("lsoa11_code", "malformed_code", bad_lsoa),
        Option("lsoa21_code", "malformed_code", bad_lsoa),
        Option("practice_code", "orphan_reference", orphan_practice),
        Option("practice_code", "missing_required", missing),
        Option("registration_end", "date_order", _before("registration_start", 400)),
        Option("registration_start", "bad_date", bad_date),
    ],
    "gp_events": [
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("event_date", "future_date", future),
        Option("event_date", "bad_date", bad_date),
        Option("snomed_code", "malformed_code", bad_snomed),
        Option("snomed_code", "missing_required", missing),
        Option("numeric_value", "not_a_number", const("high", ">90", "see letter")),
        Option("practice_code", "missing_required", missing),
    ],
    "gp_medications": [
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("issue_date", "bad_date", bad_date),
        Option("dmd_code", "malformed_code", const("32003O001", "DMD320030001", "3200-30001")),
        Option("dmd_code", "missing_required", missing),
        Option("bnf_code", "malformed_code", bnf_too_long),
        Option("quantity", "not_a_number", const("28 tabs", "one pack", "as directed")),
    ],
    "gp_appointments": [
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("appointment_date", "future_date", future, eligible=past_not_booked),
        Option("appointment_date", "bad_date", bad_date),
        Option(
            "status",
            "not_allowed_value",
            const("seen", "no_show", "arrived"),
            eligible=past_not_booked,
        ),
        Option("status", "missing_required", missing, eligible=past_not_booked),
        Option("staff_role", "not_allowed_value", const("receptionist", "locum_gp", "physio")),
        Option("mode", "not_allowed_value", const("email", "sms", "online")),
    ],
    "sus_apc": [
        Option("spell_id", "duplicate_key", rows=copy_rows),
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("discharge_date", "date_order", _before("admission_date", 10)),
        Option("admission_date", "bad_date", bad_date),
        Option("admission_method", "not_allowed_value", const("26", "27", "10")),
        # v2 consistency: died (4/5) with a destination other than 79
        Option("discharge_method", "not_allowed_value", const("4", "5"), eligible=_alive_dest),
        # v2 consistency: "not discharged" (98) on a spell that has a discharge_date
        Option(
            "discharge_destination", "not_allowed_value", const("98"), eligible=_discharged_alive
        ),
        Option("primary_diagnosis", "malformed_code", const("XYZ", "I5O0", "123", "ZZ99")),
        Option("primary_diagnosis", "missing_required", missing),
    ],
    "sus_ecds": [
        Option("attendance_id", "duplicate_key", rows=copy_rows),
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("arrival_datetime", "bad_date", bad_datetime),
        Option("department_type", "not_allowed_value", const("05", "1", "ED")),
        Option("admitted", "not_allowed_value", const("yes", "Y", "2")),
        Option("provider_code", "missing_required", missing),
    ],
    "sus_op": [
        Option("appointment_id", "duplicate_key", rows=copy_rows),
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("appointment_date", "bad_date", bad_date),
        Option("attendance_status", "not_allowed_value", const("8", "1", "DNA")),
        Option("treatment_function_code", "malformed_code", const("32", "3200", "ABC")),
    ],
    "ppn": [
        Option("ppn_id", "duplicate_key", rows=copy_rows),
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("shared_date", "date_order", _before("incident_date", 30)),
        Option("incident_date", "bad_date", bad_date),
        Option("category", "not_allowed_value", const("burglary", "asb", "Mental Health")),
        Option("risk_level", "not_allowed_value", const("critical", "low", "HIGH")),
    ],
    "sp_referrals": [
        Option("referral_id", "duplicate_key", rows=copy_rows),
        Option("nhs_number", "bad_nhs_number", bad_nhs),
        Option("referral_date", "bad_date", bad_date),
        Option("source", "not_allowed_value", const("pharmacy", "hospital", "GP")),
        Option("reasons", "not_allowed_value", reasons_not_allowed),
        Option("contact_attempts", "out_of_range", const("-1", "-2")),
        Option("contact_attempts", "not_a_number", const("three", "several")),
        Option("status", "not_allowed_value", const("closed", "open", "Discharged")),
        Option("discharge_date", "missing_required", missing, eligible=discharged),
    ],
    "sp_outcomes": [
        Option("referral_id", "orphan_reference", orphan_referral),
        Option("score", "out_of_range", score_out_of_range),
        Option("score", "not_a_number", const("seven", "high", "5..5")),
        Option("timepoint", "not_allowed_value", const("followup_12m", "6m", "Baseline")),
        Option("recorded_date", "bad_date", bad_date),
    ],
    "community_assets": [
        Option("asset_id", "duplicate_key", rows=copy_rows),
        Option("category", "not_allowed_value", const("library", "sports", "Food")),
        Option("latitude", "out_of_range", const("57.15", "48.86", "61.2")),
        Option("longitude", "not_a_number", const("1.13W", "west", "-1,13")),
        Option("name", "missing_required", missing),
    ],
}


def as_text(s: pl.Series) -> pl.Series:
    """A column rendered as the CSV writer renders it."""
    if s.dtype == pl.Date:
        return s.dt.strftime("%Y-%m-%d")
    if isinstance(s.dtype, pl.Datetime):
        return s.dt.strftime("%Y-%m-%dT%H:%M:%S")
    if s.dtype == pl.Boolean:
        return (
            pl.select(pl.when(s).then(pl.lit("true")).otherwise(pl.lit("false")))
            .to_series()
            .alias(s.name)
        )
    return s.cast(pl.Utf8)


def inject(
    table: str, df: pl.DataFrame, rate: float, rng: np.random.Generator, ctx: Context
) -> tuple[pl.DataFrame, list[tuple]]:
    """Inject faults into ``df``; returns the new frame and the fault records
    ``(table, row_number, column, fault, value)``."""
    options = OPTIONS[table]
    n = df.height
    if rate <= 0 or n == 0:
        return df, []
    k = max(1, round(rate * n))
    order = rng.permutation(len(options))
    counts = np.zeros(len(options), dtype=int)
    for i in range(k):
        counts[order[i % len(options)]] += 1
    used = np.zeros(n, dtype=bool)
    protected = ctx.protected.get(table)
    records: list[tuple] = []
    appended: list[pl.DataFrame] = []
    next_row = n
    # appended rows first: their originals are then off limits for in-place faults
    for oi, opt in enumerate(options):
        if not opt.appends or counts[oi] == 0:
            continue
        elig = np.ones(n, dtype=bool) if opt.eligible is None else opt.eligible(df, ctx)
        cand = np.flatnonzero(elig & ~used)
        rows = np.sort(rng.choice(cand, size=min(counts[oi], len(cand)), replace=False))
        used[rows] = True
        new = opt.rows(rng, df[rows], ctx)
        appended.append(new)
        vals = as_text(new[opt.column]).to_list()
        for j, v in enumerate(vals):
            records.append((table, next_row + j + 1, opt.column, opt.kind, "" if v is None else v))
        next_row += new.height
    if protected is not None:
        used |= protected
    mods: dict[str, tuple[list[np.ndarray], list[list]]] = {}
    for oi, opt in enumerate(options):
        if opt.appends or counts[oi] == 0:
            continue
        elig = np.ones(n, dtype=bool) if opt.eligible is None else opt.eligible(df, ctx)
        cand = np.flatnonzero(elig & ~used)
        rows = np.sort(rng.choice(cand, size=min(counts[oi], len(cand)), replace=False))
        used[rows] = True
        values = opt.values(rng, df[rows], ctx)
        idx_list, val_list = mods.setdefault(opt.column, ([], []))
        idx_list.append(rows)
        val_list.append(values)
        for r, v in zip(rows, values, strict=True):
            records.append((table, int(r) + 1, opt.column, opt.kind, "" if v is None else v))
    out = pl.concat([df, *appended], how="vertical") if appended else df
    if mods:
        cols = []
        for col, (idx_list, val_list) in mods.items():
            idx = np.concatenate(idx_list)
            vals = [v for vs in val_list for v in vs]
            s = as_text(out[col]).scatter(idx, pl.Series(vals, dtype=pl.Utf8))
            cols.append(s.alias(col))
        out = out.with_columns(cols)
    return out, records


def faults_frame(records: list[tuple]) -> pl.DataFrame:
    rank = {t: i for i, t in enumerate(TABLE_NAMES)}
    df = pl.DataFrame(
        records, schema=list(FAULT_COLUMNS), orient="row", schema_overrides={"row_number": pl.Int64}
    )
    if df.height == 0:
        return df
    return (
        df.with_columns(pl.col("table").replace_strict(rank, return_dtype=pl.Int32).alias("_rank"))
        .sort(["_rank", "row_number"], maintain_order=True)
        .drop("_rank")
    )
