"""Emergency admission risk in the next 12 months: training, evaluation, scoring, tiers, factors.

Design (temporal hold-out, no patient-time leakage):

* **training**: features as of ``extract_date - 730`` days (:func:`segmentation.features.
  build_features`), outcome = at least one emergency admission (``admission_method`` 21-25, 2A-2D or 28, not a 2B transfer continuing a stay: :mod:`phm.hospital`)
  with ``admission_date`` in the 365 days *after* that index date (index + 1 .. index + 365);
* **validation**: features as of ``extract_date - 365``, outcome in the 365 days ending on the
  extract date (index + 1 .. extract date);
* **scoring**: features as of the extract date, through the same function.

Two candidates, each calibrated with ``CalibratedClassifierCV`` (5-fold, stratified, seeded)
on the training period only: a regularised (L2) logistic regression on standardised features
(counts log-transformed, age as a cubic spline) and a ``HistGradientBoostingClassifier``. The
deployed model is the candidate with the lower **Brier score on the validation period**
(a proper score that rewards both discrimination and calibration); the choice and both scores
are recorded in the report. An age-only logistic model is fitted as a floor, and, given the
generator's truth, the true probabilities on the validation cohort as the ceiling.

Everything is deterministic for a given ``random_state``.

Modules: :mod:`~segmentation.risk.model` (cohorts, outcomes, the candidate estimators,
:class:`RiskModel`), :mod:`~segmentation.risk.evaluation` (metrics, calibration, ceilings,
:func:`train_and_evaluate`), :mod:`~segmentation.risk.persistence` (save, load, feature
checks), :mod:`~segmentation.risk.factors` (contributing factors; their words come from
:func:`segmentation.features.factor_text`) and :mod:`~segmentation.risk.scoring` (scores,
tiers, ``marts.risk_scores``).
"""

from __future__ import annotations

from segmentation.risk.evaluation import (
    RiskReport,
    calibration_by_decile,
    metrics,
    observable_ceiling,
    train_and_evaluate,
)
from segmentation.risk.factors import (
    FACTOR_MIN_DELTA,
    NO_FACTOR_TEXT,
    contributions,
    risk_factor_text,
)
from segmentation.risk.model import (
    CANDIDATES,
    HORIZON_DAYS,
    OUTCOME,
    SELECTION_CRITERION,
    TRAINING_OFFSET_DAYS,
    VALIDATION_OFFSET_DAYS,
    FeatureNotCovered,
    FeatureSetMismatch,
    RiskModel,
    labelled_cohort,
    outcomes,
    to_matrix,
)
from segmentation.risk.persistence import (
    MODEL_FILE_FORMAT,
    MODEL_FILE_VERSION,
    check_model_features,
    load_model,
    save_model,
)
from segmentation.risk.scoring import (
    TIER_DESCRIPTIONS,
    TIERS,
    assign_tiers,
    score,
    write_scores,
)

__all__ = [
    "CANDIDATES",
    "FACTOR_MIN_DELTA",
    "HORIZON_DAYS",
    "MODEL_FILE_FORMAT",
    "MODEL_FILE_VERSION",
    "NO_FACTOR_TEXT",
    "OUTCOME",
    "SELECTION_CRITERION",
    "TIERS",
    "TIER_DESCRIPTIONS",
    "TRAINING_OFFSET_DAYS",
    "VALIDATION_OFFSET_DAYS",
    "FeatureNotCovered",
    "FeatureSetMismatch",
    "RiskModel",
    "RiskReport",
    "assign_tiers",
    "calibration_by_decile",
    "check_model_features",
    "contributions",
    "labelled_cohort",
    "load_model",
    "metrics",
    "observable_ceiling",
    "outcomes",
    "risk_factor_text",
    "save_model",
    "score",
    "to_matrix",
    "train_and_evaluate",
    "write_scores",
]
