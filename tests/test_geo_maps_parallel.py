"""geo.maps in worker processes: the same bytes as in one process, one PCN's failure isolated."""

from __future__ import annotations

import os

import pytest
from geo_demo import DEMO_PCNS

from geo.maps import map_workers, write_pcn_maps

CODES = [p[0] for p in DEMO_PCNS]


@pytest.fixture(scope="module")
def warehouse(demo_need_warehouse):
    return demo_need_warehouse


def _files(root) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def one_process(warehouse, tmp_path_factory):
    out = tmp_path_factory.mktemp("w1")
    written = write_pcn_maps(warehouse, out, workers=1)
    return out, written


def test_workers_write_the_same_bytes_as_one_process(warehouse, one_process, tmp_path):
    out1, written1 = one_process
    written2 = write_pcn_maps(warehouse, tmp_path, workers=2)
    assert sorted(written1) == sorted(written2) == CODES
    for code in CODES:
        assert [p.relative_to(out1) for p in written1[code]] == [
            p.relative_to(tmp_path) for p in written2[code]
        ]
    one, two = _files(out1), _files(tmp_path)
    # every PCN has its PNGs, gap table and interactive map
    for code in CODES:
        names = {k.split("/")[-1] for k in one if k.startswith(f"{code}/maps/")}
        assert {"need_map.html", "asset_gaps.csv", "assets_over_need.png"} <= names
        assert sum(n.endswith(".png") for n in names) >= 3
    assert one.keys() == two.keys()
    different = [k for k in one if one[k] != two[k]]
    assert different == []


def test_a_failing_pcn_in_a_worker_leaves_the_others(warehouse, one_process, tmp_path):
    out1, _ = one_process
    # U99002's maps folder cannot be created (a file is in its place): only that PCN fails
    (tmp_path / "U99002").mkdir()
    (tmp_path / "U99002" / "maps").write_text("not a folder")
    failures: dict[str, str] = {}
    written = write_pcn_maps(warehouse, tmp_path, workers=2, failures=failures)
    assert sorted(failures) == ["U99002"]
    assert sorted(written) == ["U99001", "U99003"]
    one = _files(out1)
    for code in ("U99001", "U99003"):
        mine = {k: v for k, v in _files(tmp_path).items() if k.startswith(f"{code}/")}
        assert mine == {k: v for k, v in one.items() if k.startswith(f"{code}/")}
    # without a failures dict the failure is raised, from the worker
    with pytest.raises(OSError):
        write_pcn_maps(warehouse, tmp_path, workers=2)


def test_map_workers_setting(monkeypatch):
    monkeypatch.delenv("PHM_MAP_WORKERS", raising=False)
    assert map_workers() == max(1, min(os.cpu_count() or 1, 4))
    monkeypatch.setenv("PHM_MAP_WORKERS", "3")
    assert map_workers() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("PHM_MAP_WORKERS", bad)
        with pytest.raises(ValueError, match="PHM_MAP_WORKERS"):
            map_workers()
