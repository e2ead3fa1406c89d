"""When to retrain the risk model, and which model scored which delivery.

Training (three as-of snapshots of the record, two calibrated candidates and the ceiling
diagnostics) is most of the risk step's time; scoring is a fraction of it. So the nightly run
retrains only when :func:`should_retrain` says so, and otherwise scores with the last model
(loaded only after its SHA-256 matches ``marts.model_registry``, as always):

* there is no usable last model (none recorded, or its file is gone);
* the feature definitions changed (``feature_set_hash``);
* the features the delivery's history can supply at the training and validation index dates
  differ from the model's (the history window changed materially: a source table's history
  got shorter or longer than a look-back);
* the delivery is older than the model's own (its training outcomes would lie in the future);
* the model is older than ``PHM_MODEL_MAX_AGE_DAYS`` (default 28) days of deliveries
  (extract dates, not wall-clock time, so a rerun of the same deliveries decides the same).

``marts.model_scoring_log`` records, per delivery, the model chosen (file, SHA-256, version,
the delivery it was trained on), whether it was retrained and why, and the rows scored.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from phm.warehouse import table_exists

SCORING_LOG = "marts.model_scoring_log"
DEFAULT_MAX_AGE_DAYS = 28


def model_max_age_days() -> int:
    """``PHM_MODEL_MAX_AGE_DAYS`` (whole days >= 0; 0 = retrain on every delivery)."""
    raw = os.environ.get("PHM_MODEL_MAX_AGE_DAYS", "").strip()
    if not raw:
        return DEFAULT_MAX_AGE_DAYS
    if not raw.isdigit():
        raise ValueError(f"PHM_MODEL_MAX_AGE_DAYS must be a whole number of days, not {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class LastModel:
    """What the scoring log knows of the model used for the latest earlier delivery."""

    model_file: str
    sha256: str
    model_version: str
    trained_on: dt.date
    feature_set_hash: str
    feature_names: tuple[str, ...]


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def should_retrain(
    last: LastModel | None,
    *,
    extract_date: dt.date,
    feature_set_hash: str,
    covered_features: list[str] | tuple[str, ...],
    max_age_days: int,
) -> RetrainDecision:
    """Whether to train a new model for the delivery of ``extract_date`` (pure).

    ``covered_features``: the features the delivery's history supplies at this delivery's
    training and validation index dates (what a model trained now would use).
    """
    if last is None:
        return RetrainDecision(True, "no earlier model recorded")
    if not Path(last.model_file).is_file():
        return RetrainDecision(True, "the last model's file is missing")
    if last.feature_set_hash != feature_set_hash:
        return RetrainDecision(True, "the feature definitions changed")
    if tuple(covered_features) != tuple(last.feature_names):
        added = sorted(set(covered_features) - set(last.feature_names))
        lost = sorted(set(last.feature_names) - set(covered_features))
        detail = (
            "; ".join(
                x
                for x in (
                    f"now covered: {', '.join(added)}" if added else "",
                    f"no longer covered: {', '.join(lost)}" if lost else "",
                )
                if x
            )
            or "same features, different order"
        )
        return RetrainDecision(True, f"the delivery's history window changed ({detail})")
    if extract_date < last.trained_on:
        return RetrainDecision(True, "the delivery is older than the last model's")
    age = (extract_date - last.trained_on).days
    if age > max_age_days:
        return RetrainDecision(True, f"the last model is {age} days old (more than {max_age_days})")
    return RetrainDecision(False, f"the last model is {age} days old and still applies")


def _ensure_log(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS marts")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {SCORING_LOG} (
            extract_date DATE PRIMARY KEY,
            model_file VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            model_version VARCHAR NOT NULL,
            trained_on DATE NOT NULL,
            feature_set_hash VARCHAR NOT NULL,
            feature_names VARCHAR[] NOT NULL,
            retrained BOOLEAN NOT NULL,
            reason VARCHAR NOT NULL,
            scored_rows BIGINT
        )"""
    )


def last_model(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> LastModel | None:
    """The model recorded for the latest delivery up to ``extract_date`` (a rerun of the same
    delivery reuses its own choice), or None."""
    if not table_exists(con, SCORING_LOG):
        return None
    row = con.execute(
        f"""SELECT model_file, sha256, model_version, trained_on, feature_set_hash,
                   feature_names
            FROM {SCORING_LOG} WHERE extract_date <= ? ORDER BY extract_date DESC LIMIT 1""",
        [extract_date],
    ).fetchone()
    if row is None:
        return None
    return LastModel(row[0], row[1], row[2], row[3], row[4], tuple(row[5]))


def record_model_choice(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    model,
    model_file: Path | str,
    sha256: str,
    decision: RetrainDecision,
) -> None:
    """Record the model chosen to score the delivery of ``extract_date``."""
    _ensure_log(con)
    con.execute(
        f"INSERT OR REPLACE INTO {SCORING_LOG} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        [
            extract_date,
            str(Path(model_file).resolve()),
            sha256,
            str(model.model_version),
            model.extract_date,
            model.feature_set_hash,
            list(model.feature_names),
            decision.retrain,
            decision.reason,
        ],
    )


def model_for_delivery(
    con: duckdb.DuckDBPyConnection, extract_date: dt.date
) -> tuple[Path, str] | None:
    """(model file, SHA-256) recorded for the delivery of ``extract_date``, or None."""
    if not table_exists(con, SCORING_LOG):
        return None
    row = con.execute(
        f"SELECT model_file, sha256 FROM {SCORING_LOG} WHERE extract_date = ?", [extract_date]
    ).fetchone()
    return (Path(row[0]), row[1]) if row else None


def record_scoring(con: duckdb.DuckDBPyConnection, extract_date: dt.date, rows: int) -> None:
    """Mark the delivery as scored (``scored_rows``) by the model recorded for it."""
    if table_exists(con, SCORING_LOG):
        con.execute(
            f"UPDATE {SCORING_LOG} SET scored_rows = ? WHERE extract_date = ?",
            [rows, extract_date],
        )


def training_features(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> list[str]:
    """The features a model trained on this delivery would use (covered by its history at the
    training and validation index dates)."""
    from segmentation.features import feature_coverage
    from segmentation.risk.model import TRAINING_OFFSET_DAYS, VALIDATION_OFFSET_DAYS

    names, _ = feature_coverage(
        con,
        [
            extract_date - dt.timedelta(days=TRAINING_OFFSET_DAYS),
            extract_date - dt.timedelta(days=VALIDATION_OFFSET_DAYS),
        ],
    )
    return list(names)
