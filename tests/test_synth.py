"""Tests of the synthetic data generator (phm.synth).

The contract rules are restated here as polars expressions (one boolean "violated" column per
rule), independent of the generator's code: a clean delivery must violate none, and in a
faulty delivery exactly the rows listed in ``faults.csv`` must violate exactly one rule each,
the one named by the listed fault kind.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
from pathlib import Path

import nhs_number
import numpy as np
import polars as pl
import pytest
from modulus11 import nhs_ok

from phm.codelists import is_valid_sctid
from phm.contract import (
    ADMISSION_METHODS,
    APPOINTMENT_MODES,
    APPOINTMENT_STATUS,
    ASSET_CATEGORIES,
    DEPARTMENT_TYPES,
    DISCHARGE_DESTINATION_GROUPS,
    DISCHARGE_DESTINATIONS,
    DISCHARGE_METHODS,
    EMERGENCY_ADMISSION_METHODS,
    ETHNIC_CATEGORIES,
    OP_ATTENDANCE_STATUS,
    PPN_CATEGORIES,
    PPN_RISK_LEVELS,
    SEX,
    SP_MEASURE_RANGES,
    SP_REASONS,
    SP_SOURCES,
    SP_STATUS,
    SP_TIMEPOINTS,
    STAFF_ROLES,
    TABLE_NAMES,
    TABLES,
)
from phm.paths import REFERENCE_DIR, sidecar_dir
from phm.synth import NHS_TEST_CAPACITY, NHS_TEST_PATIENTS, generate
from phm.synth.codes import (
    generate_nhs_numbers,
    icd10_messy,
    load_codelist,
    nhs_check_digits,
    nhs_test_capacity,
)
from phm.synth.faults import FAULT_COLUMNS, FAULT_KINDS
from phm.synth.reference import IMD_PATH, load_params

EXTRACT = dt.date(2025, 11, 1)
EXTRACT_STR = EXTRACT.isoformat()


# --- helpers ---------------------------------------------------------------------------------------


def read_table(delivery: Path, table: str) -> pl.DataFrame:
    """A delivered table as strings exactly as written (CSV, CSV.gz or Parquet)."""
    for suffix in (".csv", ".csv.gz"):
        p = delivery / f"{table}{suffix}"
        if p.exists():
            return pl.read_csv(p, infer_schema=False)
    df = pl.read_parquet(delivery / f"{table}.parquet")
    out = []
    for name, dtype in df.schema.items():
        c = pl.col(name)
        if dtype == pl.Date:
            c = c.dt.strftime("%Y-%m-%d")
        elif isinstance(dtype, pl.Datetime):
            c = c.dt.strftime("%Y-%m-%dT%H:%M:%S")
        elif dtype == pl.Boolean:
            c = pl.when(c).then(pl.lit("true")).otherwise(pl.lit("false"))
        out.append(c.cast(pl.Utf8).alias(name))
    return df.select(out)


def parse_date(col: str) -> pl.Expr:
    return pl.col(col).str.strptime(pl.Date, "%Y-%m-%d", strict=False)


def missing(col: str) -> pl.Expr:
    return pl.col(col).is_null()


def bad_date(col: str) -> pl.Expr:
    return pl.col(col).is_not_null() & parse_date(col).is_null()


def not_in(col: str, allowed) -> pl.Expr:
    return pl.col(col).is_not_null() & ~pl.col(col).is_in(list(allowed))


def dup_after_first(*cols: str) -> pl.Expr:
    return pl.col(cols[0]).is_not_null() & ~pl.struct(*cols).is_first_distinct()


def not_number(col: str, dtype=pl.Float64) -> pl.Expr:
    return pl.col(col).is_not_null() & pl.col(col).cast(dtype, strict=False).is_null()


ICD10 = r"^[A-Z]\d{2}(\.?\d)?[X\-\*]?$"


def rules(table: str, df: pl.DataFrame, extract: dt.date, ctx: dict) -> dict[str, pl.Expr]:
    """rule name -> expression that is True where a row violates the rule. Rule names are
    '<column>:<fault kind>' so a fault record can be matched to the rule it breaks."""
    E = pl.lit(extract)
    r: dict[str, pl.Expr] = {}
    if "nhs_number" in df.columns:
        r["nhs_number:missing_required"] = missing("nhs_number")
        r["nhs_number:bad_nhs_number"] = pl.col("nhs_number").is_not_null() & ~nhs_ok("nhs_number")

    def required_date(col: str) -> None:
        r[f"{col}:missing_required"] = missing(col)
        r[f"{col}:bad_date"] = bad_date(col)

    def required(col: str) -> None:
        r[f"{col}:missing_required"] = missing(col)

    if table == "practices":
        required("practice_code")
        r["practice_code:malformed_code"] = pl.col("practice_code").is_not_null() & ~pl.col(
            "practice_code"
        ).str.contains(r"^[A-Z]\d{5}$")
        r["practice_code:duplicate_key"] = dup_after_first("practice_code")
        required("practice_name")
        required("pcn_code")
        r["pcn_code:malformed_code"] = pl.col("pcn_code").is_not_null() & ~pl.col(
            "pcn_code"
        ).str.contains(r"^U\d{5}$")
        required("pcn_name")
    elif table == "gp_patients":
        required_date("date_of_birth")
        r["date_of_birth:future_date"] = parse_date("date_of_birth") > E
        r["date_of_birth:out_of_range"] = parse_date("date_of_birth") < pl.lit(dt.date(1900, 1, 1))
        required("sex")
        r["sex:not_allowed_value"] = not_in("sex", SEX)
        r["ethnic_category:not_allowed_value"] = not_in("ethnic_category", ETHNIC_CATEGORIES)
        r["lsoa11_code:malformed_code"] = pl.col("lsoa11_code").is_not_null() & ~pl.col(
            "lsoa11_code"
        ).str.contains(r"^E01\d{6}$")
        r["lsoa21_code:malformed_code"] = pl.col("lsoa21_code").is_not_null() & ~pl.col(
            "lsoa21_code"
        ).str.contains(r"^E01\d{6}$")
        required("practice_code")
        r["practice_code:orphan_reference"] = not_in("practice_code", ctx["practice_codes"])
        required_date("registration_start")
        r["registration_end:bad_date"] = bad_date("registration_end")
        r["registration_end:date_order"] = parse_date("registration_end") < parse_date(
            "registration_start"
        )
        r["date_of_death:bad_date"] = bad_date("date_of_death")
        current = pl.col("registration_end").is_null()
        r["nhs_number:duplicate_key"] = (
            current
            & pl.col("nhs_number").is_not_null()
            & ~pl.struct(pl.col("nhs_number"), current.alias("current")).is_first_distinct()
        )
    elif table == "gp_events":
        required_date("event_date")
        r["event_date:future_date"] = parse_date("event_date") > E
        required("snomed_code")
        r["snomed_code:malformed_code"] = pl.col("snomed_code").is_not_null() & ~pl.col(
            "snomed_code"
        ).str.contains(r"^\d{6,18}$")
        r["numeric_value:not_a_number"] = not_number("numeric_value")
        required("practice_code")
    elif table == "gp_medications":
        required_date("issue_date")
        required("dmd_code")
        r["dmd_code:malformed_code"] = pl.col("dmd_code").is_not_null() & ~pl.col(
            "dmd_code"
        ).str.contains(r"^\d+$")
        r["bnf_code:malformed_code"] = pl.col("bnf_code").str.len_chars() > 15
        r["quantity:not_a_number"] = not_number("quantity")
    elif table == "gp_appointments":
        required_date("appointment_date")
        required("status")
        r["status:not_allowed_value"] = not_in("status", APPOINTMENT_STATUS)
        r["appointment_date:future_date"] = (parse_date("appointment_date") > E) & pl.col(
            "status"
        ).is_in([s for s in APPOINTMENT_STATUS if s != "booked"])
        required("staff_role")
        r["staff_role:not_allowed_value"] = not_in("staff_role", STAFF_ROLES)
        r["mode:not_allowed_value"] = not_in("mode", APPOINTMENT_MODES)
        required("practice_code")
    elif table == "sus_apc":
        required("spell_id")
        r["spell_id:duplicate_key"] = dup_after_first("spell_id")
        required("provider_code")
        required_date("admission_date")
        r["discharge_date:bad_date"] = bad_date("discharge_date")
        r["discharge_date:date_order"] = parse_date("discharge_date") < parse_date("admission_date")
        required("admission_method")
        r["admission_method:not_allowed_value"] = not_in("admission_method", ADMISSION_METHODS)
        has_date = pl.col("discharge_date").is_not_null()
        method, dest = pl.col("discharge_method"), pl.col("discharge_destination")
        r["discharge_method:not_allowed_value"] = (
            not_in("discharge_method", DISCHARGE_METHODS)
            | (method.is_in(["4", "5"]) & dest.is_not_null() & (dest != "79"))
            | ((method == "8") & has_date)
        ).fill_null(False)
        r["discharge_destination:not_allowed_value"] = (
            not_in("discharge_destination", DISCHARGE_DESTINATIONS) | ((dest == "98") & has_date)
        ).fill_null(False)
        required("primary_diagnosis")
        r["primary_diagnosis:malformed_code"] = pl.col("primary_diagnosis").is_not_null() & ~pl.col(
            "primary_diagnosis"
        ).str.contains(ICD10)
        r["secondary_diagnoses:malformed_code"] = (
            pl.col("secondary_diagnoses")
            .str.split(";")
            .list.eval(~pl.element().str.contains(ICD10))
            .list.any()
        ) | (pl.col("secondary_diagnoses").str.split(";").list.len() > 23)
    elif table == "sus_ecds":
        required("attendance_id")
        r["attendance_id:duplicate_key"] = dup_after_first("attendance_id")
        required("provider_code")
        r["arrival_datetime:missing_required"] = missing("arrival_datetime")
        r["arrival_datetime:bad_date"] = (
            pl.col("arrival_datetime").is_not_null()
            & pl.col("arrival_datetime")
            .str.strptime(pl.Datetime, "%Y-%m-%dT%H:%M:%S", strict=False)
            .is_null()
        )
        required("department_type")
        r["department_type:not_allowed_value"] = not_in("department_type", DEPARTMENT_TYPES)
        required("admitted")
        r["admitted:not_allowed_value"] = not_in("admitted", ["true", "false"])
    elif table == "sus_op":
        required("appointment_id")
        r["appointment_id:duplicate_key"] = dup_after_first("appointment_id")
        required_date("appointment_date")
        required("attendance_status")
        r["attendance_status:not_allowed_value"] = not_in("attendance_status", OP_ATTENDANCE_STATUS)
        required("treatment_function_code")
        r["treatment_function_code:malformed_code"] = pl.col(
            "treatment_function_code"
        ).is_not_null() & ~pl.col("treatment_function_code").str.contains(r"^\d{3}$")
    elif table == "ppn":
        required("ppn_id")
        r["ppn_id:duplicate_key"] = dup_after_first("ppn_id")
        required_date("incident_date")
        required_date("shared_date")
        r["shared_date:date_order"] = parse_date("shared_date") < parse_date("incident_date")
        required("category")
        r["category:not_allowed_value"] = not_in("category", PPN_CATEGORIES)
        required("risk_level")
        r["risk_level:not_allowed_value"] = not_in("risk_level", PPN_RISK_LEVELS)
    elif table == "sp_referrals":
        required("referral_id")
        r["referral_id:duplicate_key"] = dup_after_first("referral_id")
        required_date("referral_date")
        required("source")
        r["source:not_allowed_value"] = not_in("source", SP_SOURCES)
        required("reasons")
        r["reasons:not_allowed_value"] = (
            pl.col("reasons")
            .str.split(";")
            .list.eval(~pl.element().is_in(list(SP_REASONS)))
            .list.any()
        )
        required("contact_attempts")
        r["contact_attempts:not_a_number"] = not_number("contact_attempts", pl.Int64)
        r["contact_attempts:out_of_range"] = (
            pl.col("contact_attempts").cast(pl.Int64, strict=False) < 0
        )
        r["first_contact_date:bad_date"] = bad_date("first_contact_date")
        required("status")
        r["status:not_allowed_value"] = not_in("status", SP_STATUS)
        r["discharge_date:missing_required"] = (pl.col("status") == "discharged") & missing(
            "discharge_date"
        )
        r["discharge_date:bad_date"] = bad_date("discharge_date")
    elif table == "sp_outcomes":
        required("referral_id")
        r["referral_id:orphan_reference"] = not_in("referral_id", ctx["referral_ids"])
        required("measure")
        r["measure:not_allowed_value"] = not_in("measure", SP_MEASURE_RANGES)
        required("timepoint")
        r["timepoint:not_allowed_value"] = not_in("timepoint", SP_TIMEPOINTS)
        required("score")
        r["score:not_a_number"] = not_number("score")
        score = pl.col("score").cast(pl.Float64, strict=False)
        lo = pl.col("measure").replace_strict(
            {k: float(v[0]) for k, v in SP_MEASURE_RANGES.items()}, default=None
        )
        hi = pl.col("measure").replace_strict(
            {k: float(v[1]) for k, v in SP_MEASURE_RANGES.items()}, default=None
        )
        r["score:out_of_range"] = (score < lo) | (score > hi)
        required_date("recorded_date")
    elif table == "community_assets":
        required("asset_id")
        r["asset_id:duplicate_key"] = dup_after_first("asset_id")
        required("name")
        required("category")
        r["category:not_allowed_value"] = not_in("category", ASSET_CATEGORIES)
        for col, lo, hi in (("latitude", 49.8, 55.9), ("longitude", -6.5, 2.0)):
            required(col)
            r[f"{col}:not_a_number"] = not_number(col)
            v = pl.col(col).cast(pl.Float64, strict=False)
            r[f"{col}:out_of_range"] = (v < lo) | (v > hi)
    return r


def violations(delivery: Path, extract: dt.date) -> dict[str, pl.DataFrame]:
    """Per table: row_number (1-based) and the rules each violating row breaks."""
    frames = {t: read_table(delivery, t) for t in TABLE_NAMES}
    pr = frames["practices"]
    ctx = {
        "practice_codes": pr.filter(pr["practice_code"].is_first_distinct())["practice_code"]
        .drop_nulls()
        .to_list(),
        "referral_ids": frames["sp_referrals"]["referral_id"].drop_nulls().unique().to_list(),
    }
    out = {}
    for t, df in frames.items():
        rs = rules(t, df, extract, ctx)
        checked = df.with_row_index("row_number", offset=1).with_columns(
            [e.fill_null(False).alias(f"!{name}") for name, e in rs.items()]
        )
        names = [f"!{n}" for n in rs]
        long = (
            checked.select(["row_number", *names])
            .unpivot(index="row_number", on=names, variable_name="rule", value_name="bad")
            .filter(pl.col("bad"))
            .with_columns(pl.col("rule").str.slice(1))
            .select("row_number", "rule")
            .sort("row_number", "rule")
        )
        out[t] = long
    return out


def gen(tmp: Path, n: int, seed: int = 7, faults: float = 0.0, fmt: str = "csv"):
    return generate(tmp, n, seed, EXTRACT, faults=faults, fmt=fmt)


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A faults=0 delivery big enough for the epidemiology checks."""
    root = tmp_path_factory.mktemp("clean")
    return gen(root, 20_000, seed=11)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulty")
    return gen(root, 4_000, seed=5, faults=0.02)


