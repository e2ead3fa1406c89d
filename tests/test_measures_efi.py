"""Electronic Frailty Index: known-answer tests on hand-made patients."""

from __future__ import annotations

import datetime as dt

import pytest
from measures_fixtures import (
    add_events,
    add_issues,
    add_patients,
    code_for_deficit,
)

from phm.measures import build_efi, build_measures, load_efi_definition

ED = dt.date(2026, 11, 1)
EFI = load_efi_definition()
CODED = [d.id for d in EFI.deficits]


def days_before(n: int) -> dt.date:
    return ED - dt.timedelta(days=n)


def with_deficits(con, nhs: str, n: int, when: dt.date = dt.date(2015, 1, 1)) -> None:
    add_events(con, nhs, *[(code_for_deficit(con, d), when) for d in CODED[:n]])


def distinct_meds(k: int, day: int = 30) -> list[tuple[str, dt.date]]:
    """k issues of k different chemical substances in BNF chapters 1-15."""
    substances = [
        "0212000B0",
        "0205051R0",
        "0601022B0",
        "0103050P0",
        "0407010H0",
        "0206020A0",
        "0409010N0",
    ]
    return [(s + "AAAAAA", days_before(day)) for s in substances[:k]]


def efi_rows(con) -> dict[str, dict]:
    build_efi(con, ED)
    cur = con.execute("SELECT * FROM marts.efi")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def test_definition_has_36_deficits_from_35_code_lists() -> None:
    assert EFI.denominator == 36
    assert len(EFI.deficits) == 35
    assert len({d.codelist for d in EFI.deficits}) == 35
    assert all(d.codelist.startswith("gm_efi_") for d in EFI.deficits)
    assert EFI.polypharmacy.min_distinct == 5 and EFI.polypharmacy.days == 365
    assert EFI.categories == (
        ("fit", 0, 4),
        ("mild", 5, 8),
        ("moderate", 9, 12),
        ("severe", 13, 36),
    )


@pytest.mark.parametrize(
    ("n", "category"),
    [
        (0, None),
        (4, "fit"),
        (5, "mild"),
        (8, "mild"),
        (9, "moderate"),
        (12, "moderate"),
        (13, "severe"),
        (35, "severe"),
    ],
)
def test_score_and_category_from_exact_count(con, n: int, category: str | None) -> None:
    with_deficits(con, "A", n)
    rows = efi_rows(con)
    if n == 0:
        assert "A" not in rows
        return
    a = rows["A"]
    assert a["efi_deficit_count"] == n
    assert a["efi_score"] == pytest.approx(n / 36, abs=0)
    assert a["efi_category"] == category


def test_nine_deficits_is_0_25_moderate_and_eight_is_mild(con) -> None:
    with_deficits(con, "NINE", 9)
    with_deficits(con, "EIGHT", 8)
    rows = efi_rows(con)
    assert rows["NINE"]["efi_score"] == 0.25
    assert rows["NINE"]["efi_category"] == "moderate"
    assert rows["EIGHT"]["efi_score"] == 8 / 36
    assert rows["EIGHT"]["efi_category"] == "mild"


def test_all_36_deficits_is_a_score_of_one(con) -> None:
    with_deficits(con, "A", 35)
    add_issues(con, "A", *distinct_meds(5))
    a = efi_rows(con)["A"]
    assert (a["efi_deficit_count"], a["efi_score"], a["efi_category"]) == (36, 1.0, "severe")


def test_polypharmacy_four_versus_five_distinct_substances(con) -> None:
    add_issues(con, "FOUR", *distinct_meds(4))
    add_issues(con, "FIVE", *distinct_meds(5))
    rows = efi_rows(con)
    assert rows["FOUR"]["efi_distinct_medicines_12m"] == 4
    assert rows["FOUR"]["efi_deficit_count"] == 0
    assert rows["FIVE"]["efi_distinct_medicines_12m"] == 5
    assert rows["FIVE"]["efi_deficit_count"] == 1
    assert rows["FIVE"]["efi_deficits"] == "polypharmacy"
    d = con.execute(
        "SELECT deficit_name, evidence_count FROM marts.efi_deficits WHERE nhs_number = 'FIVE'"
    ).fetchall()
    assert d == [("Polypharmacy", 5)]


