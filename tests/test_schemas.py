"""The pandera schemas: one case per contract rule, code formats, and that data checks run.

Every rule has a hand-made case: a row that breaks only that rule is quarantined with
exactly that rule's name, and a near-miss row that keeps it is accepted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import nhs_number
import pandera.polars as pa
import polars as pl
import pytest
from factory import NHS, default_rows
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaError, SchemaErrors

import schemas
from phm.codes import nhs_number_check_digit, normalise_icd10
from phm.contract import TABLE_NAMES, TABLES
from phm.synth.faults import FAULT_KINDS
from phm.validate import validate_table
from schemas._base import check_frame

EXTRACT = date(2026, 11, 1)
REFS = {"practices": {"C82001", "C82002"}, "sp_referrals": {"R1", "R2"}}

#: one valid row per table (strings, as delivered; every contract column, None = empty): the
#: first row of each table of the factory's default delivery, with a few columns filled in so
#: that each rule has a value to break
_FILLED = {
    "gp_events": {"event_date": "2026-10-01", "snomed_code": "60621009", "numeric_value": "31.5"},
    "sus_ecds": {"chief_complaint_snomed": "21522001"},
}
BASE: dict[str, dict[str, str | None]] = {
    t: {c: {**rows[0], **_FILLED.get(t, {})}.get(c) for c in TABLES[t].column_names}
    for t, rows in default_rows().items()
}


def raw_frame(table: str, rows: list[dict], extra: tuple[str, ...] = ()) -> pl.DataFrame:
    """A raw frame as ingest writes it: contract columns (+ extras) as strings, _row_number."""
    cols = [*TABLES[table].column_names, *extra]
    return pl.DataFrame(
        [{c: r.get(c) for c in cols} for r in rows], schema=dict.fromkeys(cols, pl.String)
    ).with_columns(pl.int_range(1, len(rows) + 1, dtype=pl.Int64).alias("_row_number"))


def row(table: str, **overrides) -> dict:
    return {**BASE[table], **overrides}


# --------------------------------------------------------------------------------------
# one case per rule
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    table: str
    rule: str
    bad: dict
    good: dict
    #: rows delivered before the row under test (kept): the first copy of a duplicate key
    before: list[dict] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.table}|{self.rule}|{sorted(self.bad.items())}"


def _generic_cases() -> list[Case]:
    """Cases for the rules every table gets from the contract's types and allowed values."""
    bad_text = {
        "date": "2026-02-30",
        "datetime": "2026-05-01 10:30:00",
        "int": "2.5",
        "float": "abc",
        "bool": "yes",
    }
    parse_name = {
        "date": "valid date (YYYY-MM-DD)",
        "datetime": "valid datetime (YYYY-MM-DDTHH:MM:SS)",
        "int": "whole number",
        "float": "finite number",
        "bool": "true or false",
    }
    cases = []
    for t in TABLE_NAMES:
        for col in TABLES[t].columns:
            c, base = col.name, BASE[t][col.name]
            padded = f"  {base} " if base is not None else None
            if not col.nullable:
                cases.append(Case(t, f"{c}: required", {c: None}, {c: padded}))
                cases.append(Case(t, f"{c}: required", {c: "   "}, {c: padded}))
            if col.type in bad_text:
                good = {c: padded} if base is not None else {c: None}
                cases.append(Case(t, f"{c}: {parse_name[col.type]}", {c: bad_text[col.type]}, good))
            if col.allowed:
                other = col.allowed[-1] if col.allowed[-1] != base else col.allowed[0]
                cases.append(Case(t, f"{c}: one of the allowed values", {c: "zzz"}, {c: other}))
                cases.append(
                    Case(
                        t,
                        f"{c}: one of the allowed values",
                        {c: base.lower() + "x" if base else "x"},
                        {c: f" {base} "},
                    )
                )
    return cases


def _c(table, rule, bad, good, before=None) -> Case:
    return Case(table, rule, bad, good, before or [])


NHS_10 = "nhs_number: 10 digits"
NHS_CHECK = "nhs_number: valid Modulus 11 check digit"
FUTURE = "not after extract_date"
PRACTICE_FMT = "practice_code: ODS practice code (letter + 5 digits)"
UNIQUE = "unique (first delivered row wins)"


