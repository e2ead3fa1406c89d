"""Model features as of an index date, built by the same code that builds the current measures.

:func:`build_features` makes an *as-of snapshot* of the record in a fresh in-memory DuckDB
connection (only what was known on ``as_of``: see :data:`SNAPSHOT_SQL`), runs
:func:`phm.measures.build_measures` on it with ``extract_date = as_of``, and derives
one row per patient registered (and alive) on ``as_of`` from the resulting measures tables.
Training (``as_of`` = extract date - 730 days), validation (- 365) and scoring (the extract
date itself) all go through this one function, so features cannot drift apart between them.

The candidate features are described by :func:`feature_catalogue` (name, plain-words label,
source table, look-back). :func:`feature_coverage` checks, per feature, that the delivery's
history reaches back far enough for its look-back window at a given index date: a delivery
that holds, say, only the last 12 months of prescriptions cannot supply "medicines in the 12
months before" an index date two years ago, and a feature that is silently zero in training
but populated at scoring would bias every score. Uncovered features are left out of a model.

Patients are keyed by ``nhs_number`` inside the snapshot only; :func:`build_features` returns
``person_id`` (via ``marts.person_identity``), never the NHS number.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache

import duckdb
import polars as pl

from phm.contract import TABLE_NAMES
from phm.measures import build_measures, load_efi_definition, load_ltc_conditions
from phm.measures._sql import date_literal

#: bump when the meaning of a feature changes without its name or definition text changing
FEATURE_SCHEMA_VERSION = 1

#: a source table's history counts as reaching back to a window's start if its earliest record
#: is no more than this many days after that start (sparse tables start a little late)
COVERAGE_TOLERANCE_DAYS = 31

DAYS_12M = 365
DAYS_2Y = 730

# --------------------------------------------------------------------------------------
# The as-of snapshot
# --------------------------------------------------------------------------------------

#: per staging table: the rows (and values) known on the index date ``{d}`` (a DATE literal);
#: ``{staging}`` is the warehouse's staging schema (catalog-qualified)
SNAPSHOT_SQL: dict[str, str] = {
    "practices": "SELECT * FROM {staging}.practices",
    "community_assets": "SELECT * FROM {staging}.community_assets",
    # registered on the index date; a later end or death was not yet known
    "gp_patients": """
        SELECT * REPLACE (
            CASE WHEN registration_end > {d} THEN NULL ELSE registration_end END
                AS registration_end,
            CASE WHEN date_of_death > {d} THEN NULL ELSE date_of_death END AS date_of_death)
        FROM {staging}.gp_patients
        WHERE registration_start <= {d} AND (registration_end IS NULL OR registration_end > {d})
    """,
    "gp_events": "SELECT * FROM {staging}.gp_events WHERE event_date <= {d}",
    "gp_medications": "SELECT * FROM {staging}.gp_medications WHERE issue_date <= {d}",
    "gp_appointments": "SELECT * FROM {staging}.gp_appointments WHERE appointment_date <= {d}",
    # admitted by the index date; a discharge after it was not yet known (still in hospital)
    "sus_apc": """
        SELECT * REPLACE (
            CASE WHEN discharge_date > {d} THEN NULL ELSE discharge_date END AS discharge_date)
        FROM {staging}.sus_apc
        WHERE admission_date <= {d}
    """,
    "sus_ecds": "SELECT * FROM {staging}.sus_ecds WHERE CAST(arrival_datetime AS DATE) <= {d}",
    "sus_op": "SELECT * FROM {staging}.sus_op WHERE appointment_date <= {d}",
    # the practice knows a notification from the day it is shared
    "ppn": "SELECT * FROM {staging}.ppn WHERE shared_date <= {d}",
    # referral made by the index date; later contact / discharge not yet known
    "sp_referrals": """
        SELECT * REPLACE (
            CASE WHEN first_contact_date > {d} THEN NULL ELSE first_contact_date END
                AS first_contact_date,
            CASE WHEN discharge_date > {d} THEN NULL ELSE discharge_date END AS discharge_date,
            CASE WHEN status = 'discharged' AND discharge_date > {d}
                      THEN CASE WHEN first_contact_date <= {d} THEN 'active' ELSE 'waiting' END
                 WHEN status = 'active' AND (first_contact_date IS NULL OR first_contact_date > {d})
                      THEN 'waiting'
                 ELSE status END AS status)
        FROM {staging}.sp_referrals
        WHERE referral_date <= {d}
    """,
    "sp_outcomes": """
        SELECT * FROM {staging}.sp_outcomes
        WHERE recorded_date <= {d}
          AND referral_id IN (SELECT referral_id FROM {staging}.sp_referrals
                              WHERE referral_date <= {d})
    """,
}

assert set(SNAPSHOT_SQL) == set(TABLE_NAMES), "the snapshot must restate every contract table"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@contextmanager
def snapshot(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection (a cursor of ``con``) whose default catalog holds the record as known on
    ``as_of``; closed, and its catalog dropped, when the ``with`` block ends.

    The snapshot is a fresh in-memory catalog attached to the warehouse's database:
    ``reference.*`` is copied whole (measures rewrite its definition tables) and each
    ``staging.<table>`` is a view restricting the warehouse table by :data:`SNAPSHOT_SQL`,
    so the record is read in place instead of being copied (through Arrow) into a second
    database. Whatever the caller builds (``marts.*``) goes to the in-memory catalog; the
    warehouse is only read.
    """
    d = date_literal(as_of)
    source = con.execute("SELECT current_database()").fetchone()[0]
    ref_tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = ? AND table_schema = 'reference' ORDER BY 1",
            [source],
        ).fetchall()
    ]
    if "codelists" not in ref_tables:
        raise LookupError(
            "reference.codelists is missing: load the code lists (the reference/codelists "
            "asset) before building features"
        )
    name = f"phm_snapshot_{uuid.uuid4().hex}"
    con.execute(f"ATTACH ':memory:' AS {name} (READ_WRITE)")
    snap = con.cursor()
    try:
        snap.execute(f"USE {name}")
        snap.execute("SET enable_progress_bar = false")
        for schema in ("staging", "reference", "marts"):
            snap.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        src = _quote(source)
        for t in ref_tables:
            snap.execute(f"CREATE TABLE reference.{t} AS SELECT * FROM {src}.reference.{t}")
        for t in TABLE_NAMES:
            query = SNAPSHOT_SQL[t].format(d=d, staging=f"{src}.staging")
            snap.execute(f"CREATE VIEW staging.{t} AS {query}")
        yield snap
    finally:
        snap.close()
        con.execute(f"DETACH {name}")


