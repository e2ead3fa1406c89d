"""Long-term condition registers: known-answer tests on hand-made patients."""

from __future__ import annotations

import datetime as dt

import pytest
from measures_fixtures import (
    add_events,
    add_issues,
    add_patients,
    code_for_condition,
)

from phm.definitions import DefinitionError
from phm.measures import build_ltc_registers, build_measures, load_ltc_conditions
from phm.measures.definitions import LTC_PATH

ED = dt.date(2026, 11, 1)


def days_before(n: int) -> dt.date:
    return ED - dt.timedelta(days=n)


def code(con, condition: str, role: str = "diagnosis") -> str:
    return code_for_condition(con, condition, role)


def registers(con) -> dict[tuple[str, str], dict]:
    build_ltc_registers(con, ED)
    cur = con.execute("SELECT * FROM marts.ltc_registers")
    names = [d[0] for d in cur.description]
    return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def patient_row(con, nhs: str) -> dict:
    build_measures(con, ED, load_reference=False)
    cur = con.execute("SELECT * FROM marts.patient_measures WHERE nhs_number = ?", [nhs])
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    assert row is not None, nhs
    return dict(zip(names, row, strict=True))


# ------------------------------------------------------------------ definitions


def test_definitions_cover_the_required_conditions() -> None:
    conds = {c.id: c for c in load_ltc_conditions()}
    required = {
        "hypertension", "diabetes", "chd", "heart_failure", "atrial_fibrillation", "stroke_tia",
        "ckd", "copd", "asthma", "cancer", "dementia", "depression", "anxiety",
        "severe_mental_illness", "epilepsy", "learning_disability", "osteoarthritis",
        "rheumatoid_arthritis", "osteoporosis", "thyroid", "parkinsons", "pvd",
        "substance_misuse", "alcohol_problems",
    }  # fmt: skip
    assert required <= set(conds)
    assert {c.type for c in conds.values()} == {"mental", "physical"}
    mental = {c.id for c in conds.values() if c.type == "mental"}
    assert mental == {
        "depression", "anxiety", "severe_mental_illness", "dementia", "learning_disability",
        "alcohol_problems", "substance_misuse", "eating_disorders",
    }  # fmt: skip
    # PCD refsets (QOF clusters) wherever one exists
    for cid in ("hypertension", "diabetes", "chd", "heart_failure", "copd", "asthma", "dementia"):
        assert all(cl.startswith("pcd_") for cl in conds[cid].diagnosis), cid
    assert conds["hypertension"].resolved == ("pcd_hypres_cod",)
    for c in conds.values():
        assert c.rule_source, c.id


def test_every_condition_can_be_on_the_register(con) -> None:
    conds = load_ltc_conditions()
    add_patients(con, "9000000001")
    # within 365 days, so the windowed conditions (depression, anxiety, cancer) qualify too
    add_events(con, "9000000001", *[(code(con, c.id), days_before(100)) for c in conds])
    # treatment for the "currently treated" conditions
    add_issues(
        con,
        "9000000001",
        ("0301011R0AAAPAP", days_before(30)),
        ("0408010A0AAAAAA", days_before(30)),
    )
    row = patient_row(con, "9000000001")
    for c in conds:
        assert row[f"has_{c.id}"] is True, c.id
        assert row[f"{c.id}_first_date"] == days_before(100), c.id
    assert row["ltc_count"] == len(conds) == 28
    assert row["mental_ltc_count"] == 8
    assert row["physical_ltc_count"] == 20


# ------------------------------------------------------------------ counts


