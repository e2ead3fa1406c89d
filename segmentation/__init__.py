"""Risk stratification and population segmentation (pure functions; no Dagster).

* :mod:`segmentation.features` - model features as of an index date, built by the measures code
  on an as-of snapshot of the record (:func:`build_features`);
* :mod:`segmentation.risk` - 12-month emergency admission model: :func:`train_and_evaluate`,
  :func:`score` (risk score, Kaiser-style tier, top contributing factors in words),
  :func:`save_model` / :func:`load_model`;
* :mod:`segmentation.bridges` - Bridges to Health segments from
  ``data/definitions/bridges_to_health.yaml`` (:func:`assign_segments`);
* :mod:`segmentation.clusters` - needs-based k-means clusters (:func:`build_clusters`);
* :mod:`segmentation.report` - :func:`model_card` and :func:`write_pcn_outputs`.

See docs/risk-and-segments.md.
"""

from segmentation.bridges import assign_segments, load_bridges_definition, segment_names
from segmentation.clusters import build_clusters
from segmentation.features import build_features, feature_coverage, feature_names
from segmentation.report import model_card, write_pcn_outputs
from segmentation.risk import (
    FeatureNotCovered,
    FeatureSetMismatch,
    RiskModel,
    RiskReport,
    assign_tiers,
    load_model,
    save_model,
    score,
    train_and_evaluate,
    write_scores,
)

__all__ = [
    "FeatureNotCovered",
    "FeatureSetMismatch",
    "RiskModel",
    "RiskReport",
    "assign_segments",
    "assign_tiers",
    "build_clusters",
    "build_features",
    "feature_coverage",
    "feature_names",
    "load_bridges_definition",
    "load_model",
    "model_card",
    "save_model",
    "score",
    "segment_names",
    "train_and_evaluate",
    "write_pcn_outputs",
    "write_scores",
]
