"""Information governance and security: keys, file modes, model integrity, and no delivered
value in any error message, log line or Dagster event (docs/security.md)."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import duckdb
import numpy as np
import pandera.polars as pa
import polars as pl
import pytest
from factory import NHS, default_rows, make_delivery
from sklearn.linear_model import LogisticRegression

import phm.files
from phm.contract import TABLE_NAMES
from phm.delivery import DeliveryError, open_delivery, read_table
from phm.files import atomic_path, atomic_write_bytes
from phm.manifest import write_manifest
from phm.permissions import owner_only, private_dir
from phm.pseudonymise import MIN_KEY_BYTES, KeyMissing, UnknownMode, load_key, run_mode
from phm.validate import _run_pandera
from pipelines.runner import PipelineFailed, run_pipeline
from segmentation.risk.model import RiskModel
from segmentation.risk.persistence import (
    ModelIntegrityError,
    file_sha256,
    load_model,
    model_hash_path,
    save_model,
)

GOOD_KEY = "0123456789abcdef0123456789abcdef0123"
#: a value planted in delivered rows: it must never reach a message, a log or the event log
PLANTED = "ZEBRA9999999999"
KEY_VARS = ("PHM_PSEUDONYMISATION_KEY", "PHM_PSEUDONYMISATION_KEY_FILE", "PHM_MODE")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PHM_DEV_KEY_FILE", str(tmp_path / "devkeys" / "dev.key"))
    return monkeypatch


@pytest.fixture
def umask_zero():
    """The most permissive umask: a file created 0600 here was asked for 0600."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------------------
# keys and PHM_MODE
# --------------------------------------------------------------------------------------


def test_a_key_shorter_than_32_bytes_is_refused_from_the_environment(clean_env):
    clean_env.setenv("PHM_PSEUDONYMISATION_KEY", "x" * (MIN_KEY_BYTES - 1))
    with pytest.raises(KeyMissing, match="at least 32 bytes") as err:
        load_key()
    assert "x" * 8 not in str(err.value)  # the key is never quoted
    clean_env.setenv("PHM_PSEUDONYMISATION_KEY", "x" * MIN_KEY_BYTES)
    assert load_key() == b"x" * MIN_KEY_BYTES
    # bytes, not characters: 16 two-byte characters are 32 bytes
    clean_env.setenv("PHM_PSEUDONYMISATION_KEY", "é" * 16)
    assert len(load_key()) == 32
    clean_env.setenv("PHM_PSEUDONYMISATION_KEY", "é" * 15)
    with pytest.raises(KeyMissing):
        load_key()


def test_a_key_shorter_than_32_bytes_is_refused_from_a_file(clean_env, tmp_path):
    key_file = tmp_path / "short.key"
    key_file.write_text("a-secret-of-24-bytes-xyz\n")
    key_file.chmod(0o600)
    clean_env.setenv("PHM_PSEUDONYMISATION_KEY_FILE", str(key_file))
    with pytest.raises(KeyMissing, match=r"short\.key.*at least 32 bytes"):
        load_key()
    clean_env.setenv("PHM_MODE", "production")
    with pytest.raises(KeyMissing, match="at least 32 bytes"):
        load_key()


def test_a_short_development_key_file_is_refused(clean_env, tmp_path):
    dev = tmp_path / "devkeys" / "dev.key"
    dev.parent.mkdir()
    dev.write_text("too-short")
    with pytest.raises(KeyMissing, match="at least 32 bytes"):
        load_key()


@pytest.mark.parametrize("value", ["prod", "Production-ish", "dev", "1", "staging"])
def test_an_unknown_mode_is_an_error_not_development(clean_env, value):
    clean_env.setenv("PHM_MODE", value)
    with pytest.raises(UnknownMode, match="PHM_MODE"):
        run_mode()
    # even with a valid key: a typo in the mode must not pass silently
    clean_env.setenv("PHM_PSEUDONYMISATION_KEY", GOOD_KEY)
    with pytest.raises(UnknownMode):
        load_key()


