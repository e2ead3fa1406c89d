"""phm.files: atomic writes leave either the old file or the whole new one."""

from __future__ import annotations

import joblib
import pytest

from phm.files import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n", mode=0o600)
    assert target.read_text(encoding="utf-8") == "second\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.joblib"
    joblib.dump({"v": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        joblib.dump({"v": 2}, tmp)
        raise RuntimeError("interrupted")
    assert joblib.load(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.joblib"]