def _nhs_cases(t: str) -> list[Case]:
    return [
        _c(t, NHS_10, {"nhs_number": "999000001"}, {"nhs_number": " 9990000026 "}),
        _c(t, NHS_10, {"nhs_number": "999 000 0018"}, {"nhs_number": NHS[2]}),
        _c(t, NHS_10, {"nhs_number": "99900000181"}, {"nhs_number": NHS[2]}),
        _c(t, NHS_10, {"nhs_number": "999000001X"}, {"nhs_number": NHS[2]}),
        _c(t, NHS_CHECK, {"nhs_number": "9990000019"}, {"nhs_number": "9990000018"}),
        # 400000001: weighted sum 4*10 + 1*2 = 42, 42 mod 11 = 9, check digit 11 - 9 = 2
        _c(t, NHS_CHECK, {"nhs_number": "4000000013"}, {"nhs_number": "4000000012"}),
    ]


def _practice_cases(t: str) -> list[Case]:
    return [
        _c(t, PRACTICE_FMT, {"practice_code": "C8200"}, {"practice_code": "C82002"}),
        _c(t, PRACTICE_FMT, {"practice_code": "c82001"}, {"practice_code": " C82002"}),
        _c(t, PRACTICE_FMT, {"practice_code": "CC2001"}, {"practice_code": "C82002"}),
        _c(
            t,
            "practice_code exists in practices",
            {"practice_code": "C99999"},
            {"practice_code": "C82002"},
        ),
    ]


def _future(
    t: str, column: str, *, base_ok: str = "2026-11-01", bad: str = "2026-11-02", **also
) -> Case:
    return _c(t, f"{column}: {FUTURE}", {column: bad, **also}, {column: base_ok, **also})


def _dup(t: str, key: str, other: str) -> Case:
    first = row(t)
    return _c(t, f"{key}: {UNIQUE}", dict(first), {key: other}, [first])


