"""phm.validate: staging/quarantine split, layouts, policies and the data-quality summary."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import polars as pl
import pytest
from pandera.config import CONFIG, ValidationDepth
from test_schemas import BASE, EXTRACT, NHS, REFS, raw_frame, row

import schemas
from phm.contract import TABLE_NAMES, TABLES
from phm.validate import (
    QUARANTINE_COLUMNS,
    MissingColumnsError,
    ValidationResult,
    data_quality_markdown,
    data_quality_summary,
    normalise_icd10,
    reference_keys,
    validate_delivery,
    validate_table,
)


def _mixed_events() -> pl.DataFrame:
    return raw_frame(
        "gp_events",
        [
            BASE["gp_events"],
            row("gp_events", nhs_number="9990000019", event_date="2026-12-01"),  # two faults
            row("gp_events", numeric_value=None, practice_code=" C82002 "),
            row("gp_events", snomed_code=None, practice_code="C99999"),
            row("gp_events", event_date="2026-11-01"),
        ],
        extra=("site_note",),
    ).with_columns(pl.lit("x").alias("site_note"))


def test_rows_in_equal_staging_plus_quarantine():
    raw = _mixed_events()
    r = validate_table("gp_events", raw, EXTRACT, REFS)
    assert r.rows_delivered == raw.height == r.rows_accepted + r.rows_quarantined
    assert sorted(r.staging["_row_number"].to_list() + r.quarantine["_row_number"].to_list()) == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert r.staging["_row_number"].to_list() == [1, 3, 5]


def test_every_broken_rule_is_listed_in_rule_order():
    r = validate_table("gp_events", _mixed_events(), EXTRACT, REFS)
    assert r.quarantine.select("_row_number", "failed_rules").rows() == [
        (2, ["nhs_number: valid Modulus 11 check digit", "event_date: not after extract_date"]),
        (4, ["snomed_code: required", "practice_code exists in practices"]),
    ]
    assert r.rule_counts["nhs_number: valid Modulus 11 check digit"] == 1
    assert r.rule_counts["practice_code exists in practices"] == 1
    assert r.rule_counts["nhs_number: 10 digits"] == 0
    assert list(r.rule_counts) == schemas.rule_names("gp_events")


def test_quarantine_layout_keeps_the_row_as_delivered():
    raw = _mixed_events()
    r = validate_table("gp_events", raw, EXTRACT, REFS)
    q = r.quarantine
    assert q.columns == [*QUARANTINE_COLUMNS, *TABLES["gp_events"].column_names, "site_note"]
    assert q.schema["failed_rules"] == pl.List(pl.String)
    assert q.schema["delivery_date"] == pl.Date
    assert set(q["table_name"]) == {"gp_events"}
    assert set(q["delivery_date"]) == {EXTRACT}
    # strings exactly as delivered, untyped and untrimmed
    assert q.filter(pl.col("_row_number") == 2)["event_date"].item() == "2026-12-01"
    assert all(q.schema[c] == pl.String for c in TABLES["gp_events"].column_names)


def test_staging_is_typed_trimmed_in_contract_order():
    r = validate_table("gp_events", _mixed_events(), EXTRACT, REFS)
    s = r.staging
    assert s.columns == [*TABLES["gp_events"].column_names, "_row_number"]
    assert s.schema["event_date"] == pl.Date
    assert s.schema["numeric_value"] == pl.Float64
    assert s.schema["_row_number"] == pl.Int64
    assert s.filter(pl.col("_row_number") == 3)["practice_code"].item() == "C82002"
    assert "site_note" not in s.columns


def test_staging_types_for_every_table():
    types = {"str": pl.String, "date": pl.Date, "int": pl.Int64, "float": pl.Float64}
    types |= {"bool": pl.Boolean, "datetime": pl.Datetime("us")}
    for t in TABLE_NAMES:
        s = validate_table(t, raw_frame(t, [BASE[t]]), EXTRACT, REFS).staging
        assert s.height == 1, t
        for c in TABLES[t].columns:
            assert s.schema[c.name] == types[c.type], (t, c.name)
    ecds = validate_table("sus_ecds", raw_frame("sus_ecds", [BASE["sus_ecds"]]), EXTRACT).staging
    assert ecds["admitted"].item() is True


def test_empty_table():
    r = validate_table("gp_events", raw_frame("gp_events", []), EXTRACT, REFS)
    assert r.rows_delivered == 0
    assert r.quarantine.columns[:4] == list(QUARANTINE_COLUMNS)


def test_first_delivered_row_wins_by_row_number_not_frame_order():
    raw = raw_frame("sus_op", [BASE["sus_op"], row("sus_op", treatment_function_code="300")])
    # the frame arrives in reverse order; row number 1 is still the first delivered
    r = validate_table("sus_op", raw.reverse(), EXTRACT)
    assert r.staging["_row_number"].to_list() == [1]
    assert r.quarantine["failed_rules"].to_list() == [
        ["appointment_id: unique (first delivered row wins)"]
    ]


def test_duplicate_of_a_quarantined_first_row_is_still_a_duplicate():
    raw = raw_frame("sus_op", [row("sus_op", appointment_date="2030-01-01"), BASE["sus_op"]])
    r = validate_table("sus_op", raw, EXTRACT)
    assert r.rows_accepted == 0
    assert r.quarantine["failed_rules"].to_list() == [
        ["appointment_date: not after extract_date"],
        ["appointment_id: unique (first delivered row wins)"],
    ]


def test_one_current_registration_per_nhs_number_ended_ones_free():
    rows = [
        row("gp_patients", registration_end="2010-01-01", registration_start="2000-01-01"),
        BASE["gp_patients"],
        row("gp_patients", registration_end="2012-01-01", registration_start="2011-01-01"),
        row("gp_patients", practice_code="C82002"),
        row("gp_patients", nhs_number=NHS[1]),
    ]
    r = validate_table("gp_patients", raw_frame("gp_patients", rows), EXTRACT, REFS)
    assert r.staging["_row_number"].to_list() == [1, 2, 3, 5]
    assert r.quarantine["_row_number"].to_list() == [4]


def test_references_are_the_keys_delivered_even_if_those_rows_are_bad():
    practices = raw_frame(
        "practices",
        [BASE["practices"], row("practices", practice_code="C82009 ", pcn_code="bad")],
    )
    events = raw_frame(
        "gp_events",
        [row("gp_events", practice_code="C82009"), row("gp_events", practice_code="C82002")],
    )
    refs = reference_keys({"practices": practices})
    assert sorted(refs["practices"].to_list()) == ["C82001", "C82009"]
    res = validate_delivery({"practices": practices, "gp_events": events}, EXTRACT)
    assert res["practices"].rows_quarantined == 1  # the bad practice row ...
    assert res["gp_events"].staging["_row_number"].to_list() == [1]  # ... does not cascade
    assert res["gp_events"].quarantine["failed_rules"].to_list() == [
        ["practice_code exists in practices"]
    ]


def test_refs_accept_sets_lists_and_series():
    raw = raw_frame("sp_outcomes", [BASE["sp_outcomes"]])
    for keys in ({"R1"}, ["R1", None], pl.Series(["R1"]), pl.DataFrame({"referral_id": [" R1"]})):
        r = validate_table("sp_outcomes", raw, EXTRACT, {"sp_referrals": keys})
        assert r.rows_accepted == 1


def test_missing_column_fails_the_table_clearly():
    raw = raw_frame("gp_events", [BASE["gp_events"]]).drop("snomed_code")
    with pytest.raises(MissingColumnsError, match=r"gp_events.*snomed_code"):
        validate_table("gp_events", raw, EXTRACT, REFS)


def test_missing_refs_fail_clearly():
    with pytest.raises(KeyError, match="practices"):
        validate_table("gp_events", raw_frame("gp_events", [BASE["gp_events"]]), EXTRACT, {})


def test_row_number_added_when_absent_and_non_string_input_cast():
    raw = pl.DataFrame(
        {
            "referral_id": ["R1"],
            "measure": ["ucla3_loneliness"],
            "timepoint": ["baseline"],
            "score": [8],
            "recorded_date": [date(2026, 3, 10)],
        }
    )
    r = validate_table("sp_outcomes", raw, EXTRACT, REFS)
    assert r.staging["_row_number"].to_list() == [1]
    assert r.staging["score"].to_list() == [8.0]


def test_whitespace_only_is_missing():
    r = validate_table(
        "gp_events", raw_frame("gp_events", [row("gp_events", snomed_code=" \t ")]), EXTRACT, REFS
    )
    assert r.quarantine["failed_rules"].to_list() == [["snomed_code: required"]]


def test_extract_date_is_a_parameter():
    raw = raw_frame("gp_events", [row("gp_events", event_date="2026-11-15")])
    assert validate_table("gp_events", raw, EXTRACT, REFS).rows_quarantined == 1
    assert validate_table("gp_events", raw, date(2026, 12, 1), REFS).rows_quarantined == 0


@pytest.mark.parametrize("setting", ["depth", "enabled"])
def test_data_checks_run_whatever_the_global_pandera_config(monkeypatch, setting):
    if setting == "depth":
        monkeypatch.setattr(CONFIG, "validation_depth", ValidationDepth.SCHEMA_ONLY)
    else:
        monkeypatch.setattr(CONFIG, "validation_enabled", False)
    raw = raw_frame("gp_events", [row("gp_events", nhs_number="9990000019")])
    r = validate_table("gp_events", raw, EXTRACT, REFS)
    assert r.quarantine["failed_rules"].to_list() == [["nhs_number: valid Modulus 11 check digit"]]


def test_pandera_failures_equal_direct_rule_evaluation():
    """The row -> rules mapping read from pandera's failure cases is what the rules say."""
    raw = pl.concat(
        [
            _mixed_events(),
            raw_frame(
                "gp_events",
                [
                    row("gp_events", event_date="x", numeric_value="nan"),
                    row("gp_events", nhs_number=None, practice_code="C8200"),
                ],
                extra=("site_note",),
            ).with_columns(pl.col("_row_number") + 5),
        ]
    )
    r = validate_table("gp_events", raw, EXTRACT, REFS)
    from schemas._base import check_frame

    frame = check_frame("gp_events", raw)
    rules = schemas.rules_for("gp_events", EXTRACT, REFS)
    direct = frame.select(
        pl.col("_row_number"),
        pl.concat_list([pl.when(~r_.expr).then(pl.lit(r_.name)).otherwise(None) for r_ in rules])
        .list.drop_nulls()
        .alias("failed_rules"),
    ).filter(pl.col("failed_rules").list.len() > 0)
    assert direct.rows() == r.quarantine.select("_row_number", "failed_rules").rows()


