"""Deprivation: the configurable index (PHM_IMD_*), "deprivation unknown" in the measures,
the Core20 cohort, the cohort summary and the data-quality report."""

from __future__ import annotations

import datetime as dt
import shutil

import polars as pl
import pytest
from measures_fixtures import add_events, add_patients, code_for_condition
from test_schemas import BASE, EXTRACT, REFS, raw_frame

from phm.cohorts import COHORT_DIR, build_cohorts
from phm.disclosure import DisclosurePolicy
from phm.exports import cohort_summary
from phm.imd import IMD2019_PATH, ImdConfig, imd_config, read_imd_deciles
from phm.measures import build_measures, build_patient_measures
from phm.pseudonymise import person_id
from phm.validate import data_quality_markdown, data_quality_summary, validate_table

ED = dt.date(2026, 11, 1)
KEY = b"test-key-for-the-deprivation-0123456789"
D10_2011 = "E01000002"  # IMD 2019 decile 10
D4_2011 = "E01000029"  # IMD 2019 decile 4
NEW_2021 = "E01035000"  # an LSOA 2021 code with no 2011 equivalent (2011 codes end E01033768)
IMD2025_HEADER = (
    '"LSOA code (2021)","LSOA name (2021)",'
    '"Index of Multiple Deprivation (IMD) Decile (where 1 is most deprived 10% of LSOAs)"'
)