# --------------------------------------------------------------------------------------
# The feature catalogue
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feature:
    name: str
    label: str  # plain words
    source: str  # staging table the value depends on (for coverage)
    lookback_days: int | None  # None = whole record ("ever") or not time-windowed
    kind: str  # "binary" | "count" | "continuous"
    #: factor group for plain-words explanations (features in one group are switched together)
    group: str


#: display names for conditions whose register name is long (presentation only)
_SHORT_NAMES = {
    "chd": "coronary heart disease",
    "stroke_tia": "stroke or TIA",
    "pvd": "peripheral vascular disease",
    "thyroid": "thyroid disorder",
    "ckd": "chronic kidney disease",
    "asthma": "asthma",
    "copd": "COPD",
    "cancer": "cancer (last 5 years)",
    "epilepsy": "epilepsy",
    "parkinsons": "Parkinson's disease",
    "rheumatoid_arthritis": "rheumatoid arthritis",
    "anxiety": "anxiety disorder",
    "severe_mental_illness": "severe mental illness",
    "alcohol_problems": "alcohol problems",
    "substance_misuse": "substance misuse",
    "eating_disorders": "eating disorder",
    "inflammatory_bowel_disease": "inflammatory bowel disease",
    "learning_disability": "learning disability",
}


def condition_label(condition_id: str, name: str) -> str:
    if condition_id in _SHORT_NAMES:
        return _SHORT_NAMES[condition_id]
    short = re.sub(r"\s*\(.*?\)", "", name).strip()
    return short[:1].lower() + short[1:] if short[1:2].islower() else short


#: a count as a risk factor in words: the singular noun, and the plural if not singular + "s"
Noun = tuple[str] | tuple[str, str]