def test_normalise_icd10_accepts_names_and_expressions():
    df = pl.DataFrame({"dx": ["I50.0", "I50X", "nonsense"]})
    assert df.select(normalise_icd10("dx")).to_series().to_list() == ["I500", "I50", None]
    assert df.select(normalise_icd10(pl.col("dx"))).to_series().to_list() == ["I500", "I50", None]


# --------------------------------------------------------------------------------------
# data quality
# --------------------------------------------------------------------------------------


def _delivery() -> dict[str, pl.DataFrame]:
    raw = {t: raw_frame(t, [BASE[t]]) for t in TABLE_NAMES}
    raw["practices"] = raw_frame(
        "practices", [BASE["practices"], row("practices", practice_code="C82002")]
    )
    raw["sp_referrals"] = raw_frame(
        "sp_referrals", [BASE["sp_referrals"], row("sp_referrals", referral_id="R2")]
    )
    raw["gp_patients"] = raw_frame(
        "gp_patients",
        [
            BASE["gp_patients"],
            row("gp_patients", nhs_number=NHS[1], lsoa11_code=None, ethnic_category="Z"),
            row("gp_patients", nhs_number=NHS[2], registration_end="2020-01-01", lsoa11_code=None),
            row("gp_patients", nhs_number="9990000019"),
        ],
    )
    raw["gp_events"] = _mixed_events()
    return raw


