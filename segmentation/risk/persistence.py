"""Saving and loading a model, and checking its features against today's definitions.

A saved model is a joblib file, i.e. a pickle: loading it can run any code it contains. So
:func:`save_model` records the file's SHA-256 in a sidecar ``<model>.sha256`` and, given
the warehouse connection, in ``marts.model_registry``; :func:`load_model` hashes the file and
refuses it (before unpickling anything) unless the hash matches every record it is given.

The limit: the registry lives in the warehouse, in the same owner-only home as the model
(see docs/security.md). It stops a model swapped by someone who can write the models folder
but not the warehouse, and a corrupted or stale file; it cannot stop someone who can write
both, who can run code as the pipeline's user anyway.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import joblib
import sklearn

from phm.files import atomic_path, atomic_write_text
from segmentation.features import (
    feature_names,
    feature_set_hash,
)
from segmentation.risk.model import FeatureSetMismatch, RiskModel

MODEL_FILE_FORMAT = "phm-emergency-risk-model"
MODEL_FILE_VERSION = 1

#: the warehouse table recording each saved model file's SHA-256
MODEL_REGISTRY = "marts.model_registry"

_MODE = 0o600


class ModelIntegrityError(ValueError):
    """A model file's SHA-256 is not the one recorded when it was saved (or none was)."""


def model_hash_path(path: Path | str) -> Path:
    """The sidecar holding the SHA-256 of a model file: ``<model>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _registry_key(path: Path | str) -> str:
    """``<extract_date>/<file>``: stable when a run's models folder is promoted into the home
    (pipelines.runner) or the home is moved."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def save_model(
    model: RiskModel, path: Path | str, *, con: duckdb.DuckDBPyConnection | None = None
) -> Path:
    """Write the model (joblib) with its version, hashes, scikit-learn version and features,
    owner-only (0600), and record its SHA-256 in ``<model>.sha256`` and, with ``con``, in
    ``marts.model_registry``."""
    path = Path(path)
    with atomic_path(path, mode=_MODE) as tmp:
        joblib.dump(
            {
                "format": MODEL_FILE_FORMAT,
                "format_version": MODEL_FILE_VERSION,
                "summary": model.summary(),
                "feature_names": model.feature_names,
                "model": model,
            },
            tmp,
        )
    digest = file_sha256(path)
    atomic_write_text(model_hash_path(path), f"{digest}  {path.name}\n", mode=_MODE)
    if con is not None:
        con.execute("CREATE SCHEMA IF NOT EXISTS marts")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {MODEL_REGISTRY} (model_file VARCHAR PRIMARY KEY, "
            "sha256 VARCHAR NOT NULL, model_version VARCHAR, feature_set_hash VARCHAR)"
        )
        con.execute(
            f"INSERT OR REPLACE INTO {MODEL_REGISTRY} VALUES (?, ?, ?, ?)",
            [_registry_key(path), digest, str(model.model_version), model.feature_set_hash],
        )
    return path


def _recorded_hashes(
    path: Path, con: duckdb.DuckDBPyConnection | None, expected_sha256: str | None
) -> list[tuple[str, str | None]]:
    """(where, hash) of every record the file must match; hash None = no record there."""
    sidecar = model_hash_path(path)
    side = sidecar.read_text(encoding="utf-8").split()[0] if sidecar.is_file() else None
    records = [(str(sidecar), side or None)]
    if con is not None:
        row = None
        if con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = 'marts' AND table_name = 'model_registry'"
        ).fetchone()[0]:
            row = con.execute(
                f"SELECT sha256 FROM {MODEL_REGISTRY} WHERE model_file = ?", [_registry_key(path)]
            ).fetchone()
        records.append((MODEL_REGISTRY, row[0] if row else None))
    if expected_sha256 is not None:
        records.append(("the expected hash given", expected_sha256))
    return records


def verify_model_file(
    path: Path | str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    expected_sha256: str | None = None,
) -> str:
    """The file's SHA-256 if it matches the sidecar and (when given) the registry in ``con``
    and ``expected_sha256``; raises :class:`ModelIntegrityError` otherwise. Reads bytes only:
    nothing is unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no saved model; run the risk model step first")
    actual = file_sha256(path)
    for where, recorded in _recorded_hashes(path, con, expected_sha256):
        if recorded is None:
            raise ModelIntegrityError(
                f"{path}: no SHA-256 recorded for this model in {where}; refusing to load it "
                "(a joblib file can run code when loaded). Retrain the model."
            )
        if recorded.lower() != actual:
            raise ModelIntegrityError(
                f"{path}: SHA-256 {actual[:12]}... differs from the {recorded[:12]}... recorded "
                f"in {where} when it was saved; refusing to load it (a joblib file can run "
                "code when loaded). Retrain the model or restore the saved file."
            )
    return actual


def load_model(
    path: Path | str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    expected_sha256: str | None = None,
    allow_sklearn_mismatch: bool = False,
) -> RiskModel:
    """Read a model written by :func:`save_model`, after :func:`verify_model_file` (the
    sidecar hash, and the ``marts.model_registry`` record when ``con`` is given).

    Refuses a file whose hash differs or was not recorded, a file of another format, and
    (unless ``allow_sklearn_mismatch``) a model pickled under a different scikit-learn
    version, which scikit-learn does not support.
    """
    verify_model_file(path, con=con, expected_sha256=expected_sha256)
    blob = joblib.load(Path(path))
    if not isinstance(blob, dict) or blob.get("format") != MODEL_FILE_FORMAT:
        raise ValueError(f"{path}: not a {MODEL_FILE_FORMAT} file")
    model = blob["model"]
    if model.sklearn_version != sklearn.__version__ and not allow_sklearn_mismatch:
        raise ValueError(
            f"{path}: model {model.model_version} was saved with scikit-learn "
            f"{model.sklearn_version}, this is {sklearn.__version__}; retrain it"
        )
    return model


def check_model_features(model: RiskModel) -> None:
    """Raise :class:`FeatureSetMismatch` unless the model's features are today's features."""
    current = feature_set_hash()
    names = feature_names()
    if model.feature_set_hash != current:
        added = sorted(set(names) - set(model.candidate_features))
        removed = sorted(set(model.candidate_features) - set(names))
        detail = []
        if added:
            detail.append("added: " + ", ".join(added))
        if removed:
            detail.append("removed: " + ", ".join(removed))
        if not detail:
            detail.append("same names, changed definitions (source, look-back or meaning)")
        raise FeatureSetMismatch(
            f"model {model.model_version} was trained on feature set {model.feature_set_hash[:12]}"
            f" but the current feature definitions are {current[:12]} ({'; '.join(detail)}); "
            "retrain the model before scoring"
        )
    unknown = [n for n in model.feature_names if n not in names]
    if unknown:
        raise FeatureSetMismatch(
            f"model {model.model_version} uses unknown feature(s): {', '.join(unknown)}"
        )
