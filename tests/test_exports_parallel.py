"""Per-PCN files made in worker processes (phm.workers): the same bytes as in one process
(cohort workbooks, population pyramids, impact reports), in the callers' order, largest jobs
started first, the first failure raised."""

from __future__ import annotations

import duckdb
import pytest

from phm.exports import export_pcns
from phm.impact.pipeline import write_impact_exports
from phm.paths import warehouse_path
from phm.warehouse import current_extract_date
from phm.workers import export_workers, largest_first, ordered_map, ordered_results
from segmentation.report import write_pcn_outputs


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_ordered_map_gives_results_in_job_order_with_any_number_of_workers():
    jobs = [(2, 3), (3, 2), (2, 10), (5, 1), (7, 2)]
    expected = [8, 9, 1024, 5, 49]
    assert ordered_map(pow, jobs, workers=1) == expected
    # started largest first, handed back in job order
    assert ordered_map(pow, jobs, workers=2, sizes=[1, 5, 3, 5, 0]) == expected


def test_largest_first_orders_by_size_then_job_order():
    assert largest_first([1, 5, 3, 5, 0]) == [1, 3, 2, 0, 4]
    assert largest_first([]) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_job_raises_when_its_result_is_taken(workers):
    jobs = [(7, 2), (1, 0), (4, 2)]
    with ordered_results(divmod, jobs, workers=workers) as results:
        assert next(results) == (3, 1)
        with pytest.raises(ZeroDivisionError):
            next(results)
    with pytest.raises(ZeroDivisionError):
        ordered_map(divmod, jobs, workers=workers)


def test_export_workers_reads_the_setting(monkeypatch):
    monkeypatch.delenv("PHM_WORKERS", raising=False)
    assert export_workers(1) == 1  # one job: in this process
    assert 1 <= export_workers(28) <= 4
    assert export_workers(28, workers=3) == 3
    assert export_workers(2, workers=3) == 2  # never more workers than jobs
    monkeypatch.setenv("PHM_WORKERS", "2")
    assert export_workers(28) == 2
    for bad in ("0", "two"):
        monkeypatch.setenv("PHM_WORKERS", bad)
        with pytest.raises(ValueError, match="PHM_WORKERS"):
            export_workers(28)
    with pytest.raises(ValueError, match="at least 1"):
        export_workers(28, workers=0)


@pytest.fixture(scope="module")
def warehouse(small_home):
    _, home = small_home
    con = duckdb.connect(str(warehouse_path(home)), read_only=True)
    yield con, current_extract_date(con)
    con.close()


def _write_all(con, extract_date, out, workers: str, monkeypatch) -> None:
    monkeypatch.setenv("PHM_WORKERS", workers)
    # in the nightly order: the impact files are added to the exports' manifest.json
    export_pcns(con, out, extract_date)
    write_impact_exports(con, out, extract_date)
    write_pcn_outputs(con, out)


def test_workers_write_the_same_bytes_as_one_process(warehouse, tmp_path, monkeypatch):
    con, extract_date = warehouse
    one, two = tmp_path / "one", tmp_path / "two"
    _write_all(con, extract_date, one, "1", monkeypatch)
    _write_all(con, extract_date, two, "2", monkeypatch)
    files1, files2 = _files(one), _files(two)
    pcns = {name.split("/")[0] for name in files1}
    assert len(pcns) >= 2
    for pcn in pcns:  # every kind of file of every PCN is there
        for name in ("cohorts.xlsx", "impact_report.html", "population_pyramid.png"):
            assert f"{pcn}/{name}" in files1
    assert sorted(files1) == sorted(files2)
    for name, data in files1.items():
        assert files2[name] == data, name