def test_data_quality_summary_from_results():
    res = validate_delivery(_delivery(), EXTRACT)
    s = data_quality_summary(res)
    assert s.columns == ["table", "metric", "detail", "value", "denominator", "share"]

    def get(table, metric, detail=None):
        f = s.filter((pl.col("table") == table) & (pl.col("metric") == metric))
        if detail is not None:
            f = f.filter(pl.col("detail") == detail)
        return f.row(0, named=True)

    assert get("gp_events", "rows_delivered")["value"] == 5
    assert get("gp_events", "rows_accepted")["value"] == 3
    assert get("gp_events", "rows_quarantined")["value"] == 2
    assert (
        get("gp_patients", "rule_broken", "nhs_number: valid Modulus 11 check digit")["value"] == 1
    )
    lsoa = get("gp_patients", "completeness", "current patients with an LSOA (lsoa11_code)")
    assert (lsoa["value"], lsoa["denominator"], lsoa["share"]) == (1, 2, 0.5)
    eth = get(
        "gp_patients", "completeness", "current patients with a known ethnic_category (not Z or 99)"
    )
    assert (eth["value"], eth["denominator"]) == (1, 2)
    num = get("gp_events", "completeness", "events with a numeric_value")
    assert (num["value"], num["denominator"]) == (2, 3)
    # only rules that were broken are listed
    assert s.filter(pl.col("metric") == "rule_broken")["value"].min() > 0
    # same from a list of results
    assert data_quality_summary(list(res.values())).equals(s)


