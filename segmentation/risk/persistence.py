"""Saving and loading a model, and checking its features against today's definitions."""

from __future__ import annotations

from pathlib import Path

import joblib
import sklearn

from phm.files import atomic_path
from segmentation.features import (
    feature_names,
    feature_set_hash,
)
from segmentation.risk.model import FeatureSetMismatch, RiskModel

MODEL_FILE_FORMAT = "phm-emergency-risk-model"
MODEL_FILE_VERSION = 1


def save_model(model: RiskModel, path: Path | str) -> Path:
    """Write the model (joblib) with its version, hashes, scikit-learn version and features."""
    path = Path(path)
    with atomic_path(path) as tmp:
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
    return path


def load_model(path: Path | str, *, allow_sklearn_mismatch: bool = False) -> RiskModel:
    """Read a model written by :func:`save_model`.

    Refuses a file of another format, and (unless ``allow_sklearn_mismatch``) a model pickled
    under a different scikit-learn version, which scikit-learn does not support.
    """
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