def test_known_modes(clean_env):
    assert run_mode() == "development"
    clean_env.setenv("PHM_MODE", "")
    assert run_mode() == "development"
    clean_env.setenv("PHM_MODE", " Production ")
    assert run_mode() == "production"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_production_refuses_a_key_file_readable_by_others(clean_env, tmp_path, mode):
    key_file = tmp_path / "prod.key"
    key_file.write_text(GOOD_KEY + "\n")
    key_file.chmod(mode)
    clean_env.setenv("PHM_PSEUDONYMISATION_KEY_FILE", str(key_file))
    clean_env.setenv("PHM_MODE", "production")
    with pytest.raises(KeyMissing, match=f"mode {mode:04o}.*chmod 600") as err:
        load_key()
    assert GOOD_KEY not in str(err.value)
    key_file.chmod(0o600)
    assert load_key() == GOOD_KEY.encode()
    key_file.chmod(0o400)
    assert load_key() == GOOD_KEY.encode()


def test_development_key_is_created_0600_from_the_start(clean_env, tmp_path, umask_zero):
    created: list[tuple[int, int]] = []
    seen_before_rename: list[int] = []
    real_open, real_replace = os.open, os.replace

    def spy_open(path, flags, mode=0o777, *args, **kwargs):
        created.append((flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    def spy_replace(src, dst, *args, **kwargs):
        seen_before_rename.append(_mode(Path(src)))
        return real_replace(src, dst, *args, **kwargs)

    clean_env.setattr(phm.files.os, "open", spy_open)
    clean_env.setattr(phm.files.os, "replace", spy_replace)
    key = load_key()
    dev = tmp_path / "devkeys" / "dev.key"
    assert len(key) >= MIN_KEY_BYTES and dev.read_bytes().strip() == key
    assert _mode(dev) == 0o600
    assert _mode(dev.parent) == 0o700
    # the temporary file was created exclusively with mode 0600 (never wider, then chmod-ed)
    assert created and all(f & os.O_EXCL and f & os.O_CREAT for f, _ in created)
    assert [m for _, m in created] == [0o600]
    assert seen_before_rename == [0o600]
    assert sorted(p.name for p in dev.parent.iterdir()) == ["dev.key"]
    assert load_key() == key  # stable once generated


def test_atomic_temporary_has_its_final_mode_inside_the_block(tmp_path, umask_zero):
    with atomic_path(tmp_path / "ids.csv", mode=0o600) as tmp:
        assert tmp.exists() and _mode(tmp) == 0o600
        tmp.write_text("nhs_number\n9990000018\n")
        assert _mode(tmp) == 0o600
    assert _mode(tmp_path / "ids.csv") == 0o600
    # two writers never share a temporary name
    with atomic_path(tmp_path / "x", mode=0o600) as a, atomic_path(tmp_path / "x") as b:
        assert a != b


def test_temporary_file_holding_nhs_numbers_is_removed_when_the_write_fails(tmp_path):
    target = tmp_path / "U00001" / "cohorts.csv"
    target.mkdir(parents=True)  # a directory in the way: the final rename fails
    (target / "keep").write_text("")
    data = ("nhs_number\n" + "\n".join(NHS) + "\n").encode()
    with pytest.raises(OSError):
        atomic_write_bytes(target, data, mode=0o600)
    assert sorted(p.name for p in target.parent.iterdir()) == ["cohorts.csv"]
    # and a writer that fails half way
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "U00001" / "list.csv") as tmp:
        tmp.write_bytes(data[:20])
        raise RuntimeError("disk full")
    assert sorted(p.name for p in target.parent.iterdir()) == ["cohorts.csv"]
    leftovers = [
        p for p in tmp_path.rglob("*") if p.is_file() and NHS[0].encode() in p.read_bytes()
    ]
    assert leftovers == []


def test_owner_only_sets_and_restores_the_umask(tmp_path):
    before = os.umask(0o022)
    try:
        with owner_only():
            (tmp_path / "f").write_text("x")
            (tmp_path / "d").mkdir()
        assert _mode(tmp_path / "f") == 0o600 and _mode(tmp_path / "d") == 0o700
        assert os.umask(0o022) == 0o022  # restored
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        private_dir(shared)
        assert _mode(shared) == 0o700
    finally:
        os.umask(before)


# --------------------------------------------------------------------------------------
# a small run: owner-only home, and the planted value nowhere in Dagster's storage
# --------------------------------------------------------------------------------------

SMALL_RUN = (
    [f"raw/{t}" for t in TABLE_NAMES]
    + ["raw/_delivery"]
    + [f"{s}/{t}" for s in ("staging", "quarantine") for t in TABLE_NAMES]
    + ["reports/data_quality"]
)


def _planted_rows() -> dict[str, list[dict]]:
    rows = default_rows()
    rows["gp_patients"][0]["date_of_birth"] = PLANTED  # a date column
    rows["gp_events"][1]["numeric_value"] = PLANTED  # a number column
    return rows


def _files_containing(folder: Path, needle: str) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and needle.encode() in p.read_bytes()
    )