def _specific_cases() -> list[Case]:
    cases: list[Case] = []
    for t in TABLE_NAMES:
        if "nhs_number" in TABLES[t].column_names:
            cases += _nhs_cases(t)
    for t in ("gp_patients", "gp_events", "gp_appointments"):
        cases += _practice_cases(t)
    cases += [
        # practices
        _c("practices", PRACTICE_FMT, {"practice_code": "C8200A"}, {"practice_code": "Y12345"}),
        _dup("practices", "practice_code", "C82002"),
        _c(
            "practices",
            "pcn_code: ODS PCN code (U + 5 digits)",
            {"pcn_code": "U0001"},
            {"pcn_code": "U99999"},
        ),
        _c(
            "practices",
            "pcn_code: ODS PCN code (U + 5 digits)",
            {"pcn_code": "V00001"},
            {"pcn_code": "U00000"},
        ),
        _c(
            "practices",
            "icb_code: ODS ICB code (3 letters/digits)",
            {"icb_code": "QK"},
            {"icb_code": "QOP"},
        ),
        _c(
            "practices",
            "icb_code: ODS ICB code (3 letters/digits)",
            {"icb_code": "QK1X"},
            {"icb_code": None},
        ),
        # gp_patients
        _c(
            "gp_patients",
            "nhs_number: at most one current registration (first delivered row wins)",
            row("gp_patients", practice_code="C82002"),
            {"registration_end": "2020-01-01"},
            [row("gp_patients")],
        ),
        _c(
            "gp_patients",
            "nhs_number: at most one current registration (first delivered row wins)",
            row("gp_patients", nhs_number=f" {NHS[0]}"),
            {"nhs_number": NHS[1]},
            [row("gp_patients"), row("gp_patients", registration_end="2010-01-01")],
        ),
        _future("gp_patients", "date_of_birth"),
        _c(
            "gp_patients",
            "date_of_birth: not before 1900-01-01",
            {"date_of_birth": "1899-12-31"},
            {"date_of_birth": "1900-01-01"},
        ),
        _c(
            "gp_patients",
            "ethnic_category: one of the allowed values",
            {"ethnic_category": "I"},
            {"ethnic_category": "99"},
        ),
        _c(
            "gp_patients",
            "ethnic_category: one of the allowed values",
            {"ethnic_category": "O"},
            {"ethnic_category": "Z"},
        ),
        _c("gp_patients", "sex: one of the allowed values", {"sex": "X"}, {"sex": "I"}),
        _c(
            "gp_patients",
            "lsoa11_code: LSOA 2011 code (E01 + 6 digits)",
            {"lsoa11_code": "E02000001"},
            {"lsoa11_code": "E01999999"},
        ),
        _c(
            "gp_patients",
            "lsoa11_code: LSOA 2011 code (E01 + 6 digits)",
            {"lsoa11_code": "E0101360"},
            {"lsoa11_code": None},
        ),
        _c(
            "gp_patients",
            "lsoa21_code: LSOA 2021 code (E01 + 6 digits)",
            {"lsoa21_code": "E0103593"},
            {"lsoa21_code": "E01035930"},
        ),
        _c(
            "gp_patients",
            "lsoa21_code: LSOA 2021 code (E01 + 6 digits)",
            {"lsoa21_code": "W01000001"},
            {"lsoa21_code": None},
        ),
        _future("gp_patients", "registration_start"),
        _future("gp_patients", "registration_end"),
        _c(
            "gp_patients",
            "registration_end >= registration_start",
            {"registration_end": "2000-12-31"},
            {"registration_end": "2001-01-01"},
        ),
        _future("gp_patients", "date_of_death"),
        # gp_events
        _future("gp_events", "event_date"),
        _c(
            "gp_events",
            "snomed_code: SNOMED CT id (6-18 digits)",
            {"snomed_code": "12345"},
            {"snomed_code": "123456"},
        ),
        _c(
            "gp_events",
            "snomed_code: SNOMED CT id (6-18 digits)",
            {"snomed_code": "1" * 19},
            {"snomed_code": "1" * 18},
        ),
        _c(
            "gp_events",
            "snomed_code: SNOMED CT id (6-18 digits)",
            {"snomed_code": "6062100A"},
            {"snomed_code": "60621009"},
        ),
        _c(
            "gp_events",
            "numeric_value: finite number",
            {"numeric_value": "nan"},
            {"numeric_value": "-1e3"},
        ),
        _c(
            "gp_events",
            "numeric_value: finite number",
            {"numeric_value": "inf"},
            {"numeric_value": None},
        ),
        _c(
            "gp_events",
            "numeric_value: finite number",
            {"numeric_value": "1,5"},
            {"numeric_value": "1.5"},
        ),
        # gp_medications
        _future("gp_medications", "issue_date"),
        _c(
            "gp_medications",
            "dmd_code: dm+d id (digits)",
            {"dmd_code": "31928300A"},
            {"dmd_code": "1"},
        ),
        _c(
            "gp_medications",
            "bnf_code: BNF code (4-digit section, letters/digits, <= 15 chars)",
            {"bnf_code": "0206020A0AAAAAAA"},
            {"bnf_code": "0206"},
        ),
        _c(
            "gp_medications",
            "bnf_code: BNF code (4-digit section, letters/digits, <= 15 chars)",
            {"bnf_code": "02A6020A0AAAAAA"},
            {"bnf_code": "0212000B0AAABAB"},
        ),
        _c(
            "gp_medications", "quantity: finite number", {"quantity": "twenty"}, {"quantity": "0.5"}
        ),
        # gp_appointments
        _c(
            "gp_appointments",
            "appointment_date: not after extract_date unless status is booked",
            {"appointment_date": "2026-12-01"},
            {"appointment_date": "2026-12-01", "status": "booked"},
        ),
        _c(
            "gp_appointments",
            "appointment_date: not after extract_date unless status is booked",
            {"appointment_date": "2026-11-02", "status": "did_not_attend"},
            {"appointment_date": "2026-11-01", "status": "did_not_attend"},
        ),
        # sus_apc
        _dup("sus_apc", "spell_id", "S2"),
        _c(
            "sus_apc",
            "provider_code: ODS provider code (3 or 5 letters/digits)",
            {"provider_code": "RW"},
            {"provider_code": "RWE01"},
        ),
        _c(
            "sus_apc",
            "provider_code: ODS provider code (3 or 5 letters/digits)",
            {"provider_code": "RWE0"},
            {"provider_code": "NT3"},
        ),
        _future("sus_apc", "admission_date", discharge_date=None),
        # discharge earlier than the future admission: one fault, reported once
        _c(
            "sus_apc",
            f"admission_date: {FUTURE}",
            {"admission_date": "2026-11-02"},
            {"admission_date": "2026-05-04"},
        ),
        _future("sus_apc", "discharge_date"),
        _c(
            "sus_apc",
            "discharge_date >= admission_date",
            {"discharge_date": "2026-04-30"},
            {"discharge_date": "2026-05-01"},
        ),
        _c(
            "sus_apc",
            "admission_method: one of the allowed values",
            {"admission_method": "14"},
            {"admission_method": "83"},
        ),
        # v2: 26 and 27 do not exist; 2A-2D and 99 do
        *(
            _c(
                "sus_apc",
                "admission_method: one of the allowed values",
                {"admission_method": bad},
                {"admission_method": good},
            )
            for bad, good in (("26", "2A"), ("27", "2B"), ("2E", "2C"), ("2a", "2D"), ("29", "28"))
        ),
        _c(
            "sus_apc",
            "admission_method: one of the allowed values",
            {"admission_method": "98"},
            {"admission_method": "99"},
        ),
        _c(
            "sus_apc",
            "discharge_method: 4 or 5 (died) only with discharge_destination 79",
            {"discharge_method": "4", "discharge_destination": "19"},
            {"discharge_method": "4", "discharge_destination": "79"},
        ),
        _c(
            "sus_apc",
            "discharge_method: 4 or 5 (died) only with discharge_destination 79",
            {"discharge_method": "5", "discharge_destination": "51"},
            {"discharge_method": "5", "discharge_destination": None},  # not both supplied
        ),
        _c(
            "sus_apc",
            "discharge_method: 8 (still in hospital) only without a discharge_date",
            {"discharge_method": "8", "discharge_destination": None},
            {"discharge_method": "8", "discharge_destination": None, "discharge_date": None},
        ),
        _c(
            "sus_apc",
            "discharge_destination: 98 (not discharged) only without a discharge_date",
            {"discharge_destination": "98", "discharge_method": None},
            {"discharge_destination": "98", "discharge_method": "8", "discharge_date": None},
        ),
        _c(
            "sus_apc",
            "admission_method: one of the allowed values",
            {"admission_method": "1"},
            {"admission_method": "11"},
        ),
        _c(
            "sus_apc",
            "primary_diagnosis: ICD-10 code",
            {"primary_diagnosis": "I5"},
            {"primary_diagnosis": "F00.0*"},
        ),
        _c(
            "sus_apc",
            "primary_diagnosis: ICD-10 code",
            {"primary_diagnosis": "150.0"},
            {"primary_diagnosis": "E119-"},
        ),
        _c(
            "sus_apc",
            "primary_diagnosis: ICD-10 code",
            {"primary_diagnosis": "I50.00X"},
            {"primary_diagnosis": "I50X"},
        ),
        _c(
            "sus_apc",
            "primary_diagnosis: ICD-10 code",
            {"primary_diagnosis": "I50."},
            {"primary_diagnosis": "I50"},
        ),
        _c(
            "sus_apc",
            "secondary_diagnoses: ICD-10 codes separated by ';'",
            {"secondary_diagnoses": "I50.0;XYZ"},
            {"secondary_diagnoses": "I50.0; E119-;"},
        ),
        _c(
            "sus_apc",
            "secondary_diagnoses: ICD-10 codes separated by ';'",
            {"secondary_diagnoses": "I50.0,E119"},
            {"secondary_diagnoses": "I50.0;E119"},
        ),
        _c(
            "sus_apc",
            "secondary_diagnoses: at most 23 codes",
            {"secondary_diagnoses": ";".join(["I10X"] * 24)},
            {"secondary_diagnoses": ";".join(["I10X"] * 23)},
        ),
        # sus_ecds
        _dup("sus_ecds", "attendance_id", "A2"),
        _c(
            "sus_ecds",
            "provider_code: ODS provider code (3 or 5 letters/digits)",
            {"provider_code": "R-E"},
            {"provider_code": "RWE"},
        ),
        _c(
            "sus_ecds",
            f"arrival_datetime: {FUTURE}",
            {"arrival_datetime": "2026-11-02T00:00:00"},
            {"arrival_datetime": "2026-11-01T23:59:59"},
        ),
        _c(
            "sus_ecds",
            "arrival_datetime: valid datetime (YYYY-MM-DDTHH:MM:SS)",
            {"arrival_datetime": "2026-05-01T25:00:00"},
            {"arrival_datetime": "2026-05-01T00:00:00"},
        ),
        _c(
            "sus_ecds",
            "arrival_datetime: valid datetime (YYYY-MM-DDTHH:MM:SS)",
            {"arrival_datetime": "2026-05-01"},
            {"arrival_datetime": "2026-05-01T10:30:00"},
        ),
        _c(
            "sus_ecds",
            "department_type: one of the allowed values",
            {"department_type": "1"},
            {"department_type": "04"},
        ),
        _c(
            "sus_ecds",
            "chief_complaint_snomed: SNOMED CT id (6-18 digits)",
            {"chief_complaint_snomed": "12345"},
            {"chief_complaint_snomed": "1" * 18},
        ),
        _c("sus_ecds", "admitted: true or false", {"admitted": "True"}, {"admitted": "false"}),
        _c("sus_ecds", "admitted: true or false", {"admitted": "1"}, {"admitted": " true "}),
        # sus_op
        _dup("sus_op", "appointment_id", "O2"),
        _future("sus_op", "appointment_date"),
        _c(
            "sus_op",
            "attendance_status: one of the allowed values",
            {"attendance_status": "1"},
            {"attendance_status": "3"},
        ),
        _c(
            "sus_op",
            "treatment_function_code: 3 digits",
            {"treatment_function_code": "10"},
            {"treatment_function_code": "999"},
        ),
        _c(
            "sus_op",
            "treatment_function_code: 3 digits",
            {"treatment_function_code": "10A"},
            {"treatment_function_code": "001"},
        ),
        # ppn
        _dup("ppn", "ppn_id", "P2"),
        # shared earlier than the future incident: one fault, reported once
        _c(
            "ppn",
            f"incident_date: {FUTURE}",
            {"incident_date": "2026-11-02"},
            {"incident_date": "2026-08-05"},
        ),
        _future("ppn", "shared_date"),
        _c(
            "ppn",
            "shared_date >= incident_date",
            {"shared_date": "2026-07-31"},
            {"shared_date": "2026-08-01"},
        ),
        # sp_referrals
        _dup("sp_referrals", "referral_id", "R2"),
        _future("sp_referrals", "referral_date"),
        _c(
            "sp_referrals",
            "reasons: one or more allowed reasons separated by ';'",
            {"reasons": "isolation;gardening"},
            {"reasons": " isolation ; housing ;"},
        ),
        _c(
            "sp_referrals",
            "reasons: one or more allowed reasons separated by ';'",
            {"reasons": ";"},
            {"reasons": "other"},
        ),
        _c(
            "sp_referrals",
            "contact_attempts: >= 0",
            {"contact_attempts": "-1"},
            {"contact_attempts": "0"},
        ),
        _c(
            "sp_referrals",
            "contact_attempts: whole number",
            {"contact_attempts": "two"},
            {"contact_attempts": "+3"},
        ),
        _future("sp_referrals", "first_contact_date"),
        _future("sp_referrals", "discharge_date"),
        _c(
            "sp_referrals",
            "discharge_date: required when status is discharged",
            {"discharge_date": None},
            {"discharge_date": None, "status": "active"},
        ),
        # sp_outcomes
        _c(
            "sp_outcomes",
            "referral_id exists in sp_referrals",
            {"referral_id": "R9"},
            {"referral_id": " R2 "},
        ),
        _c("sp_outcomes", "score: within the measure's range", {"score": "10"}, {"score": "9"}),
        _c("sp_outcomes", "score: within the measure's range", {"score": "2.5"}, {"score": "3"}),
        _c(
            "sp_outcomes",
            "score: within the measure's range",
            {"measure": "wemwbs_short", "score": "36"},
            {"measure": "wemwbs_short", "score": "35"},
        ),
        _c(
            "sp_outcomes",
            "score: within the measure's range",
            {"measure": "ons4_anxiety", "score": "-0.5"},
            {"measure": "ons4_anxiety", "score": "0"},
        ),
        _future("sp_outcomes", "recorded_date"),
        # community_assets
        _dup("community_assets", "asset_id", "CA2"),
        _c(
            "community_assets",
            "latitude: within England (49.8 to 55.9)",
            {"latitude": "56.0"},
            {"latitude": "55.8"},
        ),
        _c(
            "community_assets",
            "latitude: within England (49.8 to 55.9)",
            {"latitude": "-52.63"},
            {"latitude": "49.9"},
        ),
        _c(
            "community_assets",
            "longitude: within England (-6.5 to 1.8)",
            {"longitude": "2.0"},
            {"longitude": "1.75"},
        ),
        _c(
            "community_assets",
            "longitude: within England (-6.5 to 1.8)",
            {"longitude": "-7"},
            {"longitude": "-6.4"},
        ),
        _c(
            "community_assets",
            "lsoa11_code: LSOA 2011 code (E01 + 6 digits)",
            {"lsoa11_code": "W01000001"},
            {"lsoa11_code": "E01000001"},
        ),
    ]
    return cases