def test_polypharmacy_window_edge_365_366(con) -> None:
    # four recent substances plus a fifth on the 365th day (in) or the 366th day (out)
    add_issues(con, "IN", *distinct_meds(4), ("0409010N0AAAAAA", days_before(364)))
    add_issues(con, "OUT", *distinct_meds(4), ("0409010N0AAAAAA", days_before(365)))
    add_issues(con, "FUTURE", *distinct_meds(4), ("0409010N0AAAAAA", ED + dt.timedelta(days=1)))
    rows = efi_rows(con)
    assert rows["IN"]["efi_distinct_medicines_12m"] == 5 and rows["IN"]["efi_deficit_count"] == 1
    assert rows["OUT"]["efi_distinct_medicines_12m"] == 4 and rows["OUT"]["efi_deficit_count"] == 0
    assert rows["FUTURE"]["efi_deficit_count"] == 0


def test_polypharmacy_counts_chemical_substances_in_chapters_1_to_15(con) -> None:
    add_issues(
        con,
        "A",
        *distinct_meds(4),
        (
            "0212000B0AAABAB",
            days_before(20),
        ),  # atorvastatin again, another strength: same substance
        ("0212000B0AAAAAA", days_before(40)),  # and again
        ("2002000A0AAAAAA", days_before(20)),  # chapter 20 (dressings): not a medicine
        ("1904000A0AAAAAA", days_before(20)),  # chapter 19
        (None, days_before(20)),  # no BNF code: cannot be placed in a chapter
    )
    add_issues(con, "B", *distinct_meds(4), ("1502010J0AAAAAA", days_before(20)))  # ch 15 counts
    rows = efi_rows(con)
    assert rows["A"]["efi_distinct_medicines_12m"] == 4
    assert rows["A"]["efi_deficit_count"] == 0
    assert rows["B"]["efi_distinct_medicines_12m"] == 5
    assert rows["B"]["efi_deficit_count"] == 1


def test_coded_deficits_are_ever_recorded_up_to_extract_date(con) -> None:
    falls = code_for_deficit(con, "falls")
    add_events(con, "OLD", (falls, dt.date(1990, 1, 1)))  # decades ago still counts
    add_events(con, "TODAY", (falls, ED))
    add_events(con, "FUTURE", (falls, ED + dt.timedelta(days=1)))
    add_events(con, "TWICE", (falls, dt.date(2001, 1, 1)), (falls, dt.date(2020, 1, 1)))
    rows = efi_rows(con)
    assert rows["OLD"]["efi_deficit_count"] == 1
    assert rows["TODAY"]["efi_deficit_count"] == 1
    assert "FUTURE" not in rows
    assert rows["TWICE"]["efi_deficit_count"] == 1  # one deficit, however many codes
    first, latest, n = con.execute(
        "SELECT first_date, latest_date, evidence_count FROM marts.efi_deficits WHERE nhs_number='TWICE'"
    ).fetchone()
    assert (first, latest, n) == (dt.date(2001, 1, 1), dt.date(2020, 1, 1), 2)


def test_one_code_in_two_deficit_lists_counts_for_both(con) -> None:
    shared = con.execute(
        """
        SELECT c.code FROM reference.efi_deficit_definitions d
        JOIN reference.codelists c USING (codelist_id)
        GROUP BY c.code HAVING count(DISTINCT d.deficit_id) = 2 ORDER BY c.code LIMIT 1
        """
    ).fetchone()
    if shared is None:  # pragma: no cover - depends on the vendored lists
        pytest.skip("no code shared by two eFI lists")
    add_events(con, "A", (shared[0], dt.date(2020, 1, 1)))
    assert efi_rows(con)["A"]["efi_deficit_count"] == 2


def test_patient_measures_carry_efi_and_default_to_fit(con) -> None:
    add_patients(con, "P1", "P2")
    with_deficits(con, "P1", 9)
    add_issues(con, "P1", *distinct_meds(6))
    build_measures(con, ED, load_reference=False)
    rows = dict(
        (r[0], r[1:])
        for r in con.execute(
            "SELECT nhs_number, efi_deficit_count, efi_score, efi_category, has_efi_polypharmacy, "
            "efi_distinct_medicines_12m FROM marts.patient_measures"
        ).fetchall()
    )
    assert rows["P1"] == (10, 10 / 36, "moderate", True, 6)
    assert rows["P2"] == (0, 0.0, "fit", False, 0)