def test_a_run_leaves_an_owner_only_home_and_no_delivered_value_in_dagster(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", GOOD_KEY)
    # a two-row delivery with one planted bad row per table: half of it is quarantined, so
    # the plausibility gate (docs/operations.md) is lifted for this drill
    monkeypatch.setenv("PHM_MAX_QUARANTINE_SHARE", "1")
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    make_delivery(extracts, _planted_rows())
    home.mkdir(mode=0o755)
    home.chmod(0o755)  # an existing, world-readable home is tightened
    before = os.umask(0o022)
    try:
        with caplog.at_level("DEBUG"):
            summary = run_pipeline(extracts, home, selection=SMALL_RUN)
        assert os.umask(0o022) == 0o022  # the run restored the process umask
    finally:
        os.umask(before)
    assert "reports/data_quality" in summary.materialized
    # the bad values were quarantined: they are in the warehouse (data), and only there
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM quarantine.gp_patients").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM quarantine.gp_events").fetchone()[0] == 1
    finally:
        con.close()
    assert (home / "dagster").is_dir() and any((home / "exports").rglob("data_quality.md"))
    assert _files_containing(home / "dagster", PLANTED) == []
    assert _files_containing(home / "exports", PLANTED) == []
    assert PLANTED not in caplog.text
    wide = [
        f"{p.relative_to(home)} {_mode(p):04o}"
        for p in [home, *home.rglob("*")]
        if _mode(p) & 0o077 or (p.is_dir() and _mode(p) != 0o700)
    ]
    assert wide == []


def _unclosed_quote_delivery(root: Path) -> Path:
    folder = make_delivery(root)
    csv = folder / "gp_patients.csv"
    lines = csv.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1].replace(NHS[0], f'"{PLANTED}', 1)  # an unclosed quoted field
    csv.write_text("".join(lines), encoding="utf-8")
    files = {t: next(folder.glob(f"{t}.*")) for t in TABLE_NAMES}
    write_manifest(folder, folder.name, files)
    return folder