def test_exactly_five_conditions_one_mental(con) -> None:
    add_patients(con, "9000000002")
    add_events(
        con,
        "9000000002",
        (code(con, "hypertension"), dt.date(2010, 3, 1)),
        (code(con, "hypertension"), dt.date(2019, 5, 1)),  # repeated code: one condition
        (code(con, "diabetes"), dt.date(2012, 1, 1)),
        (code(con, "chd"), dt.date(2015, 7, 7)),
        (code(con, "copd"), dt.date(2018, 2, 2)),
        (code(con, "dementia"), dt.date(2021, 9, 9)),
        ("22298006", dt.date(2020, 1, 1)),  # MI: in the CHD cluster too? only counts as CHD
        ("999999999", dt.date(2020, 1, 1)),  # not a listed code
    )
    row = patient_row(con, "9000000002")
    on = sorted(c.id for c in load_ltc_conditions() if row[f"has_{c.id}"])
    assert on == ["chd", "copd", "dementia", "diabetes", "hypertension"]
    assert (row["ltc_count"], row["mental_ltc_count"], row["physical_ltc_count"]) == (5, 1, 4)
    assert row["hypertension_first_date"] == dt.date(2010, 3, 1)
    assert row["hypertension_latest_date"] == dt.date(2019, 5, 1)
    assert row["dementia_first_date"] == row["dementia_latest_date"] == dt.date(2021, 9, 9)
    assert row["asthma_first_date"] is None and row["has_asthma"] is False


def test_patient_with_no_codes_has_zero_counts(con) -> None:
    add_patients(con, "9000000003")
    row = patient_row(con, "9000000003")
    assert (row["ltc_count"], row["mental_ltc_count"], row["physical_ltc_count"]) == (0, 0, 0)
    assert row["has_hypertension"] is False


# ------------------------------------------------------------------ resolved codes


def test_resolved_and_rediagnosed(con) -> None:
    hyp, res = code(con, "hypertension"), code(con, "hypertension", "resolved")
    add_events(con, "A", (hyp, dt.date(2015, 1, 1)), (res, dt.date(2018, 1, 1)))  # resolved
    add_events(  # re-diagnosed after resolution
        con, "B", (hyp, dt.date(2015, 1, 1)), (res, dt.date(2018, 1, 1)), (hyp, dt.date(2020, 6, 1))
    )
    add_events(con, "C", (hyp, dt.date(2019, 4, 4)), (res, dt.date(2019, 4, 4)))  # same day
    add_events(con, "D", (res, dt.date(2019, 4, 4)))  # resolved code only
    r = registers(con)
    a = r[("A", "hypertension")]
    assert a["is_on_register"] is False and a["meets_code_rule"] is False
    assert a["latest_date"] == dt.date(2015, 1, 1)
    assert a["latest_resolved_date"] == dt.date(2018, 1, 1)
    b = r[("B", "hypertension")]
    assert b["is_on_register"] is True
    assert (b["first_date"], b["latest_date"]) == (dt.date(2015, 1, 1), dt.date(2020, 6, 1))
    # QOF: only a resolved code recorded *after* the latest diagnosis resolves it
    assert r[("C", "hypertension")]["is_on_register"] is True
    assert ("D", "hypertension") not in r


def test_ckd_stage_1_2_code_supersedes_stage_3_5(con) -> None:
    ckd35 = code(con, "ckd")
    ckd12 = con.execute(
        "SELECT min(code) FROM reference.codelists WHERE codelist_id = 'pcd_ckd1and2_cod'"
    ).fetchone()[0]
    add_events(con, "A", (ckd35, dt.date(2019, 1, 1)), (ckd12, dt.date(2021, 1, 1)))
    add_events(con, "B", (ckd12, dt.date(2019, 1, 1)), (ckd35, dt.date(2021, 1, 1)))
    r = registers(con)
    assert r[("A", "ckd")]["is_on_register"] is False
    assert r[("B", "ckd")]["is_on_register"] is True


# ------------------------------------------------------------------ extract date


def test_codes_after_extract_date_are_ignored(con) -> None:
    hyp, res = code(con, "hypertension"), code(con, "hypertension", "resolved")
    add_events(con, "A", (hyp, ED + dt.timedelta(days=1)))  # only a future code
    add_events(con, "B", (hyp, dt.date(2015, 1, 1)), (res, ED + dt.timedelta(days=1)))
    add_events(con, "C", (hyp, dt.date(2015, 1, 1)), (hyp, ED + dt.timedelta(days=10)), (hyp, ED))
    r = registers(con)
    assert ("A", "hypertension") not in r
    assert r[("B", "hypertension")]["is_on_register"] is True
    assert r[("B", "hypertension")]["latest_resolved_date"] is None
    assert r[("C", "hypertension")]["latest_date"] == ED  # a code on the extract date counts