# --- unit checks of helpers --------------------------------------------------------------------------


def test_nhs_numbers_are_valid_unique_test_range():
    nums = generate_nhs_numbers(np.random.default_rng(3), 50_000)
    assert len(set(nums.tolist())) == 50_000
    assert all(v.startswith("999") and len(v) == 10 for v in nums[:1000])
    # checked by the nhs-number library, independently of the generator's own arithmetic
    assert all(nhs_number.is_valid(v) for v in nums[:5000])
    # the generator's Modulus 11 on the public Wikipedia example 943 476 591 9
    assert nhs_check_digits(np.array([[9, 4, 3, 4, 7, 6, 5, 9, 1]])).tolist() == [9]
    # a stem whose check digit would be 10 cannot be a number: 000000006 (6 x weight 2 = 12)
    assert nhs_check_digits(np.array([[0, 0, 0, 0, 0, 0, 0, 0, 6]])).tolist() == [10]
    with pytest.raises(ValueError, match="999 test range"):
        generate_nhs_numbers(np.random.default_rng(3), 950_000)
    assert nhs_test_capacity() == NHS_TEST_CAPACITY == 909_091


def test_benchmark_overflow_takes_further_prefixes_only_when_998_is_used_up():
    # up to 1,818,182 numbers: the 999 range, then 998 only
    two = generate_nhs_numbers(np.random.default_rng(5), 1_200_000, overflow=True)
    assert {v[:3] for v in two.tolist()} == {"999", "998"}
    # beyond (a 3,000,000-patient benchmark): 997 next, every number unique and valid
    many = generate_nhs_numbers(np.random.default_rng(5), 1_900_000, overflow=True)
    assert len(set(many.tolist())) == 1_900_000
    assert {v[:3] for v in many.tolist()} == {"999", "998", "997"}
    assert all(nhs_number.is_valid(v) for v in many[:: 1_900_000 // 5000])


def test_generate_refuses_more_patients_than_test_nhs_numbers(tmp_path):
    with pytest.raises(ValueError, match=f"enough for {NHS_TEST_PATIENTS:,} current patients"):
        generate(tmp_path, NHS_TEST_PATIENTS + 1, 1, EXTRACT)
    assert not any(tmp_path.iterdir())


def test_icd10_messy_forms_normalise_back():
    codes = np.array(["I500", "I10", "F009", "E119", "W19"])
    seen = set()
    for form in range(4):
        out = icd10_messy(codes, np.full(len(codes), form), {"F00"})
        seen.update(out.tolist())
        norm = [o.replace(".", "").replace("*", "").replace("-", "") for o in out]
        norm = [x[:3] if len(x) == 4 and x.endswith("X") else x for x in norm]
        assert norm == codes.tolist()
    assert {"I500", "I50.0", "I500-", "I10X", "I10-", "F00.9*", "E119-", "I10"} <= seen


def test_code_lists_drop_invalid_sctids():
    for spec in ("pcd:hyp_cod", "gm:cancer/2", "gm:efi-falls/1", "oc:opensafely-symptoms-anxiety"):
        codes = load_codelist(spec)
        assert codes and all(is_valid_sctid(c) for c in codes)
    bad = pl.read_csv(REFERENCE_DIR / "codelists" / "INVALID_SCTIDS.csv", infer_schema=False)
    assert not set(bad["code"].to_list()) & set(load_codelist("gm:cancer/2"))


# --- determinism, structure, manifest ----------------------------------------------------------------


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_identical_files_and_other_seed_differs(tmp_path):
    a = gen(tmp_path / "a", 1500, seed=3, faults=0.02)
    b = gen(tmp_path / "b", 1500, seed=3, faults=0.02)
    c = gen(tmp_path / "c", 1500, seed=4, faults=0.02)
    da, db, dc = _digests(tmp_path / "a"), _digests(tmp_path / "b"), _digests(tmp_path / "c")
    assert da == db
    # tables, manifest, truth, v2 truth, impact truth, faults
    assert len(da) == len(TABLE_NAMES) + 5
    assert f"_sidecar/{EXTRACT_STR}/impact_truth.json" in da
    assert a.rows == b.rows and a.n_faults == b.n_faults
    differing = [k for k in da if da[k] != dc.get(k)]
    assert f"{EXTRACT_STR}/gp_events.csv" in differing
    assert f"{EXTRACT_STR}/gp_patients.csv" in differing
    assert c.rows != a.rows


def test_columns_in_contract_order_and_manifest_matches(clean):
    manifest = json.loads((clean.delivery / "_manifest.json").read_text())
    assert manifest["extract_date"] == EXTRACT_STR
    assert manifest["contract_version"] == 2
    assert set(manifest["files"]) == set(TABLE_NAMES)
    for t in TABLE_NAMES:
        path = clean.delivery / f"{t}.csv"
        header = path.open(encoding="utf-8").readline().rstrip("\n").split(",")
        assert header == TABLES[t].column_names, t
        entry = manifest["files"][t]
        assert entry["file"] == path.name
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["rows"] == read_table(clean.delivery, t).height == clean.rows[t]
        assert clean.rows[t] > 0, t
    # the manifest is written last
    newest_table = max((clean.delivery / f"{t}.csv").stat().st_mtime_ns for t in TABLE_NAMES)
    assert (clean.delivery / "_manifest.json").stat().st_mtime_ns >= newest_table
    assert clean.truth == sidecar_dir(clean.delivery.parent, EXTRACT_STR) / "truth.parquet"
    assert clean.faults is None


# --- contract rules on a clean delivery ---------------------------------------------------------------


def test_clean_delivery_breaks_no_contract_rule(clean):
    v = violations(clean.delivery, EXTRACT)
    broken = {t: df["rule"].value_counts().to_dicts() for t, df in v.items() if df.height}
    assert broken == {}


def test_clean_delivery_formats_and_references(clean):
    d = clean.delivery
    pat = read_table(d, "gp_patients")
    assert pat["nhs_number"].str.starts_with("999").all()
    cur = pat.filter(pl.col("registration_end").is_null())
    # plus hospital deaths the GP record does not show yet (still registered at the extract)
    lag = pl.read_parquet(clean.truth.parent / "v2_truth.parquet").filter(
        "gp_date_of_death_missing"
    )
    assert cur.height == 20_000 + lag.height and cur["nhs_number"].n_unique() == cur.height
    ended = pat.filter(pl.col("registration_end").is_not_null())
    assert ended.height > 0
    dead = ended.filter(pl.col("date_of_death").is_not_null())
    assert dead.height > 0 and (dead["date_of_death"] == dead["registration_end"]).all()
    # transfers: some NHS numbers have an ended and a current registration
    assert pat["nhs_number"].n_unique() < pat.height
    # real Leicester LSOAs, ~0.5% unknown
    imd = pl.read_csv(
        REFERENCE_DIR / "imd2019" / "imd2019_lsoa11_england_tidy.csv.gz", infer_schema=False
    )
    leicester = set(imd.filter(pl.col("lad19cd") == "E06000016")["lsoa11cd"].to_list())
    lsoa = pat["lsoa11_code"]
    assert set(lsoa.drop_nulls().to_list()) <= leicester
    assert 0.002 < lsoa.is_null().mean() < 0.012
    assert (
        pat["ethnic_category"].is_null().any() and pat["ethnic_category"].is_in(["Z", "99"]).any()
    )
    # practices: real codes, PCNs of 3-6, at least two PCNs, one practice per ~8,000 patients
    pr = read_table(d, "practices")
    ods = pl.read_csv(REFERENCE_DIR / "ods" / "epraccur_qk1_llr.csv", infer_schema=False)
    active = ods.filter((pl.col("prescribing_setting") == "4") & (pl.col("status_code") == "A"))
    assert set(pr["practice_code"].to_list()) <= set(active["organisation_code"].to_list())
    assert pr.height == 6 and (pr["icb_code"] == "QK1").all()
    sizes = pr.group_by("pcn_code").len()["len"]
    assert sizes.len() >= 2 and sizes.min() >= 3 and sizes.max() <= 6
    # every patient's practice is used, registration shares are uneven but none tiny
    share = cur["practice_code"].value_counts(normalize=True)["proportion"]
    assert share.len() == 6 and share.min() > 0.03
    # gp_events only valid SNOMED ids; vendored noise codes absent from code lists occur
    ev = read_table(d, "gp_events")
    codes = ev["snomed_code"].unique().to_list()
    assert all(is_valid_sctid(c) for c in codes)
    assert {"271649006", "27113001"} <= set(codes)  # BP and weight readings
    assert ev.filter(pl.col("snomed_code") == "271649006")["numeric_value"].is_not_null().all()
    # QOF clusters, resolved codes, invitations and eFI deficits all appear
    for spec in (
        "pcd:hyp_cod",
        "pcd:astres_cod",
        "pcd:dminvite_cod",
        "pcd:fluinvite_cod",
        "gm:efi-falls/1",
        "oc:opensafely-symptoms-anxiety",
        "oc:primis-covid19-vacc-uptake-carer",
        "gm:did-not-attend/1",
    ):
        assert ev["snomed_code"].is_in(list(load_codelist(spec))).any(), spec
    # all 35 eFI deficit lists are coded
    efi_sets = sorted(p.parent.name for p in (REFERENCE_DIR / "codelists").glob("efi-*/1"))
    assert len(efi_sets) == 35
    code_set = set(codes)
    assert [s for s in efi_sets if not code_set & set(load_codelist(f"gm:{s}/1"))] == []
    # medications: BNF chapters 1-15, numeric dm+d ids, monthly repeats, polypharmacy
    med = read_table(d, "gp_medications")
    chapters = med["bnf_code"].str.slice(0, 2).cast(pl.Int32).unique().to_list()
    assert set(range(1, 16)) <= set(chapters)
    assert med["dmd_code"].str.contains(r"^\d+$").all()
    window = med.with_columns(parse_date("issue_date").alias("d")).filter(
        pl.col("d") > pl.lit(EXTRACT - dt.timedelta(days=365))
    )
    distinct = window.group_by("nhs_number").agg(pl.col("dmd_code").n_unique().alias("k"))
    assert (distinct["k"] >= 5).sum() > 0.02 * 20_000
    # appointments: future only booked, social prescribers, DNAs
    ap = read_table(d, "gp_appointments")
    assert (ap.filter(parse_date("appointment_date") > pl.lit(EXTRACT))["status"] == "booked").all()
    assert ap.filter(pl.col("status") == "booked").height > 0
    assert set(ap["staff_role"].unique().to_list()) == set(STAFF_ROLES)
    assert 0.02 < (ap["status"] == "did_not_attend").mean() < 0.15
    # SUS: every messy ICD-10 form occurs, HFRS codes, patients still in hospital
    apc = read_table(d, "sus_apc")
    allcodes = pl.concat(
        [apc["primary_diagnosis"], apc["secondary_diagnoses"].str.split(";").explode()]
    ).drop_nulls()
    assert allcodes.str.contains(r"^[A-Z]\d{3}$").any()  # I500
    assert allcodes.str.contains(r"^[A-Z]\d{2}\.\d$").any()  # I50.0
    assert allcodes.str.contains(r"^[A-Z]\d{2}X$").any()  # I50X
    assert allcodes.str.contains(r"^[A-Z]\d{2}\.\d\*$").any()  # F00.0*
    assert allcodes.str.contains(r"^[A-Z]\d{3}-$").any()  # E119-
    assert allcodes.str.contains(r"^[A-Z]\d{2}$").any()  # I10
    assert (
        allcodes.str.slice(0, 3).is_in(["F00", "F05", "W19", "R26", "R29", "N39", "L89"]).sum() > 50
    )
    assert apc["discharge_date"].is_null().any()
    assert set(apc["admission_method"].unique().to_list()) >= {"11", "21", "22", "31", "82"}
    assert apc["spell_id"].n_unique() == apc.height
    # ED attendances ending in admission match emergency spells admitted via A&E
    ed = read_table(d, "sus_ecds")
    adm = ed.filter(pl.col("admitted") == "true").select(
        "nhs_number", pl.col("arrival_datetime").str.slice(0, 10).alias("day")
    )
    via_ae = apc.filter(pl.col("admission_method") == "21").select(
        "nhs_number", pl.col("admission_date").alias("day")
    )
    assert adm.sort(["nhs_number", "day"]).equals(via_ae.sort(["nhs_number", "day"]))
    assert set(ed["department_type"].unique().to_list()) == set(DEPARTMENT_TYPES)
    op = read_table(d, "sus_op")
    assert {"3", "5"} <= set(op["attendance_status"].unique().to_list())
    # PPNs concentrated in a small group, shared after the incident
    ppn = read_table(d, "ppn")
    people = ppn["nhs_number"].n_unique()
    assert 0.004 * 20_000 < people < 0.03 * 20_000 and ppn.height > 1.5 * people
    gap = (parse_date("shared_date") - parse_date("incident_date")).dt.total_days()
    gaps = ppn.select(gap.alias("g"))["g"]
    assert gaps.min() >= 0 and gaps.median() >= 1
    # social prescribing: attempts, statuses, matching appointments, outcomes in range
    sp = read_table(d, "sp_referrals")
    assert set(sp["status"].unique().to_list()) == set(SP_STATUS)
    assert sp["contact_attempts"].cast(pl.Int64).max() >= 3
    engaged = sp.filter(pl.col("first_contact_date").is_not_null())
    sp_appts = ap.filter(pl.col("staff_role") == "social_prescriber").select(
        "nhs_number", pl.col("appointment_date").alias("first_contact_date")
    )
    assert engaged.join(sp_appts, on=["nhs_number", "first_contact_date"], how="anti").height == 0
    assets = read_table(d, "community_assets")
    assert assets.height == 80 and set(assets["category"].unique().to_list()) == set(
        ASSET_CATEGORIES
    )
    assert set(assets["lsoa11_code"].to_list()) <= leicester


# --- faults ---------------------------------------------------------------------------------------


def test_fault_sidecar_matches_the_files(faulty):
    fpath = faulty.faults
    assert fpath == sidecar_dir(faulty.delivery.parent, EXTRACT_STR) / "faults.csv"
    fl = pl.read_csv(fpath, infer_schema=False)
    assert fl.columns == list(FAULT_COLUMNS)
    assert fl.height == faulty.n_faults > 0
    assert set(fl["fault"].unique().to_list()) == set(FAULT_KINDS)
    assert fl.select("table", "row_number").is_duplicated().sum() == 0
    for t in TABLE_NAMES:
        df = read_table(faulty.delivery, t).with_row_index("row_number", offset=1)
        listed = fl.filter(pl.col("table") == t).with_columns(pl.col("row_number").cast(pl.UInt32))
        assert listed.height >= 1, t
        for col in listed["column"].unique().to_list():
            rows = listed.filter(pl.col("column") == col)
            got = rows.join(
                df.select("row_number", pl.col(col).alias("actual")), on="row_number", how="left"
            )
            expect = got["value"].fill_null("")
            assert (got["actual"].fill_null("") == expect).all(), (t, col)
        # rate: about 2% of the rows (tables big enough to tell)
        n_clean = faulty.rows[t] - listed.filter(pl.col("fault") == "duplicate_key").height
        if n_clean >= 2000:
            assert abs(listed.height / n_clean - 0.02) < 0.004, t
    # NHS-number values in the sidecar never look like a valid number outside the 999 range
    nhs_vals = fl.filter(pl.col("column") == "nhs_number")["value"].to_list()
    assert all(v.startswith("999") for v in nhs_vals)


def test_each_fault_breaks_exactly_its_one_rule(faulty):
    fl = pl.read_csv(faulty.faults, infer_schema=False).with_columns(
        pl.col("row_number").cast(pl.UInt32)
    )
    v = violations(faulty.delivery, EXTRACT)
    for t in TABLE_NAMES:
        listed = fl.filter(pl.col("table") == t).select(
            "row_number", (pl.col("column") + ":" + pl.col("fault")).alias("rule")
        )
        found = v[t]
        per_row = found.group_by("row_number").len()
        assert per_row["len"].max() == 1, (
            t,
            found.filter(
                pl.col("row_number").is_in(
                    per_row.filter(pl.col("len") > 1)["row_number"].implode()
                )
            ).head(10),
        )
        assert found.sort("row_number").equals(listed.sort("row_number")), t


def test_faults_zero_leaves_no_sidecar(tmp_path):
    root = tmp_path / "x"
    gen(root, 400, seed=1, faults=0.05)
    assert (sidecar_dir(root, EXTRACT_STR) / "faults.csv").exists()
    res = gen(root, 400, seed=1, faults=0.0)
    assert res.faults is None and not (sidecar_dir(root, EXTRACT_STR) / "faults.csv").exists()


# --- epidemiology -----------------------------------------------------------------------------------


def _ltc_counts(delivery: Path) -> pl.DataFrame:
    """Current patients with age, IMD decile and the number of long-term conditions with a
    diagnosis code in gp_events (codes mapped back through the same code lists)."""
    params = load_params()
    mapping = []
    for key, c in params["conditions"].items():
        for spec in c.get("codelists") or [c["codelist"]]:
            mapping += [(code, key) for code in load_codelist(spec)]
    code_map = pl.DataFrame(mapping, schema=["snomed_code", "ltc"], orient="row").unique()
    ev = read_table(delivery, "gp_events").select("nhs_number", "snomed_code")
    ltc = (
        ev.join(code_map, on="snomed_code")
        .group_by("nhs_number")
        .agg(pl.col("ltc").n_unique().alias("n_ltc"))
    )
    pat = read_table(delivery, "gp_patients").filter(pl.col("registration_end").is_null())
    imd = pl.read_csv(
        REFERENCE_DIR / "imd2019" / "imd2019_lsoa11_england_tidy.csv.gz", infer_schema=False
    ).select(pl.col("lsoa11cd").alias("lsoa11_code"), pl.col("imd_decile").cast(pl.Int32))
    return (
        pat.join(imd, on="lsoa11_code", how="left")
        .join(ltc, on="nhs_number", how="left")
        .with_columns(
            pl.col("n_ltc").fill_null(0),
            ((pl.lit(EXTRACT) - parse_date("date_of_birth")).dt.total_days() / 365.25).alias("age"),
        )
    )


def test_ltc_burden_rises_with_age_and_deprivation(clean):
    p = _ltc_counts(clean.delivery)
    bands = [(0, 18), (18, 40), (40, 60), (60, 80), (80, 120)]
    means = [
        p.filter((pl.col("age") >= lo) & (pl.col("age") < hi))["n_ltc"].mean() for lo, hi in bands
    ]
    assert all(a < b for a, b in itertools.pairwise(means)), means
    mid = p.filter((pl.col("age") >= 50) & (pl.col("age") < 60))
    deprived = mid.filter(pl.col("imd_decile") <= 2)["n_ltc"].mean()
    affluent = mid.filter(pl.col("imd_decile") >= 7)["n_ltc"].mean()
    assert deprived > affluent + 0.2, (deprived, affluent)
    # Leicester is young: many 20-40s, few 80+
    share_20_40 = p.filter((pl.col("age") >= 20) & (pl.col("age") < 40)).height / p.height
    share_80 = p.filter(pl.col("age") >= 80).height / p.height
    assert share_20_40 > 0.28 and share_80 < 0.05


def test_emergency_admissions_follow_the_truth(clean):
    truth = pl.read_parquet(clean.truth)
    assert truth.columns == [
        "nhs_number",
        "p_emergency_12m_before",
        "p_emergency_12m_after",
        "frailty_u",
    ]
    assert truth.height == 20_000 and truth["nhs_number"].n_unique() == 20_000
    for col in ("p_emergency_12m_before", "p_emergency_12m_after"):
        assert truth[col].min() > 0 and truth[col].max() < 1
    apc = read_table(clean.delivery, "sus_apc")
    em = apc.filter(
        pl.col("admission_method").is_in(list(EMERGENCY_ADMISSION_METHODS))
        & (parse_date("admission_date") > pl.lit(EXTRACT - dt.timedelta(days=365)))
        & (parse_date("admission_date") <= pl.lit(EXTRACT))
    )
    p = _ltc_counts(clean.delivery).join(truth, on="nhs_number")
    p = p.with_columns(pl.col("nhs_number").is_in(em["nhs_number"].implode()).alias("had"))
    observed = p["had"].mean()
    expected = p["p_emergency_12m_before"].mean()
    se = (
        float(np.sqrt((p["p_emergency_12m_before"] * (1 - p["p_emergency_12m_before"])).sum()))
        / p.height
    )
    assert abs(observed - expected) < 4 * se, (observed, expected, se)
    assert 0.04 < observed < 0.12
    young = p.filter((pl.col("age") >= 18) & (pl.col("age") < 50))["had"].mean()
    mid = p.filter((pl.col("age") >= 50) & (pl.col("age") < 75))["had"].mean()
    old = p.filter(pl.col("age") >= 75)["had"].mean()
    assert young < mid < old, (young, mid, old)
    # the truth is informative: the riskiest tenth is admitted far more often
    top = p.filter(pl.col("p_emergency_12m_after") >= pl.col("p_emergency_12m_after").quantile(0.9))
    assert top["had"].mean() > 3 * p["had"].mean()


def test_the_unobserved_frailty_shows_in_service_use(clean):
    """The frailty that multiplies the emergency hazard also multiplies GP, A&E and outpatient
    contact rates, so the record carries a trace of it (as frequent attendance does in life)."""
    truth = pl.read_parquet(clean.truth)
    u = truth["frailty_u"]
    assert u.min() > 0 and abs(u.mean() - 1) < 0.02
    since = pl.lit(EXTRACT - dt.timedelta(days=365))
    counts = {
        name: read_table(clean.delivery, name)
        .with_columns(pl.col(col).str.slice(0, 10).alias("_day"))
        .filter((parse_date("_day") > since) & (parse_date("_day") <= pl.lit(EXTRACT)))
        .group_by("nhs_number")
        .len(name)
        for name, col in (
            ("gp_appointments", "appointment_date"),
            ("sus_ecds", "arrival_datetime"),
            ("sus_op", "appointment_date"),
        )
    }
    p = _ltc_counts(clean.delivery).join(truth, on="nhs_number")
    for name, c in counts.items():
        p = p.join(c, on="nhs_number", how="left").with_columns(pl.col(name).fill_null(0))
    # within the same age band and number of conditions, the frailest quarter uses more
    adults = p.filter((pl.col("age") >= 18) & (pl.col("age") < 65) & (pl.col("n_ltc") == 0))
    hi = adults.filter(pl.col("frailty_u") >= pl.col("frailty_u").quantile(0.75))
    lo = adults.filter(pl.col("frailty_u") <= pl.col("frailty_u").quantile(0.25))
    for name in counts:
        assert hi[name].mean() > 1.5 * lo[name].mean(), (name, hi[name].mean(), lo[name].mean())


def test_social_prescribing_outcomes_improve(clean):
    out = read_table(clean.delivery, "sp_outcomes").with_columns(pl.col("score").cast(pl.Float64))
    for m, (lo, hi) in SP_MEASURE_RANGES.items():
        s = out.filter(pl.col("measure") == m)["score"]
        assert s.len() > 0 and s.min() >= lo and s.max() <= hi
    wide = out.pivot(on="timepoint", index=["referral_id", "measure"], values="score").drop_nulls()
    change = wide.group_by("measure").agg(
        (pl.col("followup_6m") - pl.col("baseline")).mean().alias("d")
    )
    d = dict(zip(change["measure"], change["d"], strict=True))
    assert d["wemwbs_short"] > 1.0 and d["ons4_life_satisfaction"] > 0.4
    assert d["ucla3_loneliness"] < -0.3 and d["ons4_anxiety"] < -0.3


# --- social prescribing impact: referral at a peak of need, known true effect -----------------


IMPACT_KEYS = [
    f"{o}_{w}"
    for w in ("6m", "12m")
    for o in ("gp_appointments", "ae_attendances", "emergency_admissions")
]


def test_impact_truth_sidecar_has_the_effects_with_the_parameterised_signs(clean):
    path = sidecar_dir(clean.delivery.parent, EXTRACT_STR) / "impact_truth.json"
    truth = json.loads(path.read_text())
    params = load_params()["social_prescribing"]
    eff = truth["social_prescribing"]
    assert set(eff) == set(IMPACT_KEYS) | set(SP_MEASURE_RANGES)
    for key in IMPACT_KEYS:
        outcome = key.rsplit("_", 1)[0]
        assert truth["n"][key] > 50, key
        # rates x (1 - effect): fewer contacts when the effect is positive
        assert np.sign(eff[key]) == -np.sign(params["effect"][outcome]), key
    for o in ("gp_appointments", "ae_attendances", "emergency_admissions"):
        assert truth["n"][f"{o}_12m"] < truth["n"][f"{o}_6m"]
        assert abs(eff[f"{o}_12m"]) > abs(eff[f"{o}_6m"])
    for m in SP_MEASURE_RANGES:
        assert truth["n"][m] > 50
        assert np.sign(eff[m]) == np.sign(params["measures"][m]["effect"]), m
        # the mean dose is about 1: the truth is of the order of the parameter
        assert 0.5 < eff[m] / params["measures"][m]["effect"] < 1.5, m
    assert truth["parameters"]["effect"] == params["effect"]
    assert "population" in truth["definitions"]


def test_referred_people_use_services_most_just_before_referral(clean):
    """Referral comes at a temporary peak of need: GP and A&E use in the 3 months before the
    first referral is well above the same people's use 7-12 months before."""
    refs = read_table(clean.delivery, "sp_referrals").select(
        "nhs_number", parse_date("referral_date").alias("ref")
    )
    first = refs.group_by("nhs_number").agg(pl.col("ref").min())
    # a full year of history inside the three-year window
    first = first.filter(pl.col("ref") >= pl.lit(EXTRACT - dt.timedelta(days=1094 - 365)))
    assert first.height > 200
    for table, col, ratio in (
        ("gp_appointments", "appointment_date", 1.4),
        ("sus_ecds", "arrival_datetime", 1.3),
    ):
        ev = (
            read_table(clean.delivery, table)
            .with_columns(pl.col(col).str.slice(0, 10).alias("_d"))
            .select("nhs_number", parse_date("_d").alias("day"))
        )
        j = first.join(ev, on="nhs_number", how="left").with_columns(
            (pl.col("ref") - pl.col("day")).dt.total_days().alias("before")
        )
        recent = j.filter((pl.col("before") >= 1) & (pl.col("before") <= 91)).height / 91
        early = j.filter((pl.col("before") >= 183) & (pl.col("before") <= 365)).height / 183
        assert recent > ratio * early, (table, recent, early)


def test_overlay_intensity_matches_the_exact_expectation():
    """Peak events and thinning give exactly rate x (1 + height*s) x (1 - effect) in effect:
    the simulated mean count agrees with impact.expected (the sidecar's arithmetic)."""
    from phm.synth._util import poisson_events
    from phm.synth.community import Referrals
    from phm.synth.impact import expected, make_exposure, overlay

    n = 40_000
    rng = np.random.default_rng(1)
    pid = np.arange(n, dtype=np.int32)
    ref_day = np.full(n, 1000) + (pid % 30)
    fc = ref_day + 10
    engaged = pid % 2 == 0
    refs = Referrals(
        pid,
        ref_day,
        np.full(n, "gp"),
        np.full(n, "other"),
        np.ones(n, dtype=np.int64),
        fc,
        np.where(engaged, "active", "declined"),
        np.full(n, -1),
        np.full(n, 3),
    )
    ex = make_exposure(load_params(), refs, n)
    rate = np.where(pid % 3 == 0, 8.0, 2.0) / 365.25
    lo, hi = np.zeros(n, dtype=np.int64), np.full(n, 2500)
    e_pid, e_day = poisson_events(rng, rate * 365.25, lo, hi)
    e_pid, e_day = overlay(
        rng, ex, "gp_appointments", e_pid, e_day, lambda p, d: rate[p], rate, lo, hi
    )
    for start, days in ((fc, 182), (ref_day - 91, 91), (fc - 182, 182)):
        ev = pl.DataFrame({"pid": e_pid, "day": e_day}).join(
            pl.DataFrame({"pid": pid, "s": start}), on="pid"
        )
        got = np.bincount(
            ev.filter((pl.col("day") >= pl.col("s")) & (pl.col("day") < pl.col("s") + days))[
                "pid"
            ].to_numpy(),
            minlength=n,
        )
        want = expected(ex, "gp_appointments", pid.astype(np.int64), start, days, True)
        se = np.sqrt(want.sum()) / n
        assert abs(got.mean() - want.mean()) < 4 * se, (
            start[0] - ref_day[0],
            got.mean(),
            want.mean(),
        )
    # engaged people lose effect x their expected use after first contact, declined nothing
    untreated = expected(ex, "gp_appointments", pid.astype(np.int64), fc, 182, False)
    treated = expected(ex, "gp_appointments", pid.astype(np.int64), fc, 182, True)
    eff = load_params()["social_prescribing"]["effect"]["gp_appointments"]
    assert np.allclose(treated[engaged], (1 - eff) * untreated[engaged])
    assert np.allclose(treated[~engaged], untreated[~engaged])


# --- other formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv.gz", "parquet"])
def test_other_formats_are_readable_and_match_csv(tmp_path, fmt):
    ref = gen(tmp_path / "csv", 600, seed=9, faults=0.02)
    res = gen(tmp_path / fmt.replace(".", "_"), 600, seed=9, faults=0.02, fmt=fmt)
    manifest = json.loads((res.delivery / "_manifest.json").read_text())
    for t in TABLE_NAMES:
        path = res.files[t]
        assert path.name == f"{t}.{fmt}" and manifest["files"][t]["file"] == path.name
        if fmt == "csv.gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                assert f.readline().rstrip("\n").split(",") == TABLES[t].column_names
        df = read_table(res.delivery, t)
        assert df.columns == TABLES[t].column_names
        assert df.height == manifest["files"][t]["rows"] == ref.rows[t]
        assert df.equals(read_table(ref.delivery, t)), t
    again = gen(tmp_path / "again", 600, seed=9, faults=0.02, fmt=fmt)
    assert _digests(tmp_path / "again") == _digests(tmp_path / fmt.replace(".", "_"))
    assert again.rows == res.rows


def test_v2_discharges_transfers_deaths_and_lsoa21(clean):
    """Contract v2 columns with realistic content, consistent with the truth sidecar."""
    apc = read_table(clean.delivery, "sus_apc")
    methods = apc["admission_method"].value_counts()
    share = dict(zip(methods["admission_method"], methods["count"], strict=True))
    assert share.get("2A", 0) > 0 and share.get("2D", 0) > 0 and share.get("2B", 0) > 0
    assert "26" not in share and "27" not in share
    # still in hospital: 8/98 exactly when there is no discharge date
    no_date = apc["discharge_date"].is_null()
    assert ((apc["discharge_method"] == "8") == no_date).all()
    assert ((apc["discharge_destination"] == "98") == no_date).all()
    # deaths in hospital: 4 with 79, on the GP date of death unless the GP record lags
    died = apc.filter(pl.col("discharge_method") == "4")
    assert died.height > 0 and (died["discharge_destination"] == "79").all()
    groups = {c: g for g, cs in DISCHARGE_DESTINATION_GROUPS.items() for c in cs}
    dest_group = apc["discharge_destination"].replace_strict(groups).value_counts()
    g = dict(zip(dest_group["discharge_destination"], dest_group["count"], strict=True))
    assert g["home"] > 0.8 * apc.height and g["care_home"] > 0 and g["other_hospital"] > 0
    # a transfer is followed by a 2B spell at another provider the same or the next day
    a = apc.with_columns(
        parse_date("admission_date").alias("adm"), parse_date("discharge_date").alias("dis")
    ).sort("nhs_number", "adm", "dis", "admission_method", nulls_last=True)
    nxt = a.with_columns(
        pl.col("adm").shift(-1).over("nhs_number").alias("next_adm"),
        pl.col("admission_method").shift(-1).over("nhs_number").alias("next_method"),
        pl.col("provider_code").shift(-1).over("nhs_number").alias("next_provider"),
    ).filter(pl.col("discharge_destination").is_in(DISCHARGE_DESTINATION_GROUPS["other_hospital"]))
    assert nxt.height > 0
    gap = (nxt["next_adm"] - nxt["dis"]).dt.total_days()
    assert gap.is_in([0, 1]).all()
    assert (nxt["next_method"] == "2B").all()
    assert (nxt["next_provider"] != nxt["provider_code"]).all()
    # truth sidecar: hospital deaths, GP record lag, 2021-only LSOA codes
    truth = pl.read_parquet(clean.truth.parent / "v2_truth.parquet")
    pts = read_table(clean.delivery, "gp_patients")
    lag = truth.filter("gp_date_of_death_missing")["nhs_number"]
    assert lag.len() > 0
    assert set(lag) <= set(died["nhs_number"])
    lagged = pts.filter(pl.col("nhs_number").is_in(lag.implode()))
    assert lagged["date_of_death"].is_null().all() and lagged["registration_end"].is_null().all()
    recorded = truth.filter(pl.col("died_in_hospital") & ~pl.col("gp_date_of_death_missing"))
    rec = pts.filter(pl.col("nhs_number").is_in(recorded["nhs_number"].implode()))
    assert rec["date_of_death"].is_not_null().all()
    imd = set(pl.read_csv(IMD_PATH, columns=["lsoa11cd"])["lsoa11cd"])
    only21 = pts.filter(pl.col("lsoa21_code").is_not_null() & ~pl.col("lsoa21_code").is_in(imd))
    assert 0 < only21.height < 0.1 * pts.height
    assert set(only21["nhs_number"]) == set(truth.filter("lsoa21_only_code")["nhs_number"])
    same = pts.filter(pl.col("lsoa21_code").is_in(imd))
    assert (same["lsoa21_code"] == same["lsoa11_code"]).all()
    assert (pts["lsoa21_code"].is_null() == pts["lsoa11_code"].is_null()).all()