def test_an_unreadable_file_is_reported_without_its_content(tmp_path):
    folder = _unclosed_quote_delivery(tmp_path / "extracts")
    with pytest.raises(DeliveryError) as err:
        read_table(open_delivery(folder.parent).entries["gp_patients"])
    # the file and the line are named (phm.delivery counts the rows before parsing)
    assert "gp_patients.csv" in str(err.value) and "unbalanced quote" in str(err.value)
    assert "line 2" in str(err.value)
    assert PLANTED not in str(err.value)
    # no chained reader exception carries the content into a traceback either
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_a_failed_run_quotes_no_delivered_value(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PHM_PSEUDONYMISATION_KEY", GOOD_KEY)
    extracts, home = tmp_path / "extracts", tmp_path / "home"
    _unclosed_quote_delivery(extracts)
    with caplog.at_level("DEBUG"), pytest.raises((PipelineFailed, DeliveryError)) as err:
        run_pipeline(extracts, home, selection=SMALL_RUN)
    assert "gp_patients.csv" in str(err.value)
    assert PLANTED not in str(err.value)
    assert PLANTED not in caplog.text
    assert _files_containing(home / "dagster", PLANTED) == []


def test_a_rule_that_cannot_run_is_reported_without_values():
    def explode(s: pl.Series) -> bool:
        raise ValueError(f"cannot handle {s.to_list()}")

    schema = pa.DataFrameSchema({"nhs_number": pa.Column(str, pa.Check(explode))}, name="t")
    frame = pl.DataFrame({"nhs_number": [PLANTED, "9990000018"]})
    with pytest.raises(RuntimeError, match="validation failed outside the row rules") as err:
        _run_pandera(schema, frame)
    assert "nhs_number" in str(err.value)
    assert PLANTED not in str(err.value) and "9990000018" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


# --------------------------------------------------------------------------------------
# model integrity
# --------------------------------------------------------------------------------------


def _tiny_model() -> RiskModel:
    X = np.array([[0.0], [1.0], [0.0], [1.0]])
    est = LogisticRegression().fit(X, [0, 1, 0, 1])
    import sklearn

    return RiskModel(
        name="logistic",
        estimator=est,
        feature_names=["age"],
        feature_set_hash="f" * 64,
        candidate_features=["age"],
        excluded_features={},
        model_version="test-1",
        sklearn_version=sklearn.__version__,
        training_data_hash="d" * 64,
        extract_date=dt.date(2026, 11, 1),
        training_index_date=dt.date(2024, 11, 1),
        validation_index_date=dt.date(2025, 11, 1),
        random_state=0,
        calibration_method="sigmoid",
        reference_values={"age": 0.0},
    )


def test_saved_model_records_its_hash_and_loads(tmp_path, umask_zero):
    con = duckdb.connect()
    path = save_model(_tiny_model(), tmp_path / "m" / "model.joblib", con=con)
    digest = file_sha256(path)
    assert model_hash_path(path).read_text().split()[0] == digest
    assert _mode(path) == 0o600 and _mode(model_hash_path(path)) == 0o600
    assert con.execute("SELECT sha256 FROM marts.model_registry").fetchall() == [(digest,)]
    assert load_model(path, con=con).model_version == "test-1"
    assert load_model(path, expected_sha256=digest).model_version == "test-1"


def test_a_tampered_model_is_refused_before_it_is_unpickled(tmp_path, monkeypatch):
    con = duckdb.connect()
    path = save_model(_tiny_model(), tmp_path / "model.joblib", con=con)
    recorded = file_sha256(path)
    path.write_bytes(path.read_bytes() + b"\x00")  # any change to the bytes
    unpickled = []
    monkeypatch.setattr(
        "segmentation.risk.persistence.joblib.load", lambda *a, **k: unpickled.append(a)
    )
    with pytest.raises(ModelIntegrityError, match=r"model\.joblib.*SHA-256") as err:
        load_model(path)
    assert recorded[:12] in str(err.value) and file_sha256(path)[:12] in str(err.value)
    assert "refusing" in str(err.value)
    assert unpickled == []


def test_a_model_whose_sidecar_was_also_replaced_is_refused_by_the_registry(tmp_path):
    con = duckdb.connect()
    good = save_model(_tiny_model(), tmp_path / "a" / "model.joblib", con=con)
    other = _tiny_model()
    other.model_version = "attacker"
    evil = save_model(other, tmp_path / "b" / "model.joblib")  # no registry record
    good.write_bytes(evil.read_bytes())
    model_hash_path(good).write_bytes(model_hash_path(evil).read_bytes())
    assert load_model(good).model_version == "attacker"  # the sidecar alone is fooled
    with pytest.raises(ModelIntegrityError, match=r"marts\.model_registry"):
        load_model(good, con=con)


def test_a_model_without_a_recorded_hash_is_refused(tmp_path):
    path = save_model(_tiny_model(), tmp_path / "model.joblib")
    model_hash_path(path).unlink()
    with pytest.raises(ModelIntegrityError, match="no SHA-256 recorded"):
        load_model(path)
    save_model(_tiny_model(), path)
    with pytest.raises(ModelIntegrityError, match=r"no SHA-256 recorded.*model_registry"):
        load_model(path, con=duckdb.connect())