def imd2025_file(tmp_path, rows: dict[str, int]):
    """A small hand-made IMD 2025 on LSOA 2021 file, with the published header strings."""
    path = tmp_path / "imd2025_lsoa21.csv"
    lines = [IMD2025_HEADER] + [f'{code},"Area {code}",{d}' for code, d in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def decile_1_lsoa() -> str:
    return read_imd_deciles(ImdConfig()).filter(pl.col("imd_decile") == 1)["lsoa_code"].min()


def cohorts(con, tmp_path, *ids: str) -> None:
    """Build only the named built-in cohorts (the others need risk scores)."""
    folder = tmp_path / "cohorts"
    folder.mkdir(exist_ok=True)
    for cid in ids:
        shutil.copy(COHORT_DIR / f"{cid}.yaml", folder / f"{cid}.yaml")
    build_cohorts(con, ED, directory=folder)


def measures(con, **kw) -> dict[str, dict]:
    build_measures(con, ED, load_reference=False, **kw)
    cur = con.execute("SELECT * FROM marts.patient_measures")
    names = [d[0] for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


# ------------------------------------------------------------------ configuration


def test_default_is_the_vendored_imd2019_on_lsoa2011() -> None:
    cfg = imd_config({})
    assert (cfg.path, cfg.vintage, cfg.lsoa_vintage) == (IMD2019_PATH, "IMD2019", 2011)
    assert cfg.lsoa_column == "lsoa11_code" and cfg.label == "IMD2019 on LSOA 2011"
    deciles = read_imd_deciles(cfg)
    assert deciles.height == 32_844
    assert NEW_2021 not in set(deciles["lsoa_code"])
    got = dict(deciles.filter(pl.col("lsoa_code").is_in([D10_2011, D4_2011])).iter_rows())
    assert got == {D10_2011: 10, D4_2011: 4}


def test_configuration_from_the_environment(tmp_path) -> None:
    path = imd2025_file(tmp_path, {NEW_2021: 3})
    cfg = imd_config(
        {"PHM_IMD_PATH": str(path), "PHM_IMD_VINTAGE": "IMD2025", "PHM_IMD_LSOA_VINTAGE": "2021"}
    )
    assert (cfg.path, cfg.vintage, cfg.lsoa_column) == (path, "IMD2025", "lsoa21_code")
    with pytest.raises(ValueError, match="PHM_IMD_VINTAGE"):
        imd_config({"PHM_IMD_PATH": str(path)})
    with pytest.raises(ValueError, match=r"one of \(2011, 2021\)"):
        imd_config({"PHM_IMD_LSOA_VINTAGE": "2015"})
    with pytest.raises(ValueError, match="one of"):
        ImdConfig(lsoa_vintage=2019)


def test_bad_index_files_fail_clearly(tmp_path) -> None:
    no_decile = tmp_path / "a.csv"
    no_decile.write_text("lsoa21cd,score\nE01000001,3.2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no IMD decile column"):
        read_imd_deciles(ImdConfig(no_decile, "X", 2021))
    wrong_vintage = tmp_path / "b.csv"
    wrong_vintage.write_text("lsoa11cd,imd_decile\nE01000001,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no LSOA 2021 code column"):
        read_imd_deciles(ImdConfig(wrong_vintage, "X", 2021))
    out_of_range = tmp_path / "c.csv"
    out_of_range.write_text("lsoa_code,imd_decile\nE01000001,11\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"outside 1\.\.10"):
        read_imd_deciles(ImdConfig(out_of_range, "X", 2011))
    dup = tmp_path / "d.csv"
    dup.write_text("lsoa_code,imd_decile\nE01000001,1\nE01000001,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate"):
        read_imd_deciles(ImdConfig(dup, "X", 2011))
    with pytest.raises(FileNotFoundError):
        read_imd_deciles(ImdConfig(tmp_path / "missing.csv", "X", 2011))


# ------------------------------------------------------------------ measures


def test_lsoa_2021_only_code_is_deprivation_unknown(con) -> None:
    add_patients(con, "KNOWN", lsoa11_code=D10_2011, lsoa21_code=D10_2011)
    add_patients(con, "NEW21_IN_11", lsoa11_code=NEW_2021)  # a 2021 code sent as lsoa11_code
    add_patients(con, "NEW21_ONLY", lsoa11_code=None, lsoa21_code=NEW_2021)
    add_patients(con, "NO_LSOA", lsoa11_code=None)
    rows = measures(con)
    assert rows["KNOWN"]["deprivation_known"] is True
    assert rows["KNOWN"]["imd2019_decile"] == 10
    for pid in ("NEW21_IN_11", "NEW21_ONLY", "NO_LSOA"):
        assert rows[pid]["deprivation_known"] is False, pid
        assert rows[pid]["imd2019_decile"] is None and rows[pid]["imd2019_quintile"] is None
    assert rows["NEW21_IN_11"]["lsoa11_code"] == NEW_2021  # kept, not dropped
    assert rows["NEW21_ONLY"]["lsoa21_code"] == NEW_2021
    assert {r["imd_vintage"] for r in rows.values()} == {"IMD2019 on LSOA 2011"}


def test_imd2025_on_lsoa2021_changes_the_deciles(con, tmp_path, monkeypatch) -> None:
    path = imd2025_file(tmp_path, {D10_2011: 1, NEW_2021: 3, D4_2011: 7})
    add_patients(con, "SAME_CODE", lsoa11_code=D10_2011, lsoa21_code=D10_2011)
    add_patients(con, "SPLIT", lsoa11_code=D4_2011, lsoa21_code=NEW_2021)
    add_patients(con, "NO_LSOA21", lsoa11_code=D4_2011, lsoa21_code=None)
    before = measures(con)
    assert [before[p]["imd2019_decile"] for p in ("SAME_CODE", "SPLIT", "NO_LSOA21")] == [10, 4, 4]

    monkeypatch.setenv("PHM_IMD_PATH", str(path))
    monkeypatch.setenv("PHM_IMD_VINTAGE", "IMD2025")
    monkeypatch.setenv("PHM_IMD_LSOA_VINTAGE", "2021")
    after = measures(con)  # no code change: the environment decides
    got = {
        p: (r["imd2019_decile"], r["imd2019_quintile"], r["deprivation_known"])
        for p, r in after.items()
    }
    assert got == {
        "SAME_CODE": (1, 1, True),
        "SPLIT": (3, 2, True),
        "NO_LSOA21": (None, None, False),  # joined by lsoa21_code, which it lacks
    }
    assert {r["imd_vintage"] for r in after.values()} == {"IMD2025 on LSOA 2021"}
    # an explicit configuration wins over the environment
    explicit = measures(con, imd=ImdConfig())
    assert explicit["SAME_CODE"]["imd2019_decile"] == 10


# ------------------------------------------------------------------ cohorts and summary


def test_core20_counts_deprivation_unknown_instead_of_dropping_it(con, tmp_path) -> None:
    conds = ("hypertension", "diabetes", "chd", "copd")
    physical = [(code_for_condition(con, c), dt.date(2015, 1, 1)) for c in conds]
    dep = (code_for_condition(con, "depression"), ED - dt.timedelta(days=30))
    d1 = decile_1_lsoa()
    young = dt.date(1980, 1, 1)
    add_patients(con, "9000000101", date_of_birth=young, lsoa11_code=d1)
    add_patients(con, "9000000102", date_of_birth=young, lsoa11_code=NEW_2021)
    add_patients(con, "9000000103", date_of_birth=young, lsoa11_code=None)
    add_patients(con, "9000000104", date_of_birth=young, lsoa11_code=D10_2011)
    for nhs in ("9000000101", "9000000102", "9000000103", "9000000104"):
        add_events(con, nhs, *physical, dep)
    build_patient_measures(con, ED, key=KEY, load_reference=False)
    cohorts(con, tmp_path, "multimorbidity_core20", "multimorbidity_deprivation_unknown")
    pid = {n: person_id(n, KEY) for n in ("9000000101", "9000000102", "9000000103")}

    def members(cohort: str) -> dict[str, str]:
        return dict(
            con.execute(
                "SELECT person_id, reasons FROM marts.cohort_members WHERE cohort_id = ?",
                [cohort],
            ).fetchall()
        )

    core20 = members("multimorbidity_core20")
    assert set(core20) == {pid["9000000101"]}
    assert "IMD decile 1 (IMD2019 on LSOA 2011): Core20" in core20[pid["9000000101"]]
    unknown = members("multimorbidity_deprivation_unknown")
    assert set(unknown) == {pid["9000000102"], pid["9000000103"]}
    assert all("deprivation unknown" in r for r in unknown.values())

    plain = DisclosurePolicy(suppress_max=0, round_to=1)
    s = cohort_summary(con, plain).filter(pl.col("level") == "pcn")
    by_cohort = {r["cohort_id"]: r for r in s.iter_rows(named=True)}
    assert by_cohort["multimorbidity_core20"]["members"] == "1"
    assert by_cohort["multimorbidity_core20"]["members_deprivation_unknown"] == "0"
    assert by_cohort["multimorbidity_core20"]["registered"] == "4"
    assert by_cohort["multimorbidity_core20"]["registered_deprivation_unknown"] == "2"
    assert by_cohort["multimorbidity_deprivation_unknown"]["members_deprivation_unknown"] == "2"


def test_learning_disability_is_not_the_mental_health_condition_of_core20(con, tmp_path) -> None:
    physical = [
        (code_for_condition(con, c), dt.date(2015, 1, 1))
        for c in ("hypertension", "diabetes", "chd", "copd")
    ]
    d1 = decile_1_lsoa()
    young = dt.date(1980, 1, 1)
    add_patients(con, "9000000201", "9000000202", date_of_birth=young, lsoa11_code=d1)
    ld = (code_for_condition(con, "learning_disability"), dt.date(1990, 1, 1))
    smi = (code_for_condition(con, "severe_mental_illness"), dt.date(2010, 1, 1))
    add_events(con, "9000000201", *physical, ld)  # LD + 4 physical: ltc_count 5, not in
    add_events(con, "9000000202", *physical, smi)  # real mental condition + 4 physical: in
    build_patient_measures(con, ED, key=KEY, load_reference=False)
    counts = con.execute(
        "SELECT i.nhs_number, ltc_count, mental_ltc_count, mental_health_condition_count "
        "FROM marts.patient_measures JOIN marts.person_identity i USING (person_id) "
        "ORDER BY 1"
    ).fetchall()
    assert counts == [("9000000201", 5, 1, 0), ("9000000202", 5, 1, 1)]
    cohorts(con, tmp_path, "multimorbidity_core20")
    got = dict(
        con.execute(
            "SELECT i.nhs_number, m.reasons FROM marts.cohort_members m "
            "JOIN marts.person_identity i USING (person_id) "
            "WHERE cohort_id = 'multimorbidity_core20'"
        ).fetchall()
    )
    assert set(got) == {"9000000202"}
    assert (
        "mental health condition(s): Schizophrenia, bipolar disorder and other psychoses"
        in (got["9000000202"])
    )


def test_carers_are_anyone_with_a_carer_code_no_ended_list_exists(con, tmp_path) -> None:
    """No "no longer a carer" list is vendored, so the rule is "a carer code, ever"; the
    cohort's description says so. If such a list is added, this test must change."""
    from phm.cohorts import load_cohorts

    carer = con.execute(
        "SELECT min(code) FROM reference.codelists WHERE codelist_id = 'gm_carer'"
    ).fetchone()[0]
    add_patients(con, "9000000301", "9000000302", "9000000303")
    add_events(con, "9000000301", (carer, dt.date(2012, 3, 4)), (carer, dt.date(2020, 5, 6)))
    add_events(con, "9000000302", (carer, ED + dt.timedelta(days=1)))  # after the extract
    build_patient_measures(con, ED, key=KEY, load_reference=False)
    cohorts(con, tmp_path, "carers")
    got = dict(
        con.execute(
            "SELECT i.nhs_number, m.reasons FROM marts.cohort_members m "
            "JOIN marts.person_identity i USING (person_id) WHERE cohort_id = 'carers'"
        ).fetchall()
    )
    assert got == {"9000000301": "recorded as a carer on 2020-05-06"}
    carers = next(c for c in load_cohorts() if c.id == "carers")
    assert 'no "no longer a carer"' in carers.description


# ------------------------------------------------------------------ data-quality report


def test_data_quality_report_counts_uncovered_lsoas(monkeypatch, tmp_path) -> None:
    nhs = ["9990000018", "9990000026", "9990000034", "9990000042"]
    rows = [
        {**BASE["gp_patients"], "nhs_number": nhs[0], "lsoa11_code": D10_2011},
        {**BASE["gp_patients"], "nhs_number": nhs[1], "lsoa11_code": NEW_2021},
        {**BASE["gp_patients"], "nhs_number": nhs[2], "lsoa11_code": None},
        # ended registration: not counted
        {
            **BASE["gp_patients"],
            "nhs_number": nhs[3],
            "lsoa11_code": NEW_2021,
            "registration_end": "2020-01-01",
        },
    ]
    result = validate_table("gp_patients", raw_frame("gp_patients", rows), EXTRACT, REFS)
    assert result.rows_quarantined == 0
    s = data_quality_summary([result]).filter(pl.col("metric") == "deprivation_unknown")
    got = {r["detail"]: (r["value"], r["denominator"]) for r in s.iter_rows(named=True)}
    assert got == {
        "current patients whose lsoa11_code IMD2019 on LSOA 2011 does not cover": (1, 3),
        "current patients with no lsoa11_code": (1, 3),
    }
    assert "## Deprivation unknown" in data_quality_markdown(data_quality_summary([result]))

    # configured IMD 2025 on LSOA 2021: the 2021 column is checked against that index
    monkeypatch.setenv("PHM_IMD_PATH", str(imd2025_file(tmp_path, {NEW_2021: 2})))
    monkeypatch.setenv("PHM_IMD_VINTAGE", "IMD2025")
    monkeypatch.setenv("PHM_IMD_LSOA_VINTAGE", "2021")
    rows21 = [
        {**r, "lsoa21_code": code}
        for r, code in zip(rows, [NEW_2021, "E01000001", NEW_2021, None], strict=True)
    ]
    result = validate_table("gp_patients", raw_frame("gp_patients", rows21), EXTRACT, REFS)
    s = data_quality_summary([result]).filter(pl.col("metric") == "deprivation_unknown")
    got = {r["detail"]: r["value"] for r in s.iter_rows(named=True)}
    assert got == {
        "current patients whose lsoa21_code IMD2025 on LSOA 2021 does not cover": 1,
        "current patients with no lsoa21_code": 0,
    }