# ------------------------------------------------------------------ windows and treatment


def test_asthma_needs_treatment_in_last_12_months(con) -> None:
    ast = code(con, "asthma")
    for nhs in ("A", "B", "C", "D"):
        add_events(con, nhs, (ast, dt.date(2005, 1, 1)))
    add_issues(con, "A", ("0301011R0AAAPAP", days_before(364)))  # 365th day of the window
    add_issues(con, "B", ("0301011R0AAAPAP", days_before(365)))  # 366th day: outside
    add_issues(con, "C", ("0302000C0AAAAAA", ED))  # inhaled corticosteroid on the extract date
    add_issues(con, "D", ("0401010T0AAAAAA", days_before(10)))  # hypnotic: not asthma treatment
    r = registers(con)
    assert r[("A", "asthma")]["is_on_register"] is True
    assert r[("A", "asthma")]["medication_issues"] == 1
    assert r[("B", "asthma")]["is_on_register"] is False
    assert r[("B", "asthma")]["meets_code_rule"] is True
    assert r[("B", "asthma")]["meets_medication_rule"] is False
    assert r[("C", "asthma")]["is_on_register"] is True
    assert r[("D", "asthma")]["is_on_register"] is False
    assert r[("D", "asthma")]["medication_issues"] == 0


def test_depression_code_window_and_prescription_arm(con) -> None:
    dep, res = code(con, "depression"), code(con, "depression", "resolved")
    add_events(con, "A", (dep, days_before(364)))  # latest code on the window's first day
    add_events(con, "B", (dep, days_before(365)))  # one day earlier: outside
    add_issues(con, "C", *[("0403030E0AAAAAA", days_before(d)) for d in (10, 100, 200, 300)])
    add_issues(con, "D", *[("0403030E0AAAAAA", days_before(d)) for d in (10, 100, 200)])
    add_issues(con, "E", *[("0403030E0AAAAAA", days_before(d)) for d in (10, 100, 200, 365)])
    add_events(con, "F", (dep, days_before(100)), (res, days_before(50)))  # resolved after
    r = registers(con)
    assert r[("A", "depression")]["is_on_register"] is True
    assert r[("B", "depression")]["is_on_register"] is False
    c = r[("C", "depression")]
    assert c["is_on_register"] is True and c["first_date"] is None and c["medication_issues"] == 4
    assert ("D", "depression") not in r  # 3 issues: neither arm
    assert ("E", "depression") not in r  # the 4th issue is on day 366
    assert r[("F", "depression")]["is_on_register"] is False


def test_cancer_first_diagnosis_within_five_years(con) -> None:
    can = code(con, "cancer")
    add_events(con, "A", (can, days_before(1825)))  # day 1,826 of the window: inside
    add_events(con, "B", (can, days_before(1826)), (can, days_before(10)))  # first code too old
    r = registers(con)
    assert r[("A", "cancer")]["is_on_register"] is True
    assert r[("B", "cancer")]["is_on_register"] is False
    assert r[("B", "cancer")]["latest_date"] == days_before(10)


def test_stroke_or_tia_from_either_cluster(con) -> None:
    tia = con.execute(
        "SELECT min(code) FROM reference.codelists WHERE codelist_id = 'pcd_tia_cod'"
    ).fetchone()[0]
    add_events(con, "A", (tia, dt.date(2022, 2, 2)))
    assert registers(con)[("A", "stroke_tia")]["is_on_register"] is True


# ------------------------------------------------------------------ tricyclics (BNF 4.3.1)

AMITRIPTYLINE = "0403010B0AAABAB"  # BNF 4.3.1 tricyclic, widely used at low dose for pain
SERTRALINE = "0403030Q0AAAAAA"  # BNF 4.3.3 SSRI


