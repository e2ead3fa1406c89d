"""Per-PCN exports (phm.exports.export_pcns): every PCN's files from one query per kind of
file, cut per PCN; xlsx cells typed once per column."""

import datetime as dt
import decimal

import duckdb
import polars as pl
import pytest

from phm import exports
from phm.exports import _xlsx_bytes, export_pcns
from phm.paths import warehouse_path
from phm.warehouse import current_extract_date


def _definitions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "cohort_id": ["c"],
            "title": ["A cohort"],
            "description": ["d"],
            "source": ["s"],
            "cohort_columns": [""],
        }
    )


def test_xlsx_cells_typed_per_column_are_the_cells_typed_per_value(monkeypatch):
    df = pl.DataFrame(
        {
            "i": pl.Series([1, None, -3], dtype=pl.Int64),
            "u": pl.Series([7, 8, None], dtype=pl.UInt32),
            "f": [0.5, None, -2.25],
            "b": [True, None, False],
            "d": [dt.date(2026, 11, 1), None, dt.date(1950, 1, 31)],
            "t": [dt.datetime(2026, 11, 1, 8, 30), None, dt.datetime(2000, 1, 1)],
            "s": ["x", None, "=1+1"],
            "m": pl.Series([decimal.Decimal("1.50"), None, decimal.Decimal("2")]),
            "l": [[1, 2], None, []],
        }
    )
    created = dt.datetime(2026, 11, 1)
    typed = _xlsx_bytes([("c", df)], _definitions(), created)
    # the same workbook with each value written by the type of the value itself
    monkeypatch.setattr(
        exports, "_cell_writer", lambda ws, dtype: lambda i, j, v: exports._write_value(ws, i, j, v)
    )
    per_value = _xlsx_bytes([("c", df)], _definitions(), created)
    assert typed == per_value
    # and a different value does change the bytes (the comparison can fail)
    other = _xlsx_bytes([("c", df.with_columns(pl.col("i") + 1))], _definitions(), created)
    assert other != per_value


@pytest.fixture(scope="module")
def exported(small_home, tmp_path_factory):
    _, home = small_home
    con = duckdb.connect(str(warehouse_path(home)), read_only=True)
    out = tmp_path_factory.mktemp("exports")
    extract_date = current_extract_date(con)
    written = export_pcns(con, out, extract_date)
    yield con, out, extract_date, written
    con.close()


def test_each_pcn_folder_holds_exactly_its_patients_in_order(exported):
    con, out, _, written = exported
    pcns = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT pcn_code FROM marts.patient_measures WHERE pcn_code IS NOT NULL "
            "ORDER BY 1"
        ).fetchall()
    ]
    assert sorted(written) == pcns and len(pcns) >= 2
    for pcn in pcns:
        register = pl.read_csv(out / pcn / "risk_register.csv", infer_schema=False)
        expected = con.execute(
            "SELECT i.nhs_number FROM marts.patient_measures pm "
            "JOIN marts.person_identity i USING (person_id) "
            "LEFT JOIN marts.risk_scores r USING (person_id) WHERE pm.pcn_code = ? "
            "ORDER BY r.risk_score DESC NULLS LAST, pm.ltc_count DESC, pm.efi_score DESC, "
            "i.nhs_number",
            [pcn],
        ).fetchall()
        assert register["nhs_number"].to_list() == [r[0] for r in expected]
        for (cohort_id,) in con.execute(
            "SELECT cohort_id FROM marts.cohort_definitions ORDER BY 1"
        ).fetchall():
            members = pl.read_csv(out / pcn / "cohorts" / f"{cohort_id}.csv", infer_schema=False)
            expected = con.execute(
                "SELECT i.nhs_number, m.reasons FROM marts.cohort_members m "
                "JOIN marts.patient_measures pm USING (person_id) "
                "JOIN marts.person_identity i USING (person_id) "
                "WHERE m.cohort_id = ? AND pm.pcn_code = ? ORDER BY m.rank",
                [cohort_id, pcn],
            ).fetchall()
            assert members["nhs_number"].to_list() == [r[0] for r in expected]
            assert written[pcn][f"cohorts/{cohort_id}.csv"] == len(expected)


def test_one_pcn_alone_gives_the_same_bytes_as_all_pcns(exported, tmp_path):
    con, out, extract_date, written = exported
    pcn = sorted(written)[-1]
    export_pcns(con, tmp_path, extract_date, pcn_codes=[pcn])
    files = sorted(p.relative_to(tmp_path) for p in (tmp_path / pcn).rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in (out / pcn).rglob("*") if p.is_file())
    for f in files:
        assert (tmp_path / f).read_bytes() == (out / f).read_bytes(), f