def test_data_quality_has_no_patient_identifiers():
    res = validate_delivery(_delivery(), EXTRACT)
    text = data_quality_markdown(res, EXTRACT) + str(data_quality_summary(res).rows())
    for n in [*NHS, "9990000019"]:
        assert n not in text


def test_data_quality_markdown():
    res = validate_delivery(_delivery(), EXTRACT)
    md = data_quality_markdown(data_quality_summary(res), EXTRACT)
    assert md.startswith("# Data quality: delivery of 2026-11-01")
    assert "| gp_events | 5 | 3 | 2 | 40.0% |" in md
    assert "| gp_patients | `nhs_number: valid Modulus 11 check digit` | 1 |" in md
    assert "| gp_patients | current patients with an LSOA (lsoa11_code) | 1 | 2 | 50.0% |" in md
    assert data_quality_markdown(res) == data_quality_markdown(data_quality_summary(res))


def test_data_quality_summary_from_the_warehouse_matches_results():
    raw = _delivery()
    res = validate_delivery(raw, EXTRACT)
    con = duckdb.connect()
    for schema in ("raw", "staging", "quarantine"):
        con.execute(f"CREATE SCHEMA {schema}")
    for t in TABLE_NAMES:
        for schema, frame in (
            ("raw", raw[t]),
            ("staging", res[t].staging),
            ("quarantine", res[t].quarantine),
        ):
            con.register("f", frame)
            con.execute(f"CREATE TABLE {schema}.{t} AS SELECT * FROM f")
            con.unregister("f")
    from_db = data_quality_summary(con)
    assert from_db.equals(data_quality_summary(res))


def test_validation_result_counts():
    r = validate_table("gp_events", _mixed_events(), EXTRACT, REFS)
    assert isinstance(r, ValidationResult)
    assert r.counts == {"rows_delivered": 5, "rows_accepted": 3, "rows_quarantined": 2}


# --------------------------------------------------------------------------------------
# against the synthetic generator's injected faults (phm.synth, faults.csv)
# --------------------------------------------------------------------------------------


def test_each_generator_fault_is_caught_by_one_rule_of_its_column_and_kind(tmp_path):
    synth = pytest.importorskip("phm.synth")
    extract = date(2025, 11, 1)
    out = synth.generate(tmp_path, patients=600, seed=5, extract_date=extract, faults=0.1)
    raw = {
        t: pl.read_csv(out.files[t], infer_schema=False).with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("_row_number")
        )
        for t in TABLE_NAMES
    }
    faults = pl.read_csv(out.faults, infer_schema=False).with_columns(
        pl.col("row_number").cast(pl.Int64)
    )
    results = validate_delivery(raw, extract)
    quarantined = pl.concat(
        [
            r.quarantine.select(
                pl.col("table_name").alias("table"),
                pl.col("_row_number").alias("row_number"),
                pl.col("failed_rules").list.len().alias("n_rules"),
                pl.col("failed_rules").list.first().alias("rule"),
            )
            for r in results.values()
        ]
    )
    # exactly the faulty rows are quarantined ...
    assert sorted(quarantined.select("table", "row_number").rows()) == sorted(
        faults.select("table", "row_number").rows()
    )
    # ... each with one rule, about the fault's column and of the fault's kind
    matched = faults.join(quarantined, on=["table", "row_number"]).join(
        schemas.rule_catalogue(), on=["table", "rule"]
    )
    assert matched.height == faults.height
    assert matched.filter(
        (pl.col("n_rules") != 1)
        | (pl.col("column") != pl.col("column_right"))
        | (pl.col("fault") != pl.col("kind"))
    ).is_empty()


