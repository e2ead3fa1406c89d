"""The deployed logistic model's risk, bit-for-bit as ``predict_proba``, with less work per call.

``RiskModel.predict`` on the calibrated logistic ensemble (``CalibratedClassifierCV``, five
folds, each ``Pipeline([ColumnTransformer, LogisticRegression])`` with a sigmoid or isotonic
calibrator) selects the same columns, takes the same ``log1p`` and copies them once per fold
and transformer, then stacks the pieces. :func:`lean_predictor` returns a function computing
the same numbers with the same floating-point operations on the same arrays, but selects
each column set and takes each ``log1p`` once per call (shared by the folds), and writes the
standardised columns straight into one C-ordered matrix per fold (``(x - mean) / scale``, as
``StandardScaler.transform`` does in place), which goes to the fold's own
``LogisticRegression.decision_function`` (the same matrix shape and layout as the stacked
one) and calibrator. The folds' probabilities are summed from zero in fold order and divided
by the number of folds, as ``CalibratedClassifierCV.predict_proba`` does.

Any other estimator (or transformer) is not recognised and gets None: the caller then uses
``RiskModel.predict``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from segmentation.risk.model import FeatureSetMismatch, RiskModel

#: a part of a fold's design matrix: (kind, transformer, input columns, output width);
#: kind "scale" (StandardScaler), "log_scale" (log1p then StandardScaler) or "call" (any
#: other fitted transformer, called as it is)
_Part = tuple[str, object, tuple[int, ...], int]


def _scaler(t) -> bool:
    return type(t) is StandardScaler and t.copy is not False


def _log1p(t) -> bool:
    return (
        type(t) is FunctionTransformer
        and t.func is np.log1p
        and not t.validate
        and not t.kw_args
        and t.feature_names_out is None
    )


def _part(trans, cols) -> _Part | None:
    cols = tuple(int(c) for c in np.asarray(cols).reshape(-1))
    if _scaler(trans):
        return "scale", trans, cols, len(cols)
    if (
        type(trans) is Pipeline
        and len(trans.steps) == 2
        and _log1p(trans.steps[0][1])
        and _scaler(trans.steps[1][1])
    ):
        return "log_scale", trans.steps[1][1], cols, len(cols)
    return None


def lean_predictor(model: RiskModel) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function equal to ``model.predict`` (bit for bit) for the calibrated logistic
    ensemble, else None."""
    est = model.estimator
    if type(est) is not CalibratedClassifierCV or len(est.classes_) != 2:
        return None
    folds = []
    for cc in est.calibrated_classifiers_:
        pipe = cc.estimator
        if (
            cc.method not in ("sigmoid", "isotonic")
            or len(cc.calibrators) != 1
            or type(pipe) is not Pipeline
            or len(pipe.steps) != 2
            or type(pipe[0]) is not ColumnTransformer
            or type(pipe[-1]) is not LogisticRegression
            or list(pipe[-1].classes_) != list(est.classes_)
            or pipe[0].sparse_output_
        ):
            return None
        ct = pipe[0]
        parts: list[_Part] = []
        for _, trans, cols in ct.transformers_:
            if isinstance(trans, str):
                if trans == "drop":
                    continue
                return None  # passthrough remainder: not used by the model
            part = _part(trans, cols)
            if part is None:
                probe = np.zeros((1, ct.n_features_in_))
                width = trans.transform(probe[:, list(cols)]).shape[1]
                part = ("call", trans, tuple(int(c) for c in cols), width)
            parts.append(part)
        folds.append((parts, pipe[-1], cc.calibrators[0]))
    n_features = len(model.feature_names)

    def predict(X: np.ndarray) -> np.ndarray:
        if X.shape[1] != n_features:
            raise FeatureSetMismatch(
                f"model {model.model_version} expects {n_features} features, got {X.shape[1]}"
            )
        selected: dict[tuple[int, ...], np.ndarray] = {}
        logged: dict[tuple[int, ...], np.ndarray] = {}
        mean = np.zeros(X.shape[0])
        for parts, lr, calibrator in folds:
            Z = np.empty((X.shape[0], sum(p[3] for p in parts)))
            at = 0
            for kind, trans, cols, width in parts:
                if cols not in selected:
                    selected[cols] = X[:, list(cols)]
                A = selected[cols]
                out = Z[:, at : at + width]
                if kind == "call":
                    out[...] = trans.transform(A)
                else:
                    if kind == "log_scale":
                        if cols not in logged:
                            logged[cols] = np.log1p(A)
                        A = logged[cols]
                    # StandardScaler.transform: x -= mean_, then x /= scale_ (in a copy)
                    if trans.with_mean:
                        np.subtract(A, trans.mean_, out=out)
                    else:
                        out[...] = A
                    if trans.with_std:
                        np.divide(out, trans.scale_, out=out)
                at += width
            mean += calibrator.predict(lr.decision_function(Z))
        mean /= len(folds)
        return mean

    return predict