UTILISATION_FEATURES: tuple[tuple[str, str, str, str, Noun | None], ...] = (
    # name, label, source, group, the noun that words its group as a risk factor
    # ("<n> <nouns> in the last 12 months"; None: the group is worded by another feature)
    (
        "emergency_admissions_12m",
        "emergency admissions in the last 12 months",
        "sus_apc",
        "em",
        ("emergency admission",),
    ),
    (
        "bed_days_12m",
        "days in hospital in the last 12 months",
        "sus_apc",
        "bed_days",
        ("day in hospital", "days in hospital"),
    ),
    (
        "elective_admissions_12m",
        "planned admissions in the last 12 months",
        "sus_apc",
        "elective",
        ("planned admission",),
    ),
    (
        "ae_attendances_12m",
        "A&E attendances in the last 12 months",
        "sus_ecds",
        "ae",
        ("A&E attendance",),
    ),
    (
        "ae_type1_attendances_12m",
        "major A&E attendances in the last 12 months",
        "sus_ecds",
        "ae",
        None,
    ),
    (
        "op_attendances_12m",
        "outpatient attendances in the last 12 months",
        "sus_op",
        "op",
        ("outpatient attendance",),
    ),
    (
        "op_dna_12m",
        "missed outpatient appointments in the last 12 months",
        "sus_op",
        "op_dna",
        ("missed outpatient appointment",),
    ),
    (
        "gp_appointments_attended_12m",
        "GP practice appointments attended in the last 12 months",
        "gp_appointments",
        "gp",
        ("GP practice appointment",),
    ),
    (
        "gp_appointments_dna_12m",
        "GP practice appointments missed in the last 12 months",
        "gp_appointments",
        "gp_dna",
        ("missed GP practice appointment",),
    ),
    (
        "gp_days_since_attendance",
        "days since the last attended GP practice appointment (366 = none in 12 months)",
        "gp_appointments",
        "gp",
        None,
    ),
)
#: police notifications: a 12-month count worded like the utilisation counts
PPN_FEATURE = "ppn_12m"
PPN_NOUN: Noun = ("police safeguarding notification",)


@lru_cache(maxsize=1)
def feature_catalogue() -> tuple[Feature, ...]:
    """Every candidate feature, in model column order (derived from the measure definitions)."""
    conditions = load_ltc_conditions()
    efi = load_efi_definition()
    f: list[Feature] = [
        Feature("age", "age in years", "gp_patients", None, "continuous", "age"),
        Feature("is_male", "male", "gp_patients", None, "binary", "sex"),
        Feature(
            "imd_decile",
            "IMD 2019 decile of the home LSOA (1 = most deprived; 5.5 when unknown)",
            "gp_patients",
            None,
            "continuous",
            "imd",
        ),
        Feature("imd_unknown", "home LSOA unknown", "gp_patients", None, "binary", "imd"),
    ]
    for c in conditions:
        rule = "register diagnosis code rule"
        if c.medication is not None:
            rule += "; the register's treatment rule is not applied"
        f.append(
            Feature(
                f"ltc_{c.id}",
                f"{condition_label(c.id, c.name)} ({rule})",
                "gp_events",
                None,
                "binary",
                f"ltc_{c.id}",
            )
        )
    f += [
        Feature("ltc_count", "long-term conditions", "gp_events", None, "count", "multimorbidity"),
        Feature(
            "ltc_mental_count",
            "mental health long-term conditions",
            "gp_events",
            None,
            "count",
            "multimorbidity",
        ),
        Feature(
            "ltc_physical_count",
            "physical long-term conditions",
            "gp_events",
            None,
            "count",
            "multimorbidity",
        ),
    ]
    for d in efi.deficits:
        f.append(
            Feature(f"efi_{d.id}", f"eFI deficit: {d.name}", "gp_events", None, "binary", "frailty")
        )
    f += [
        Feature(
            "efi_coded_deficits",
            f"coded eFI deficits (of {len(efi.deficits)})",
            "gp_events",
            None,
            "count",
            "frailty",
        ),
        Feature(
            "efi_polypharmacy",
            "polypharmacy (eFI: 5+ distinct medicines in 12 months)",
            "gp_medications",
            efi.polypharmacy.days,
            "binary",
            "medicines",
        ),
        Feature(
            "distinct_medicines_12m",
            "distinct medicines issued in the last 12 months (BNF chapters 1-15)",
            "gp_medications",
            efi.polypharmacy.days,
            "count",
            "medicines",
        ),
        Feature(
            "hfrs_score",
            "Hospital Frailty Risk Score (spells in the last 2 years; 0 without a spell)",
            "sus_apc",
            DAYS_2Y,
            "continuous",
            "hfrs",
        ),
        Feature(
            "hfrs_spells_2y",
            "hospital spells in the last 2 years",
            "sus_apc",
            DAYS_2Y,
            "count",
            "hfrs",
        ),
    ]
    for name, label, source, group, _ in UTILISATION_FEATURES:
        kind = "continuous" if name == "gp_days_since_attendance" else "count"
        f.append(Feature(name, label, source, DAYS_12M, kind, group))
    f += [
        Feature(
            PPN_FEATURE,
            "police Public Protection Notifications shared in the last 12 months",
            "ppn",
            DAYS_12M,
            "count",
            "ppn",
        ),
        Feature(
            "sp_referral_12m",
            "referred to social prescribing in the last 12 months",
            "sp_referrals",
            DAYS_12M,
            "binary",
            "sp",
        ),
        Feature(
            "sp_contact_12m",
            "first contact with a social prescriber in the last 12 months",
            "sp_referrals",
            DAYS_12M,
            "binary",
            "sp",
        ),
    ]
    names = [x.name for x in f]
    assert len(set(names)) == len(names)
    return tuple(f)