CASES = _generic_cases() + _specific_cases()


def _validate(table: str, rows: list[dict]):
    return validate_table(table, raw_frame(table, rows), EXTRACT, REFS)


def test_base_rows_are_valid():
    for t in TABLE_NAMES:
        r = _validate(t, [BASE[t]])
        assert r.rows_quarantined == 0, (t, r.quarantine.to_dicts())


def test_every_rule_has_a_case():
    covered = {(c.table, c.rule) for c in CASES}
    every = {(t, r) for t in TABLE_NAMES for r in schemas.rule_names(t)}
    assert every - covered == set(), "rules without a test case"
    assert covered - every == set(), "cases naming rules that do not exist"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_row_breaking_one_rule_is_quarantined_with_its_name(case: Case):
    rows = [*case.before, row(case.table, **case.bad)]
    r = _validate(case.table, rows)
    assert r.rows_accepted == len(case.before)
    assert r.quarantine["_row_number"].to_list() == [len(rows)]
    assert r.quarantine["failed_rules"].to_list() == [[case.rule]]
    assert r.rule_counts[case.rule] == 1
    assert sum(r.rule_counts.values()) == 1


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_near_miss_row_is_accepted(case: Case):
    rows = [*case.before, row(case.table, **case.good)]
    r = _validate(case.table, rows)
    assert r.rows_quarantined == 0, r.quarantine["failed_rules"].to_list()
    assert r.rows_accepted == len(rows)