def test_tricyclics_never_count_toward_the_prescription_arm(con) -> None:
    dep = code(con, "depression")
    monthly = [10 + 30 * k for k in range(12)]
    add_patients(con, "9000000010", "9000000011", "9000000012", "9000000013")
    add_issues(con, "9000000010", *[(AMITRIPTYLINE, days_before(d)) for d in monthly])
    # 3 tricyclic + 1 SSRI: only one issue counts
    add_issues(
        con,
        "9000000011",
        *[(AMITRIPTYLINE, days_before(d)) for d in (10, 40, 70)],
        (SERTRALINE, days_before(100)),
    )
    add_issues(con, "9000000012", *[(SERTRALINE, days_before(d)) for d in (10, 40, 70, 100)])
    # a tricyclic and a depression code: on the register through the code arm
    add_events(con, "9000000013", (dep, days_before(30)))
    add_issues(con, "9000000013", *[(AMITRIPTYLINE, days_before(d)) for d in monthly])
    r = registers(con)
    assert ("9000000010", "depression") not in r
    assert ("9000000010", "anxiety") not in r
    assert ("9000000011", "depression") not in r  # 1 counting issue, not 4
    assert r[("9000000012", "depression")]["is_on_register"] is True
    on_code = r[("9000000013", "depression")]
    assert on_code["is_on_register"] is True and on_code["meets_code_rule"] is True
    assert on_code["medication_issues"] == 0
    row = patient_row(con, "9000000010")
    assert row["has_depression"] is False
    assert row["mental_ltc_count"] == row["mental_health_condition_count"] == 0


def test_tricyclic_exclusion_is_definition_data(tmp_path) -> None:
    conds = {c.id: c for c in load_ltc_conditions()}
    assert conds["depression"].medication.exclude_bnf_prefixes == ("040301",)
    # the anxiety arm (BNF 4.1) cannot include a tricyclic (BNF 4.3.1) in the first place
    assert not any(p.startswith("0403") for p in conds["anxiety"].medication.bnf_prefixes)
    # an exclusion outside the included prefixes is a definition error, not a silent no-op
    text = LTC_PATH.read_text(encoding="utf-8").replace(
        'exclude_bnf_prefixes: ["040301"]', 'exclude_bnf_prefixes: ["0401"]'
    )
    bad = tmp_path / "ltc.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(DefinitionError, match=r"medication\.exclude_bnf_prefixes"):
        load_ltc_conditions(bad)


# ------------------------------------------------------------------ mental health flag


def test_learning_disability_is_not_a_mental_health_condition(con) -> None:
    conds = {c.id: c for c in load_ltc_conditions()}
    assert conds["learning_disability"].type == "mental"  # Barnett's class, for the counts
    assert conds["learning_disability"].mental_health_condition is False
    assert {c.id for c in conds.values() if c.mental_health_condition} == {
        "depression", "anxiety", "severe_mental_illness", "dementia", "alcohol_problems",
        "substance_misuse", "eating_disorders",
    }  # fmt: skip
    add_patients(con, "9000000020", "9000000021")
    add_events(con, "9000000020", (code(con, "learning_disability"), dt.date(2001, 1, 1)))
    add_events(
        con,
        "9000000021",
        (code(con, "learning_disability"), dt.date(2001, 1, 1)),
        (code(con, "severe_mental_illness"), dt.date(2015, 1, 1)),
        (code(con, "depression"), days_before(20)),
    )
    build_measures(con, ED, load_reference=False)
    rows = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT nhs_number, mental_ltc_count, mental_health_condition_count, "
            "has_mental_health_condition, mental_health_condition_names "
            "FROM marts.patient_measures"
        ).fetchall()
    }
    assert rows["9000000020"] == (1, 0, False, "")
    names = [c.name for c in load_ltc_conditions()]
    expected = ", ".join(
        n for n in names if n in (conds["depression"].name, conds["severe_mental_illness"].name)
    )
    assert rows["9000000021"] == (3, 2, True, expected)