def feature_names() -> list[str]:
    return [f.name for f in feature_catalogue()]


def feature_set_hash() -> str:
    """SHA-256 of the candidate feature definitions (names, meaning, sources, look-backs).

    A model records it; scoring refuses a model whose features were defined differently.
    """
    payload = {
        "schema_version": FEATURE_SCHEMA_VERSION,
        "features": [asdict(f) for f in feature_catalogue()],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------
# Factor groups in plain words (the risk register's "risk factors")
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def counted_factors() -> dict[str, tuple[str, Noun]]:
    """Factor groups worded as "<n> <noun> in the last 12 months": group -> (the feature
    counted, its noun), from :data:`UTILISATION_FEATURES` and the PPN count."""
    groups = {f.name: f.group for f in feature_catalogue()}
    out = {group: (name, noun) for name, _, _, group, noun in UTILISATION_FEATURES if noun}
    out[groups[PPN_FEATURE]] = (PPN_FEATURE, PPN_NOUN)
    return out


def _plural(n: float, one: str, many: str | None = None) -> str:
    k = math.floor(float(n) + 0.5)
    return f"{k} {one if k == 1 else (many or one + 's')}"


@lru_cache(maxsize=1)
def _efi_categories() -> tuple[tuple[str, int, int], ...]:
    return load_efi_definition().categories


@lru_cache(maxsize=1)
def _condition_words() -> dict[str, str]:
    return {c.id: condition_label(c.id, c.name) for c in load_ltc_conditions()}


def _efi_band(deficits: float) -> str:
    k = math.floor(float(deficits) + 0.5)
    for name, lo, hi in _efi_categories():
        if lo <= k <= hi:
            return name
    return "severe"


#: why a risk factor's count of long-term conditions can be below the register's ``ltc_count``
LTC_FACTOR_NOTE = (
    "The risk factors count long-term conditions coded as diagnoses (the registers' "
    "diagnosis-code rules); ltc_count counts the registers themselves, which for four "
    "conditions also look at treatment (asthma and epilepsy must be currently treated; "
    "depression and anxiety can be met by prescription alone), so the two can differ."
)


def factor_text(group: str, row: dict[str, float]) -> str:
    """A factor group of :func:`feature_catalogue` in plain words for one patient (``row``:
    feature name -> value), e.g. "age 84", "heart failure", "3 emergency admissions in the
    last 12 months", "4 long-term conditions coded as diagnoses"."""
    g = group
    if g == "age":
        return f"age {int(row['age'])}"
    if g == "sex":
        return "male"
    if g == "imd":
        if row.get("imd_unknown"):
            return "home area unknown"
        return f"lives in an IMD decile {int(row['imd_decile'])} area (1 = most deprived)"
    if g.startswith("ltc_"):
        return _condition_words().get(g.removeprefix("ltc_"), g)
    if g == "multimorbidity":
        # the model counts the registers' diagnosis-code rules only (LTC_FACTOR_NOTE), so the
        # words say so: the register's ltc_count next to it can differ
        return _plural(
            row["ltc_count"],
            "long-term condition coded as a diagnosis",
            "long-term conditions coded as diagnoses",
        )
    if g == "frailty":
        n = row["efi_coded_deficits"]
        band = _efi_band(n)
        if band == "fit":
            return _plural(n, "frailty deficit") + " (eFI)"
        return f"{band} frailty (eFI, {_plural(n, 'deficit')})"
    if g == "medicines":
        return _plural(row.get("distinct_medicines_12m", 0), "different medicine") + " in 12 months"
    if g == "hfrs":
        return f"Hospital Frailty Risk Score {row['hfrs_score']:.1f}"
    counted = counted_factors()
    if g in counted:
        col, noun = counted[g]
        return _plural(row.get(col, 0), *noun) + " in the last 12 months"
    if g == "sp":
        return "referred to social prescribing in the last 12 months"
    return g


# --------------------------------------------------------------------------------------
# Coverage of look-back windows by the delivery's history
# --------------------------------------------------------------------------------------

#: the date column that places each source table's records in time
SOURCE_DATE_SQL = {
    "gp_medications": "issue_date",
    "gp_appointments": "appointment_date",
    "sus_apc": "admission_date",
    "sus_ecds": "CAST(arrival_datetime AS DATE)",
    "sus_op": "appointment_date",
    "ppn": "shared_date",
    "sp_referrals": "referral_date",
}


def source_history_start(con: duckdb.DuckDBPyConnection) -> dict[str, dt.date | None]:
    """Earliest record date of each time-windowed source table in ``staging``."""
    out = {}
    for table, col in SOURCE_DATE_SQL.items():
        out[table] = con.execute(f"SELECT min({col}) FROM staging.{table}").fetchone()[0]
    return out


def feature_coverage(
    con: duckdb.DuckDBPyConnection,
    index_dates: list[dt.date],
    *,
    tolerance_days: int = COVERAGE_TOLERANCE_DAYS,
) -> tuple[list[str], dict[str, str]]:
    """Which candidate features the delivery can supply at every one of ``index_dates``.

    A feature with a look-back of L days at index date d needs its source table's history to
    start by ``d - L + 1`` (plus ``tolerance_days``). Returns (covered feature names in
    catalogue order, {excluded feature: reason}). Features over the whole record (diagnoses,
    eFI codes, demographics) are always covered: their history cannot be checked this way.
    """
    starts = source_history_start(con)
    covered, excluded = [], {}
    for f in feature_catalogue():
        if f.lookback_days is None or f.source not in starts:
            covered.append(f.name)
            continue
        start = starts[f.source]
        reasons = []
        for d in index_dates:
            need = d - dt.timedelta(days=f.lookback_days - 1)
            if start is None:
                reasons.append(f"staging.{f.source} is empty")
                break
            if start > need + dt.timedelta(days=tolerance_days):
                reasons.append(
                    f"needs staging.{f.source} from {need} (a {f.lookback_days}-day look-back "
                    f"at {d}); the delivery's history starts {start}"
                )
                break
        if reasons:
            excluded[f.name] = reasons[0]
        else:
            covered.append(f.name)
    return covered, excluded


# --------------------------------------------------------------------------------------
# Building the features
# --------------------------------------------------------------------------------------


def _features_sql(as_of: dt.date) -> str:
    conditions = load_ltc_conditions()
    efi = load_efi_definition()
    d = date_literal(as_of)
    w0 = date_literal(as_of - dt.timedelta(days=DAYS_12M - 1))
    ltc_ids = ", ".join(f"'{c.id}'" for c in conditions)
    def_ids = ", ".join(f"'{x.id}'" for x in efi.deficits)
    ltc_flags = ",\n".join(f"coalesce(l.{c.id}_n, 0) > 0 AS ltc_{c.id}" for c in conditions)
    mental = [c.id for c in conditions if c.type == "mental"]
    physical = [c.id for c in conditions if c.type == "physical"]

    def count_of(ids: list[str]) -> str:
        if not ids:
            return "0"
        return " + ".join(f"CAST(coalesce(l.{i}_n, 0) > 0 AS INTEGER)" for i in ids)

    efi_flags = ",\n".join(f"coalesce(e.{x.id}_n, 0) > 0 AS efi_{x.id}" for x in efi.deficits)
    efi_count = " + ".join(f"CAST(coalesce(e.{x.id}_n, 0) > 0 AS INTEGER)" for x in efi.deficits)
    util = ",\n".join(
        f"CAST(pm.{name} AS DOUBLE) AS {name}"
        for name, *_ in UTILISATION_FEATURES
        if name != "gp_days_since_attendance"
    )
    return f"""
        WITH ltc AS (
            PIVOT (SELECT nhs_number, condition_id FROM marts.ltc_registers WHERE meets_code_rule)
            ON condition_id IN ({ltc_ids})
            USING count(*) AS n
            GROUP BY nhs_number
        ),
        efi AS (
            PIVOT (SELECT nhs_number, deficit_id FROM marts.efi_deficits)
            ON deficit_id IN ({def_ids})
            USING count(*) AS n
            GROUP BY nhs_number
        ),
        ppn AS (
            SELECT nhs_number, count(*) AS n FROM staging.ppn
            WHERE shared_date BETWEEN {w0} AND {d} GROUP BY nhs_number
        ),
        sp AS (
            SELECT nhs_number,
                   bool_or(referral_date BETWEEN {w0} AND {d}) AS referral,
                   bool_or(first_contact_date BETWEEN {w0} AND {d}) AS contact
            FROM staging.sp_referrals GROUP BY nhs_number
        )
        SELECT pm.nhs_number,
               CAST(pm.age AS DOUBLE) AS age,
               pm.sex = 'M' AS is_male,
               coalesce(CAST(pm.imd2019_decile AS DOUBLE), 5.5) AS imd_decile,
               pm.imd2019_decile IS NULL AS imd_unknown,
               {ltc_flags},
               CAST({count_of([c.id for c in conditions])} AS DOUBLE) AS ltc_count,
               CAST({count_of(mental)} AS DOUBLE) AS ltc_mental_count,
               CAST({count_of(physical)} AS DOUBLE) AS ltc_physical_count,
               {efi_flags},
               CAST({efi_count} AS DOUBLE) AS efi_coded_deficits,
               coalesce(pm.has_efi_polypharmacy, false) AS efi_polypharmacy,
               CAST(pm.efi_distinct_medicines_12m AS DOUBLE) AS distinct_medicines_12m,
               coalesce(CAST(pm.hfrs_score AS DOUBLE), 0.0) AS hfrs_score,
               CAST(pm.hfrs_spells_2y AS DOUBLE) AS hfrs_spells_2y,
               {util},
               CAST(least(coalesce(pm.days_since_last_gp_attendance, {DAYS_12M + 1}),
                          {DAYS_12M + 1}) AS DOUBLE) AS gp_days_since_attendance,
               CAST(coalesce(ppn.n, 0) AS DOUBLE) AS ppn_12m,
               coalesce(sp.referral, false) AS sp_referral_12m,
               coalesce(sp.contact, false) AS sp_contact_12m
        FROM marts.patient_measures pm
        LEFT JOIN ltc l USING (nhs_number)
        LEFT JOIN efi e USING (nhs_number)
        LEFT JOIN ppn USING (nhs_number)
        LEFT JOIN sp USING (nhs_number)
        ORDER BY pm.nhs_number
    """


def snapshot_features(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """The feature matrix keyed by ``nhs_number`` (for use inside the warehouse only)."""
    with snapshot(con, as_of) as snap:
        build_measures(snap, as_of, load_reference=False)
        df = snap.execute(_features_sql(as_of)).pl()
    names = feature_names()
    casts = [
        pl.col(f.name).cast(pl.Float64) if f.kind != "binary" else pl.col(f.name).cast(pl.Boolean)
        for f in feature_catalogue()
    ]
    return df.select("nhs_number", *names).with_columns(casts)


def build_features(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> pl.DataFrame:
    """Features of every patient registered and alive on ``as_of``, keyed by ``person_id``.

    ``con`` is the warehouse (``staging``, ``reference`` and ``marts.person_identity`` are
    read, nothing is written). Columns: ``person_id`` then :func:`feature_names` (binary
    features Boolean, the rest Float64), sorted by ``person_id``.
    """
    feats = snapshot_features(con, as_of)
    ident = con.execute("SELECT nhs_number, person_id FROM marts.person_identity").pl()
    out = feats.join(ident, on="nhs_number", how="left")
    missing = out.filter(pl.col("person_id").is_null()).height
    if missing:
        raise LookupError(
            f"{missing} patient(s) registered on {as_of} have no person_id in "
            "marts.person_identity: rebuild the measures (pseudonymisation) first"
        )
    return out.select("person_id", *feature_names()).sort("person_id")