def test_rule_names_start_with_their_column_and_kinds_are_fault_names():
    cat = schemas.rule_catalogue()
    assert cat.height == cat.unique(["table", "rule"]).height
    for r in cat.iter_rows(named=True):
        assert r["rule"].startswith(r["column"])
        assert r["column"] in TABLES[r["table"]].column_names
    assert set(cat["kind"]) <= set(FAULT_KINDS)


def test_registry_has_one_module_per_table():
    assert list(schemas.REGISTRY) == list(TABLE_NAMES)
    for t, module in schemas.REGISTRY.items():
        assert module.__name__ == f"schemas.{t}"
        assert isinstance(schemas.schema_for(t, EXTRACT, REFS), pa.DataFrameSchema)


def test_missing_refs_is_a_clear_error():
    with pytest.raises(KeyError, match="practices"):
        schemas.schema_for("gp_events", EXTRACT, {})


# --------------------------------------------------------------------------------------
# ICD-10
# --------------------------------------------------------------------------------------

ICD10 = [
    ("I500", "I500"),
    ("I50.0", "I500"),
    ("I50X", "I50"),
    ("I50.X", "I50"),
    ("I50", "I50"),
    ("F00.0*", "F000"),
    ("E119-", "E119"),
    ("E11.9-", "E119"),
    ("G01X†", "G01"),
    ("A17.0+", "A170"),
    (" i50.0 ", "I500"),
    ("M2551", "M255"),
    ("W19", "W19"),
    ("I10X-", "I10"),
    ("I5", None),
    ("150.0", None),
    ("I50.", None),
    ("I50.00X", None),
    ("I50**", None),
    ("XYZ", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("code", "expected"), ICD10)
def test_normalise_icd10(code, expected):
    out = pl.DataFrame({"c": [code]}, schema={"c": pl.String}).select(normalise_icd10(pl.col("c")))
    assert out.item() == expected


def test_icd10_normalised_in_staging():
    r = _validate(
        "sus_apc",
        [
            row(
                "sus_apc", primary_diagnosis="I50X", secondary_diagnoses="F00.0* ; E119-;I500;I50.1"
            ),
            row("sus_apc", spell_id="S2", primary_diagnosis="E119-", secondary_diagnoses=None),
        ],
    )
    assert r.staging["primary_diagnosis"].to_list() == ["I50", "E119"]
    assert r.staging["secondary_diagnoses"].to_list() == ["F000;E119;I500;I501", None]


# --------------------------------------------------------------------------------------
# NHS number
# --------------------------------------------------------------------------------------


def _nhs_check(values: list[str | None]) -> list[bool]:
    df = pl.DataFrame({"n": values}, schema={"n": pl.String})
    return df.select(nhs_number_check_digit(pl.col("n"))).to_series().to_list()


def test_nhs_number_check_equals_package_on_random_10_digit_strings():
    rng = random.Random(20261101)
    values = [f"{rng.randrange(10**10):010d}" for _ in range(100_000)]
    # and numbers with a correct check digit, so that valid ones are common, incl. the CHI range
    for _ in range(50_000):
        stem = f"{rng.randrange(10**9):09d}"
        c = (11 - sum(int(d) * (10 - i) for i, d in enumerate(stem)) % 11) % 11
        values.append(stem + str(c % 10))
    expected = [nhs_number.is_valid(v) for v in values]
    assert _nhs_check(values) == expected
    assert 20_000 < sum(expected) < 60_000


def test_nhs_number_check_on_generated_and_odd_values():
    valid = [nhs_number.generate(for_region=nhs_number.REGION_ENGLAND)[0] for _ in range(200)]
    assert all(_nhs_check(valid))
    assert _nhs_check(["0101000000", "3112999999", None, "", "943 476 5919", "+943476591"]) == [
        nhs_number.is_valid("0101000000"),
        nhs_number.is_valid("3112999999"),
        False,
        False,
        False,  # the package accepts spaced input; the contract asks for 10 digits
        False,
    ]


# --------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-02-29", date(2024, 2, 29)),
        (" 2024-02-29 ", date(2024, 2, 29)),
        ("2023-02-29", None),
        ("2024-1-05", None),
        ("2024-01- 5", None),
        ("+024-01-05", None),
        ("20240105", None),
        ("05/01/2024", None),
        ("2024-01-05T00:00:00", None),
    ],
)
def test_date_parsing_is_strict_iso(text, expected):
    frame = check_frame("gp_events", raw_frame("gp_events", [row("gp_events", event_date=text)]))
    assert frame["event_date"].item() == expected


