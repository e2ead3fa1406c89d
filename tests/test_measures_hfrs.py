"""Hospital Frailty Risk Score: known answers and a cross-check against comorbidipy 0.5.0."""

from __future__ import annotations

import csv
import datetime as dt
import random
from decimal import Decimal

import polars as pl
import pytest
from measures_fixtures import insert_rows

from phm.measures import build_hfrs, load_hfrs_weights
from phm.measures.definitions import HFRS_PATH

ED = dt.date(2026, 11, 1)
WEIGHTS = {w.icd10_code: w.weight for w in load_hfrs_weights()}


def days_before(n: int) -> dt.date:
    return ED - dt.timedelta(days=n)


_spell_no = iter(range(10**9))


def spell(
    nhs: str, admitted: dt.date, primary: str, secondary: str | None = None, method: str = "21"
) -> dict:
    return {
        "nhs_number": nhs,
        "spell_id": f"S{next(_spell_no)}",
        "provider_code": "RWE",
        "admission_date": admitted,
        "discharge_date": admitted + dt.timedelta(days=3),
        "admission_method": method,
        "primary_diagnosis": primary,
        "secondary_diagnoses": secondary,
    }


def hfrs_rows(con) -> dict[str, dict]:
    build_hfrs(con, ED)
    cur = con.execute("SELECT * FROM marts.hfrs")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


# ------------------------------------------------------------------ the table


def test_weights_table_is_the_published_109_codes() -> None:
    assert len(WEIGHTS) == 109
    assert sum(WEIGHTS.values()) == Decimal("173.2")
    assert WEIGHTS["F00"] == Decimal("7.1")
    assert WEIGHTS["W19"] == Decimal("3.2")
    assert WEIGHTS["R50"] == Decimal("0.1")
    with HFRS_PATH.open() as fh:
        assert next(csv.reader(fh)) == ["icd10_code", "weight", "icd10_title"]


def test_weights_agree_with_comorbidipy_table() -> None:
    mapping = comorbidipy_module().mapping.hfrs_mapping
    assert {k: Decimal(str(v)) for k, v in mapping.items()} == WEIGHTS


# ------------------------------------------------------------------ known answers


def test_f00_and_w19_is_10_3_intermediate(con) -> None:
    insert_rows(con, "sus_apc", [spell("A", days_before(100), "F001", "W19;I10")])
    a = hfrs_rows(con)["A"]
    assert a["hfrs_score"] == Decimal("10.3")
    assert a["hfrs_category"] == "intermediate"
    assert a["hfrs_codes"] == "F00;W19"
    assert a["hfrs_spells_2y"] == 1


def test_code_counted_once_across_spells_and_positions(con) -> None:
    insert_rows(
        con,
        "sus_apc",
        [
            spell("A", days_before(10), "F000", "F001;F00"),
            spell("A", days_before(400), "F009", "W19"),
        ],
    )
    a = hfrs_rows(con)["A"]
    assert a["hfrs_score"] == Decimal("10.3")  # F00 once (7.1) + W19 (3.2)
    assert a["hfrs_spells_2y"] == 2


def test_two_year_window_edge_730_731(con) -> None:
    insert_rows(
        con,
        "sus_apc",
        [
            spell("IN", days_before(729), "F00"),  # 730th day of the window
            spell("OUT", days_before(730), "F00"),  # 731st day: outside
            spell("TODAY", ED, "F00"),
            spell("FUTURE", ED + dt.timedelta(days=1), "F00"),
        ],
    )
    rows = hfrs_rows(con)
    assert rows["IN"]["hfrs_score"] == Decimal("7.1")
    assert rows["TODAY"]["hfrs_score"] == Decimal("7.1")
    assert "OUT" not in rows
    assert "FUTURE" not in rows


def test_spells_without_hfrs_codes_score_zero_low(con) -> None:
    insert_rows(con, "sus_apc", [spell("A", days_before(5), "J45X", None)])
    a = hfrs_rows(con)["A"]
    assert (a["hfrs_score"], a["hfrs_category"], a["hfrs_codes"]) == (Decimal("0.0"), "low", None)


@pytest.mark.parametrize(
    ("codes", "score", "category"),
    [
        (["R41", "R54"], "4.9", "low"),  # 2.7 + 2.2
        (["J22", "R31", "M15", "M41"], "5.0", "intermediate"),  # 0.7+3.0+0.4+0.9
        (["Z99", "I95", "R54", "E83"], "5.0", "intermediate"),  # float sum 5.000000000000001
        (["R47", "Z74", "R55", "S00", "N20", "W10", "E53", "G81"], "15.0", "intermediate"),
        (["F03", "G31", "F00", "T83", "R00", "R50", "J22", "Y84"], "15.0", "intermediate"),
        (["F00", "G81", "G30", "R50"], "15.6", "high"),
    ],
)
def test_category_boundaries_are_exact(con, codes: list[str], score: str, category: str) -> None:
    assert sum(WEIGHTS[c] for c in codes) == Decimal(score)
    insert_rows(con, "sus_apc", [spell("A", days_before(30), codes[0], ";".join(codes[1:]))])
    a = hfrs_rows(con)["A"]
    assert a["hfrs_score"] == Decimal(score)
    assert a["hfrs_category"] == category