# --------------------------------------------------------------------------------------
# a synthetic delivery built in-test (speed is measured by `phm bench`, not asserted here)
# --------------------------------------------------------------------------------------


def _nhs_numbers(rng: np.random.Generator, n: int) -> pl.Series:
    """Distinct valid NHS numbers in the 4xx range (no CHI date rule there)."""
    stems = rng.choice(100_000_000, size=int(n * 1.2), replace=False) + 400_000_000
    digits = np.stack([(stems // 10 ** (8 - i)) % 10 for i in range(9)], axis=1)
    check = (11 - (digits @ np.arange(10, 1, -1)) % 11) % 11
    keep = check != 10
    return pl.Series((stems[keep] * 10 + check[keep])[:n]).cast(pl.String)


def _dates(rng: np.random.Generator, n: int, start: str, end: str) -> pl.Series:
    a, b = date.fromisoformat(start).toordinal(), date.fromisoformat(end).toordinal()
    days = rng.integers(a, b + 1, n) - date(1970, 1, 1).toordinal()
    return pl.Series(days).cast(pl.Int32).cast(pl.Date).cast(pl.String)


def _pick(rng: np.random.Generator, values: list, n: int) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(rng.integers(0, len(values), n))


def _with_faults(rng: np.random.Generator, df: pl.DataFrame, column: str, share: float, value):
    hit = np.zeros(df.height, dtype=bool)
    hit[rng.choice(df.height, max(1, int(df.height * share)), replace=False)] = True
    return df.with_columns(
        pl.when(pl.Series(hit)).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


def synthetic_delivery(scale: float = 1.0, seed: int = 0) -> dict[str, pl.DataFrame]:
    """A raw delivery at 1,000,000-patient scale (``scale=1``): 1.05M registrations, 15M
    events, 10M medication issues, 5M appointments, 1.5M outpatient appointments, ...;
    all strings as ingest delivers them, ~0.1% faulty rows in the big tables. Vectorised."""
    rng = np.random.default_rng(seed)
    n_pat = int(1_000_000 * scale)
    codes = [f"C8{i:04d}" for i in range(150)]
    practices = pl.DataFrame(
        {
            "practice_code": codes,
            "practice_name": [f"Practice {i}" for i in range(150)],
            "pcn_code": [f"U{i // 5:05d}" for i in range(150)],
            "pcn_name": [f"PCN {i // 5}" for i in range(150)],
            "icb_code": ["QK1"] * 150,
        }
    )
    nhs = _nhs_numbers(rng, n_pat)
    ended = int(n_pat * 0.05)
    n_reg = n_pat + ended
    gp_patients = pl.DataFrame(
        {
            "nhs_number": pl.concat([nhs, nhs.head(ended)]),
            "date_of_birth": _dates(rng, n_reg, "1920-01-01", "2026-10-01"),
            "sex": _pick(rng, ["M", "F", "U", "I"], n_reg),
            "ethnic_category": _pick(rng, ["A", "B", "H", "Z", "99", None], n_reg),
            "lsoa11_code": _pick(rng, [f"E01{i:06d}" for i in range(2000)] + [None], n_reg),
            "practice_code": _pick(rng, codes, n_reg),
            "registration_start": _dates(rng, n_reg, "2000-01-01", "2020-01-01"),
            "registration_end": pl.Series([None] * n_pat + ["2024-01-01"] * ended, dtype=pl.String),
            "date_of_death": pl.Series([None] * n_reg, dtype=pl.String),
        }
    )

    def people(n: int) -> pl.Series:
        return nhs.gather(rng.integers(0, n_pat, n))

    def n_of(k: int) -> int:
        return int(k * scale)

    n = n_of(15_000_000)
    gp_events = pl.DataFrame(
        {
            "nhs_number": people(n),
            "event_date": _dates(rng, n, "1990-01-01", "2026-11-01"),
            "snomed_code": _pick(rng, [str(x) for x in rng.integers(100_000, 10**12, 5000)], n),
            "numeric_value": _pick(rng, ["31.5", "7", "120", None, None, None], n),
            "practice_code": _pick(rng, codes, n),
        }
    )
    n = n_of(10_000_000)
    gp_medications = pl.DataFrame(
        {
            "nhs_number": people(n),
            "issue_date": _dates(rng, n, "2015-01-01", "2026-11-01"),
            "dmd_code": _pick(rng, [str(x) for x in rng.integers(10**8, 10**15, 3000)], n),
            "bnf_code": _pick(rng, ["0206020A0AAAAAA", "0212000B0AAABAB", "0601022B0", None], n),
            "quantity": _pick(rng, ["28", "56", "1", "100.5", None], n),
        }
    )
    n = n_of(5_000_000)
    gp_appointments = pl.DataFrame(
        {
            "nhs_number": people(n),
            "appointment_date": _dates(rng, n, "2024-01-01", "2026-11-01"),
            "status": _pick(rng, ["attended", "did_not_attend", "cancelled_by_patient"], n),
            "staff_role": _pick(rng, ["gp", "nurse", "pharmacist", "other"], n),
            "mode": _pick(rng, ["face_to_face", "telephone", None], n),
            "practice_code": _pick(rng, codes, n),
        }
    )
    n = n_of(300_000)
    sus_apc = pl.DataFrame(
        {
            "nhs_number": people(n),
            "spell_id": pl.int_range(n, eager=True).cast(pl.String),
            "provider_code": _pick(rng, ["RWE", "RX1", "RTG01"], n),
            "admission_date": _dates(rng, n, "2020-01-01", "2026-10-01"),
            "discharge_date": pl.Series([None] * n, dtype=pl.String),
            "admission_method": _pick(rng, ["11", "21", "22", "31"], n),
            "primary_diagnosis": _pick(rng, ["I500", "I50.0", "I50X", "F00.0*", "E119-"], n),
            "secondary_diagnoses": _pick(rng, ["I10X;E119", "F00.0*;W19;Z880", None], n),
        }
    )
    n = n_of(400_000)
    sus_ecds = pl.DataFrame(
        {
            "nhs_number": people(n),
            "attendance_id": pl.int_range(n, eager=True).cast(pl.String),
            "provider_code": _pick(rng, ["RWE", "RX1"], n),
            "arrival_datetime": _pick(rng, ["2026-05-01T10:30:00", "2025-01-02T23:59:59"], n),
            "department_type": _pick(rng, ["01", "02", "03", "04"], n),
            "chief_complaint_snomed": _pick(rng, ["21522001", None], n),
            "admitted": _pick(rng, ["true", "false"], n),
        }
    )
    n = n_of(1_500_000)
    sus_op = pl.DataFrame(
        {
            "nhs_number": people(n),
            "appointment_id": pl.int_range(n, eager=True).cast(pl.String),
            "appointment_date": _dates(rng, n, "2020-01-01", "2026-11-01"),
            "attendance_status": _pick(rng, ["5", "6", "7", "2", "3", "4"], n),
            "treatment_function_code": _pick(rng, ["100", "300", "502"], n),
        }
    )
    n = n_of(20_000)
    ppn = pl.DataFrame(
        {
            "nhs_number": people(n),
            "ppn_id": pl.int_range(n, eager=True).cast(pl.String),
            "incident_date": _pick(rng, ["2026-01-01"], n),
            "shared_date": _pick(rng, ["2026-01-05"], n),
            "category": _pick(rng, ["mental_health", "other"], n),
            "risk_level": _pick(rng, ["standard", "high"], n),
        }
    )
    n_ref = n_of(30_000)
    referral_ids = pl.int_range(n_ref, eager=True).cast(pl.String)
    sp_referrals = pl.DataFrame(
        {
            "nhs_number": people(n_ref),
            "referral_id": referral_ids,
            "referral_date": _pick(rng, ["2026-01-01"], n_ref),
            "source": _pick(rng, ["gp", "self"], n_ref),
            "reasons": _pick(rng, ["isolation;housing", "mental_health"], n_ref),
            "contact_attempts": _pick(rng, ["0", "3"], n_ref),
            "first_contact_date": _pick(rng, ["2026-01-10", None], n_ref),
            "status": _pick(rng, ["active", "waiting"], n_ref),
            "discharge_date": pl.Series([None] * n_ref, dtype=pl.String),
        }
    )
    n = n_of(40_000)
    sp_outcomes = pl.DataFrame(
        {
            "referral_id": referral_ids.gather(rng.integers(0, n_ref, n)),
            "measure": _pick(rng, ["ucla3_loneliness", "wemwbs_short"], n),
            "timepoint": _pick(rng, ["baseline", "followup_6m"], n),
            "score": _pick(rng, ["7", "8", "9"], n),
            "recorded_date": _pick(rng, ["2026-02-01"], n),
        }
    )
    n = 1000
    community_assets = pl.DataFrame(
        {
            "asset_id": pl.int_range(n, eager=True).cast(pl.String),
            "name": ["Food bank"] * n,
            "category": _pick(rng, ["food", "other"], n),
            "latitude": _pick(rng, ["52.6", "51.5"], n),
            "longitude": _pick(rng, ["-1.1", "0.1"], n),
            "lsoa11_code": _pick(rng, ["E01013600", None], n),
        }
    )
    out = {
        "practices": practices,
        "gp_patients": gp_patients,
        "gp_events": gp_events,
        "gp_medications": gp_medications,
        "gp_appointments": gp_appointments,
        "sus_apc": sus_apc,
        "sus_ecds": sus_ecds,
        "sus_op": sus_op,
        "ppn": ppn,
        "sp_referrals": sp_referrals,
        "sp_outcomes": sp_outcomes,
        "community_assets": community_assets,
    }
    for t in ("gp_events", "gp_medications", "gp_appointments"):
        df = _with_faults(rng, out[t], "nhs_number", 0.001, "1234567890")
        df = _with_faults(rng, df, df.columns[1], 0.001, "2030-01-01")
        out[t] = _with_faults(rng, df, df.columns[1], 0.0005, "2024-02-30")
    out["gp_events"] = _with_faults(rng, out["gp_events"], "practice_code", 0.001, "Z99999")
    return {
        t: df.with_columns(pl.int_range(1, df.height + 1, dtype=pl.Int64).alias("_row_number"))
        for t, df in out.items()
    }


def test_synthetic_delivery_is_valid_but_for_its_faults():
    raw = synthetic_delivery(scale=0.001)
    res = validate_delivery(raw, EXTRACT)
    for t in ("practices", "gp_patients", "sus_apc", "sus_ecds", "sus_op", "ppn", "sp_referrals"):
        assert res[t].rows_quarantined == 0, (t, res[t].quarantine.head(3))
    assert 0 < res["gp_events"].rows_quarantined < 0.01 * raw["gp_events"].height


def _warehouse_with(raw: pl.DataFrame) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for s in ("raw", "staging", "quarantine"):
        con.execute(f"CREATE SCHEMA {s}")
    con.register("events", raw.to_arrow())
    con.execute("CREATE TABLE raw.gp_events AS SELECT * FROM events")
    con.unregister("events")
    codes = sorted(REFS["practices"])
    con.execute(
        "CREATE TABLE raw.practices AS SELECT unnest(?::VARCHAR[]) AS practice_code", [codes]
    )
    return con


def test_validate_in_warehouse_writes_exactly_what_validate_table_returns():
    from phm.validate import validate_in_warehouse

    raw = _mixed_events()
    con = _warehouse_with(raw)
    seconds: dict[str, float] = {}
    result = validate_in_warehouse(con, "gp_events", EXTRACT, gate=False, seconds=seconds)
    expected = validate_table("gp_events", raw, EXTRACT, REFS)
    assert con.execute("SELECT * FROM staging.gp_events").pl().equals(expected.staging)
    assert con.execute("SELECT * FROM quarantine.gp_events").pl().equals(expected.quarantine)
    assert result.rule_counts == expected.rule_counts
    assert set(seconds) == {"read", "validate", "write"}
    # the DuckDB thread setting is restored after the single-threaded writes
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    assert threads == duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]


def test_validate_in_warehouse_gate_replaces_nothing():
    from phm.validate import QuarantineGateError, validate_in_warehouse

    raw = _mixed_events()
    con = _warehouse_with(raw)
    with pytest.raises(QuarantineGateError, match=r"gp_events: 40\.0% of the delivered rows"):
        validate_in_warehouse(con, "gp_events", EXTRACT)
    tables = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema IN "
        "('staging', 'quarantine')"
    ).fetchone()[0]
    assert tables == 0