def test_check_frame_types_and_trimming():
    frame = check_frame(
        "sp_referrals",
        raw_frame(
            "sp_referrals", [row("sp_referrals", nhs_number=f" {NHS[1]}\t", contact_attempts=" 3 ")]
        ),
    )
    assert frame.schema["referral_date"] == pl.Date
    assert frame.schema["contact_attempts"] == pl.Int64
    assert frame["contact_attempts"].item() == 3
    assert frame["nhs_number"].item() == NHS[1]
    assert frame["reasons"].item() == "isolation;housing"


# --------------------------------------------------------------------------------------
# pandera really checks data
# --------------------------------------------------------------------------------------


def _bad_events_frame() -> pl.DataFrame:
    return check_frame(
        "gp_events",
        raw_frame("gp_events", [BASE["gp_events"], row("gp_events", nhs_number="9990000019")]),
    )


def test_known_bad_eager_frame_fails_pandera():
    schema = schemas.schema_for("gp_events", EXTRACT, REFS)
    bad = _bad_events_frame()
    with pytest.raises(SchemaError, match="Modulus 11"):
        schema.validate(bad)
    with pytest.raises(SchemaErrors) as info:
        schema.validate(bad, lazy=True)
    fc = info.value.failure_cases
    assert fc.select("index", "check").rows() == [(1, NHS_CHECK)]
    # and the good row alone passes
    assert schema.validate(bad.head(1)).height == 1