# ------------------------------------------------------------------ comorbidipy cross-check


def comorbidipy_module():
    """Import comorbidipy 0.5.0 on current pandas.

    comorbidipy does ``from pandas.core.common import SettingWithCopyWarning``; pandas 3 no
    longer has that warning (copy-on-write). Inject a stand-in Warning class first.
    """
    import pandas
    import pandas.core.common

    if not hasattr(pandas.core.common, "SettingWithCopyWarning"):
        pandas.core.common.SettingWithCopyWarning = getattr(
            pandas.errors, "SettingWithCopyWarning", type("SettingWithCopyWarning", (Warning,), {})
        )
    import comorbidipy
    import comorbidipy.mapping

    assert comorbidipy.__version__ == "0.5.0"
    return comorbidipy


def synthetic_spells(n_patients: int, seed: int) -> list[dict]:
    """Random spells: HFRS and non-HFRS codes in 3- and 4-character forms, dates in/out of window."""
    rng = random.Random(seed)
    hfrs = sorted(WEIGHTS)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    other = sorted(
        {f"{rng.choice(letters)}{rng.randint(0, 99):02d}" for _ in range(3000)} - set(hfrs)
    )

    def a_code() -> str:
        base = rng.choice(hfrs) if rng.random() < 0.35 else rng.choice(other)
        r = rng.random()
        return base if r < 0.4 else base + (rng.choice("0123456789") if r < 0.9 else "X")

    rows = []
    for i in range(n_patients):
        nhs = f"P{i:06d}"
        for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3, 4, 6])):
            n_sec = rng.choice([0, 0, 1, 2, 3, 5, 8, 12, 23])
            rows.append(
                spell(
                    nhs,
                    days_before(rng.randint(-5, 1000)),  # some after the extract date, some > 2y
                    a_code(),
                    ";".join(a_code() for _ in range(n_sec)) or None,
                    method=rng.choice(["11", "21", "22", "31"]),
                )
            )
    # one patient whose exact score is 15.0 but whose float sum is not (see docs/measures.md)
    rows.append(spell("EXACT15", days_before(3), "R47", "Z74;R55;S00;N20;W10;E53;G81"))
    return rows


def test_scores_identical_to_comorbidipy(con) -> None:
    comorbidipy = comorbidipy_module()
    import pandas as pd

    rows = synthetic_spells(3000, seed=20261101)
    df = pl.DataFrame(rows)
    con.register("_spells", df.to_arrow())
    con.execute("INSERT INTO staging.sus_apc BY NAME SELECT * FROM _spells")
    con.unregister("_spells")
    ours = hfrs_rows(con)

    # the same windowed diagnoses, built independently in Python: admission in the 730 days
    # ending on the extract date; primary and every secondary diagnosis
    start = ED - dt.timedelta(days=729)
    long = []
    for r in rows:
        if start <= r["admission_date"] <= ED:
            long.append((r["nhs_number"], r["primary_diagnosis"]))
            for c in (r["secondary_diagnoses"] or "").split(";"):
                if c:
                    long.append((r["nhs_number"], c))
    theirs_df = comorbidipy.hfrs(pd.DataFrame(long, columns=["id", "code"]), id="id", code="code")
    theirs = dict(zip(theirs_df["id"], theirs_df["hfrs"].astype(float), strict=True))

    assert len(ours) > 2000
    assert set(ours) == set(theirs)  # same patients (at least one spell in the window)
    mismatches = {
        k: (ours[k]["hfrs_score"], v)
        for k, v in theirs.items()
        if ours[k]["hfrs_score"] != Decimal(str(round(v, 1)))
    }
    assert mismatches == {}
    # comorbidipy sums binary floats: equal to the published one-decimal score only after
    # rounding; at a category boundary the raw float can fall on the wrong side.
    raw = theirs["EXACT15"]
    assert ours["EXACT15"]["hfrs_score"] == Decimal("15.0")
    assert ours["EXACT15"]["hfrs_category"] == "intermediate"
    assert abs(raw - 15.0) < 1e-9
    float_sum = 0.0
    for c in ("R47", "Z74", "R55", "S00", "N20", "W10", "E53", "G81"):
        float_sum += float(WEIGHTS[c])
    assert float_sum > 15.0  # 15.000000000000002: "> 15" would wrongly say high
    # the spread of the synthetic scores covers all three categories
    cats = {r["hfrs_category"] for r in ours.values()}
    assert cats == {"low", "intermediate", "high"}
