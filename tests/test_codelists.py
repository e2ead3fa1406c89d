"""Code lists: SNOMED CT id checks, loading with provenance, damaged ids, clear errors."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from phm.codelists import (
    CATALOGUE_COLUMNS,
    CodelistError,
    clean_sctid,
    load_codelists,
    read_catalogue,
    read_codelist,
    write_codelists,
)
from phm.codes import is_valid_sctid, sctid_problem, verhoeff_is_valid
from phm.measures.definitions import required_codelists
from phm.paths import REFERENCE_DIR, codelist_dir

VENDORED = REFERENCE_DIR / "codelists"
INVALID = VENDORED / "INVALID_SCTIDS.csv"


def invalid_rows() -> list[dict[str, str]]:
    with INVALID.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ Verhoeff / SCTID checks


@pytest.mark.parametrize(
    "code",
    [
        "22298006",  # myocardial infarction
        "38341003",  # hypertensive disorder
        "73211009",  # diabetes mellitus
        "195136004",  # rheumatoid myocarditis (listed as 195136004.0 in INVALID_SCTIDS.csv)
        "162659009",  # hypertension resolved (HYPRES_COD)
        "999004691000230108",  # 18-digit extension id (DM_COD refset id)
        "1089481000000106",  # cataleptic schizophrenia (UK extension)
    ],
)
def test_known_valid_sctids(code: str) -> None:
    assert verhoeff_is_valid(code)
    assert is_valid_sctid(code)
    assert clean_sctid(code) == (code, "ok")


def test_verhoeff_detects_single_digit_and_transposition_errors() -> None:
    good = "22298006"
    # every single-digit substitution of the check digit fails
    for d in "0123456789":
        if d != good[-1]:
            assert not verhoeff_is_valid(good[:-1] + d)
    # adjacent transposition in the body fails
    assert not verhoeff_is_valid("22928006")


def test_invalid_sctids_file_ids_that_are_not_floats_fail_the_check() -> None:
    rows = [r for r in invalid_rows() if not r["code"].endswith(".0")]
    assert len(rows) == 533
    problems = Counter(sctid_problem(r["code"]) for r in rows)
    # 533 truncated 15-18 digit ids (check digit or partition) and one dropped-digit 7-digit id
    assert set(problems) <= {"check_digit", "partition"}
    assert None not in problems
    assert sctid_problem("2495009") is not None  # the gynaecological-cancer case


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("195136004.0", ("195136004", "repaired_float")),  # valid integer part: repaired
        ("7119001.0", ("7119001", "repaired_float")),
        ("882421000000000.0", (None, "float_too_long")),  # passes Verhoeff but truncated
        ("1067020000000000.0", (None, "float_too_long")),
        ("195136005.0", (None, "float_check_digit")),
        ("1007761000000100", (None, "check_digit")),  # 15-significant-digit truncation
        ("12345", (None, "length")),
        ("1234567890123456789", (None, "length")),
        ("0022298006", (None, "leading_zero")),
        ("2229800x", (None, "not_digits")),
        ("", (None, "not_digits")),
        (" 22298006 ", ("22298006", "ok")),
    ],
)
def test_clean_sctid(raw: str, expected: tuple) -> None:
    assert clean_sctid(raw) == expected


def test_description_id_partition_is_rejected() -> None:
    # a valid Verhoeff number whose partition is 01 (description) is not a concept id
    for body in ("1234501", "9876501"):
        for d in "0123456789":
            if verhoeff_is_valid(body + d):
                assert sctid_problem(body + d) == "partition"
                break
        else:  # pragma: no cover - Verhoeff always has exactly one check digit
            raise AssertionError


# ------------------------------------------------------------------ vendored lists


@pytest.fixture(scope="module")
def loaded() -> tuple[duckdb.DuckDBPyConnection, object]:
    con = duckdb.connect()
    report = write_codelists(con)
    return con, report


def test_default_codelist_dir_is_vendored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PHM_CODELIST_DIR", raising=False)
    assert codelist_dir() == VENDORED


def test_catalogue_lists_every_vendored_snomed_file() -> None:
    specs = read_catalogue()
    paths = {s.path for s in specs.values()}
    with (VENDORED / "MANIFEST.csv").open() as fh:
        gm = {r["file"] for r in csv.DictReader(fh)}
    with (VENDORED / "pcd-refsets" / "MANIFEST.csv").open() as fh:
        pcd = {"pcd-refsets/" + r["file"] for r in csv.DictReader(fh)}
    assert paths == gm | pcd
    assert len(specs) == 128 + 55
    for s in specs.values():
        assert s.version and s.source and s.licence and s.publisher, s.codelist_id
    assert all("no LICENSE" in s.licence for s in specs.values() if s.source == "gm-sde")


def test_damaged_ids_match_invalid_sctids_file_exactly(loaded) -> None:
    _, report = loaded
    expected = {(r["file"], int(r["line"])): r for r in invalid_rows()}
    got = {(i.path, i.line): i for i in report.issues}
    assert set(got) == set(expected)  # every damaged row found, nothing else touched
    assert len(expected) == 780
    for key, issue in got.items():
        assert issue.raw_code == expected[key]["code"]
        if issue.action == "repaired":
            assert expected[key]["reason"].startswith(
                "float-formatted ('.0' suffix); integer part is a valid"
            )
    assert report.repaired == 197
    assert report.dropped == 583
    assert report.dropped_by_reason() == {"check_digit": 533, "float_too_long": 50}


def test_reference_tables(loaded) -> None:
    con, report = loaded
    n, n_lists = con.execute(
        "SELECT count(*), count(DISTINCT codelist_id) FROM reference.codelists"
    ).fetchone()
    assert n == report.codes_loaded
    assert n_lists == 183
    cols = [r[0] for r in con.execute("DESCRIBE reference.codelists").fetchall()]
    assert cols == ["codelist_id", "code", "term", "source", "version"]
    # every stored code is a valid concept id; no duplicates within a list
    codes = con.execute("SELECT codelist_id, code FROM reference.codelists").fetchall()
    assert all(is_valid_sctid(c) for _, c in codes)
    assert len(set(codes)) == len(codes)
    row = con.execute(
        "SELECT code, term, source, version FROM reference.codelists "
        "WHERE codelist_id = 'pcd_hypres_cod'"
    ).fetchall()
    assert row == [("162659009", "Hypertension resolved", "nhs-pcd-refsets", "20250627")]
    # repaired float ids are stored without ".0"
    assert con.execute(
        "SELECT count(*) FROM reference.codelists WHERE code = '195136004' "
        "AND codelist_id LIKE 'gm_legacy_rheumatoid%'"
    ).fetchone() == (1,)
    issues = con.execute(
        "SELECT action, count(*) FROM reference.codelist_issues GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert issues == [("dropped", 583), ("repaired", 197)]
    cat = con.execute(
        "SELECT rows_read, codes_loaded, repaired, dropped, duplicate_rows, length(file_sha256) "
        "FROM reference.codelist_catalogue WHERE codelist_id = 'gm_legacy_multiple_sclerosis'"
    ).fetchone()
    assert cat == (75, 27, 0, 48, 0, 64)


def test_lists_used_by_measures_are_clean(loaded) -> None:
    con, _ = loaded
    used = required_codelists()
    rows = dict(
        con.execute(
            "SELECT codelist_id, dropped FROM reference.codelist_catalogue WHERE codelist_id IN "
            f"({', '.join(repr(u) for u in used)})"
        ).fetchall()
    )
    assert set(rows) == set(used)
    damaged = {k: v for k, v in rows.items() if v}
    # only the three legacy Barnett lists lose ids; documented in ltc_conditions.yaml
    assert damaged == {
        "gm_legacy_multiple_sclerosis": 48,
        "gm_legacy_chronic_liver_disease": 1,
        "gm_legacy_inflammatory_bowel_disease": 5,
    }


def test_readme_documents_every_list_the_measures_use() -> None:
    text = (VENDORED / "README.md").read_text(encoding="utf-8")
    for cid in required_codelists():
        assert f"`{cid}`" in text, cid


def test_write_replaces_previous_load() -> None:
    con = duckdb.connect()
    write_codelists(con, ["pcd_hyp_cod", "pcd_hypres_cod"])
    write_codelists(con, ["pcd_dm_cod"])
    assert con.execute("SELECT DISTINCT codelist_id FROM reference.codelists").fetchall() == [
        ("pcd_dm_cod",)
    ]


# ------------------------------------------------------------------ errors and overrides


def _mini_catalogue(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "catalogue.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CATALOGUE_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "x") for c in CATALOGUE_COLUMNS})
    return path


def test_unknown_list_id_is_a_clear_error() -> None:
    with pytest.raises(CodelistError, match="not in the catalogue: no_such_list"):
        load_codelists(["no_such_list"])


def test_missing_file_names_the_list_and_path(tmp_path: Path) -> None:
    spec = read_catalogue()["pcd_hyp_cod"]
    with pytest.raises(CodelistError) as e:
        read_codelist(spec, tmp_path)
    assert "pcd_hyp_cod" in str(e.value)
    assert str(tmp_path / spec.path) in str(e.value)


def test_missing_column_names_the_file_and_column(tmp_path: Path) -> None:
    f = tmp_path / "lists" / "x.csv"
    f.parent.mkdir()
    f.write_text("concept,term\n22298006,MI\n", encoding="utf-8")
    cat = _mini_catalogue(
        tmp_path,
        [
            {
                "codelist_id": "x",
                "path": "x.csv",
                "format": "csv",
                "code_column": "code",
                "term_column": "term",
            }
        ],
    )
    with pytest.raises(CodelistError) as e:
        load_codelists(directory=tmp_path / "lists", catalogue=cat)
    msg = str(e.value)
    assert "'code'" in msg and str(f) in msg and "concept, term" in msg


def test_missing_tsv_header_column(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("id\tname\n22298006\tMI\n", encoding="utf-8")
    cat = _mini_catalogue(
        tmp_path,
        [
            {
                "codelist_id": "x",
                "path": "x.txt",
                "format": "tsv",
                "code_column": "snomed",
                "term_column": "name",
            }
        ],
    )
    with pytest.raises(CodelistError, match=r"has no column 'snomed'"):
        load_codelists(directory=tmp_path, catalogue=cat)


def test_catalogue_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("codelist_id,path\nx,x.csv\n", encoding="utf-8")
    with pytest.raises(CodelistError, match=r"missing column\(s\) format"):
        read_catalogue(path)


def test_deployment_folder_and_catalogue_via_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a deployment's own folder: same layout, its own file content
    own = tmp_path / "codelists"
    (own / "pcd-refsets").mkdir(parents=True)
    shutil.copy(
        VENDORED / "pcd-refsets" / "nhsd-primary-care-domain-refsets-hypres_cod.csv",
        own / "pcd-refsets",
    )
    (own / "mine.txt").write_text(
        "22298006\tMyocardial infarction\n22298006\tMI again\n\n195136004.0\tRheumatoid myocarditis\n"
        "22298007\tdamaged\n",
        encoding="utf-8",
    )
    specs = read_catalogue()
    cat = _mini_catalogue(
        tmp_path,
        [
            {**specs["pcd_hypres_cod"].__dict__},
            {
                "codelist_id": "local_mi",
                "path": "mine.txt",
                "format": "tsv_noheader",
                "code_column": "",
                "term_column": "",
                "version": "2026-01",
                "source": "local",
            },
        ],
    )
    monkeypatch.setenv("PHM_CODELIST_DIR", str(own))
    monkeypatch.setenv("PHM_CODELIST_CATALOGUE", str(cat))
    con = duckdb.connect()
    report = write_codelists(con)
    assert report.lists["local_mi"] == {
        "rows_read": 4,
        "codes_loaded": 2,
        "repaired": 1,
        "dropped": 1,
        "duplicate_rows": 1,
        "blank_rows": 1,
    }
    assert con.execute(
        "SELECT codelist_id, code, term, version FROM reference.codelists ORDER BY 1, 2"
    ).fetchall() == [
        ("local_mi", "195136004", "Rheumatoid myocarditis", "2026-01"),
        ("local_mi", "22298006", "Myocardial infarction", "2026-01"),
        ("pcd_hypres_cod", "162659009", "Hypertension resolved", "20250627"),
    ]
    assert con.execute(
        "SELECT line, raw_code, reason FROM reference.codelist_issues WHERE action='dropped'"
    ).fetchall() == [(5, "22298007", "check_digit")]