def test_lazyframe_needs_data_depth():
    """The trap the design notes warn about: a LazyFrame gets schema checks only by default."""
    schema = schemas.schema_for("gp_events", EXTRACT, REFS)
    bad = _bad_events_frame().lazy()
    with config_context(validation_depth=ValidationDepth.SCHEMA_ONLY):
        schema.validate(bad)  # passes: data not looked at
    with (
        config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA),
        pytest.raises(SchemaError),
    ):
        schema.validate(bad).collect()


def test_schema_checks_dtypes():
    schema = schemas.schema_for("gp_events", EXTRACT, REFS)
    wrong = _bad_events_frame().head(1).with_columns(pl.col("event_date").cast(pl.String))
    with pytest.raises(SchemaError, match="event_date"):
        schema.validate(wrong)


# --------------------------------------------------------------------------------------
# docs
# --------------------------------------------------------------------------------------


def test_docs_list_every_rule():
    doc = (Path(__file__).parent.parent / "docs" / "validation.md").read_text(encoding="utf-8")
    assert schemas.rules_markdown() in doc, "regenerate: python -m schemas > rules section"


# --------------------------------------------------------------------------------------
# contract v2
# --------------------------------------------------------------------------------------

_NDD = Path(__file__).resolve().parents[1] / "data" / "reference" / "nhs-data-dictionary"


@pytest.mark.parametrize(
    ("file", "codes"),
    [
        ("admission_method.csv", "ADMISSION_METHODS"),
        ("discharge_method.csv", "DISCHARGE_METHODS"),
        ("discharge_destination.csv", "DISCHARGE_DESTINATIONS"),
    ],
)
def test_contract_code_sets_equal_the_vendored_nhs_data_dictionary(file, codes):
    import phm.contract as contract

    ref = pl.read_csv(_NDD / file, infer_schema=False)
    assert sorted(ref["code"]) == sorted(getattr(contract, codes))
    if file == "admission_method.csv":
        emergency = ref.filter(pl.col("group") == "emergency")["code"].to_list()
        assert sorted(emergency) == sorted(contract.EMERGENCY_ADMISSION_METHODS)
        assert "26" not in contract.ADMISSION_METHODS and "27" not in contract.ADMISSION_METHODS
    if file == "discharge_destination.csv":
        groups = dict(ref.group_by("group").agg("code").iter_rows())
        assert {g: sorted(c) for g, c in groups.items()} == {
            g: sorted(c) for g, c in contract.DISCHARGE_DESTINATION_GROUPS.items()
        }


def test_v2_admission_methods_accepted_and_26_27_quarantined_with_the_rule_name():
    ok = ["21", "2A", "2B", "2C", "2D", "28", "99"]
    bad = ["26", "27"]
    rows = [row("sus_apc", spell_id=f"S{i}", admission_method=m) for i, m in enumerate(ok + bad)]
    result = _validate("sus_apc", rows)
    assert result.staging["admission_method"].to_list() == ok
    assert result.quarantine["admission_method"].to_list() == bad
    assert (
        result.quarantine["failed_rules"].to_list()
        == [["admission_method: one of the allowed values"]] * 2
    )


def test_v1_frame_without_v2_columns_validates_with_nulls():
    v1 = raw_frame("sus_apc", [row("sus_apc")]).drop("discharge_method", "discharge_destination")
    result = validate_table("sus_apc", v1, EXTRACT, REFS)
    assert result.rows_accepted == 1
    assert result.missing_columns == ("discharge_method", "discharge_destination")
    assert result.staging["discharge_method"].null_count() == 1
    assert result.staging["discharge_destination"].null_count() == 1
    # a required column is still required
    with pytest.raises(schemas.MissingColumnsError):
        validate_table("sus_apc", v1.drop("admission_method"), EXTRACT, REFS)
