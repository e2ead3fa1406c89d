"""Risk stratification and segmentation: emergency admission risk, tiers, Bridges to
Health segments, needs-based clusters."""

from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from phm.disclosure import protect_value
from phm.files import atomic_write_text
from phm.paths import exports_dir, sidecar_dir
from phm.warehouse import current_extract_date, write_table
from pipelines.partitions import DELIVERY_PARTITIONS
from pipelines.resources import PHMSettings
from segmentation.bridges import assign_segments
from segmentation.clusters import build_clusters
from segmentation.errors import InsufficientData
from segmentation.features import feature_coverage, feature_set_hash
from segmentation.report import model_card, write_pcn_outputs
from segmentation.risk import (
    FeatureSetMismatch,
    check_model_features,
    load_model,
    save_model,
    score,
    train_and_evaluate,
    write_scores,
)
from segmentation.risk.persistence import file_sha256
from segmentation.risk.retrain import (
    RetrainDecision,
    last_model,
    model_for_delivery,
    model_max_age_days,
    record_model_choice,
    record_scoring,
    should_retrain,
    training_features,
)

MEASURES = dg.AssetKey(["marts", "patient_measures"])
MODEL_FILE = "emergency_admission_risk.joblib"
#: what the risk model step did this run: trained, reused (the last good model) or skipped
STATUS_TABLE = "reports.risk_model_status"
EMPTY_SCORES = pl.DataFrame(
    schema={
        "person_id": pl.String,
        "risk_score": pl.Float64,
        "risk_tier": pl.String,
        "risk_factors": pl.String,
    }
)


def _model_path(settings: PHMSettings, extract_date: str) -> Path:
    return settings.output_root / "models" / extract_date / MODEL_FILE


def _locate_model(settings: PHMSettings, recorded: str | Path) -> Path:
    """Where a logged model file is now: a run writes its model in the run's own folder
    (pipelines.runner), which is promoted to HOME/models/<date>/ when the run succeeds."""
    recorded = Path(recorded)
    for candidate in (
        recorded,
        settings.output_root / "models" / recorded.parent.name / recorded.name,
        Path(settings.home) / "models" / recorded.parent.name / recorded.name,
    ):
        if candidate.is_file():
            return candidate
    return recorded


def _last_good_model(settings: PHMSettings, extract_date: str) -> Path | None:
    """The newest model of an earlier delivery promoted to HOME/models by a successful run."""
    folder = Path(settings.home) / "models"
    found = sorted(
        p for p in folder.glob(f"*/{MODEL_FILE}") if p.parent.name < extract_date and p.is_file()
    )
    return found[-1] if found else None


def _reuse_or_skip(con, settings: PHMSettings, extract_date, why: str) -> dict:
    """Training was impossible: reuse the last good model if the delivery supplies its
    features, else skip the risk outputs. Returns the status row."""
    previous = _last_good_model(settings, extract_date.isoformat())
    if previous is None:
        return {"status": "skipped", "reason": f"{why}; no earlier model to reuse"}
    try:
        model = load_model(previous)
        check_model_features(model)
    except (ValueError, FeatureSetMismatch) as e:
        return {"status": "skipped", "reason": f"{why}; earlier model not usable: {e}"}
    covered, excluded = feature_coverage(con, [extract_date])
    lacking = [n for n in model.feature_names if n not in covered]
    if lacking:
        detail = "; ".join(f"{n}: {excluded.get(n, 'not covered')}" for n in lacking)
        return {
            "status": "skipped",
            "reason": f"{why}; the delivery cannot supply the earlier model's features ({detail})",
        }
    save_model(model, _model_path(settings, extract_date.isoformat()), con=con)
    return {
        "status": "reused",
        "reason": f"{why}; reusing the last good model {model.model_version}",
        "model_version": model.model_version,
        **_training_rows(model),
    }


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="risk_model",
    group_name="segmentation",
    can_subset=False,
    specs=[
        dg.AssetSpec(
            ["marts", "risk_model"],
            deps=[MEASURES],
            kinds={"sklearn"},
            description=(
                "12-month emergency admission risk model. Features as of an index date are built by "
                "the same code as the current measures (an as-of snapshot of the record). Trained on "
                "features at extract date - 730 days with outcomes in the following 365 days; "
                "fitted on a seeded sample of PHM_RISK_TRAINING_SAMPLE rows (default 200,000) stratified "
                "by outcome, age band and sex (smaller cohorts whole); "
                "validated on features at extract date - 365 days (temporal hold-out). A regularised "
                "logistic regression and a gradient-boosted model, both calibrated; the one with the "
                "lower validation Brier score is kept. Saved with its version, training data hash, "
                "feature list and scikit-learn version under HOME/models/<extract_date>/; the model "
                "card (metrics, calibration, limitations, intended use) is written to the exports. "
                "On synthetic deliveries the generator's true probabilities give the ceiling."
            ),
        ),
        dg.AssetSpec(
            ["marts", "model_registry"],
            kinds={"duckdb"},
            description=(
                "`marts.model_registry(model_file, sha256, model_version, feature_set_hash)`: "
                "the SHA-256 of every saved model, checked before a model file is unpickled."
            ),
        ),
        dg.AssetSpec(
            ["marts", "model_scoring_log"],
            kinds={"duckdb"},
            description=(
                "`marts.model_scoring_log`: per delivery, the model chosen (file, SHA-256, "
                "version, delivery trained on), whether it was retrained and why, and the rows "
                "scored with it."
            ),
        ),
        dg.AssetSpec(
            ["reports", "risk_model_status"],
            kinds={"duckdb"},
            description=(
                "`reports.risk_model_status`: this delivery's model `trained`, `current`, "
                "`reused` or `skipped`, with the reason."
            ),
        ),
    ],
)
def risk_model(context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource):
    result = _risk_model(context, settings, warehouse)
    yield dg.MaterializeResult(asset_key=["marts", "risk_model"], metadata=result.metadata)
    for key in (["marts", "model_registry"], ["marts", "model_scoring_log"]):
        yield dg.MaterializeResult(asset_key=key)
    yield dg.MaterializeResult(
        asset_key=["reports", "risk_model_status"],
        metadata={"status": result.metadata.get("status", "current")},
    )


def _risk_model(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        last = last_model(con, extract_date)
        if last is not None:  # the log names the run's folder; the model now lives in HOME
            last = replace(last, model_file=str(_locate_model(settings, last.model_file)))
        decision = should_retrain(
            last,
            extract_date=extract_date,
            feature_set_hash=feature_set_hash(),
            covered_features=training_features(con, extract_date),
            max_age_days=model_max_age_days(),
        )
        if not decision.retrain:
            try:  # verified against marts.model_registry before unpickling, as for scoring
                model = load_model(last.model_file, con=con, expected_sha256=last.sha256)
            except (ValueError, OSError) as e:
                decision = RetrainDecision(True, f"the last model cannot be used: {e}")
        if not decision.retrain:
            record_model_choice(con, extract_date, model, last.model_file, last.sha256, decision)
            _write_status(
                con,
                extract_date,
                {
                    "status": "current",
                    "reason": decision.reason,
                    "model_version": model.model_version,
                    **_training_rows(model),
                },
            )
    if not decision.retrain:
        # the model card of the delivery the model was trained on goes with it
        trained_exports = exports_dir(Path(settings.home), model.extract_date.isoformat())
        for name in ("model_card.md", "calibration.png"):
            if (trained_exports / name).is_file():
                target = settings.exports(extract_date.isoformat()) / name
                target.write_bytes((trained_exports / name).read_bytes())
        context.log.info(f"risk model reused ({decision.reason}): {model.model_version}")
        return dg.MaterializeResult(
            metadata={
                "retrained": False,
                "reason": decision.reason,
                "model_version": model.model_version,
                "trained_on": model.extract_date.isoformat(),
                **{k: v for k, v in _training_rows(model).items() if v is not None},
                "path": dg.MetadataValue.path(str(last.model_file)),
            }
        )
    with warehouse.get_connection() as con:
        truth_path = (
            sidecar_dir(Path(settings.extracts_root), extract_date.isoformat()) / "truth.parquet"
        )
        truth = pl.read_parquet(truth_path) if truth_path.is_file() else None
        out = settings.exports(extract_date.isoformat())
        try:
            model, report = train_and_evaluate(con, extract_date, truth)
        except InsufficientData as e:
            # degrade, don't fail the night: every other output is still produced
            status = _reuse_or_skip(con, settings, extract_date, f"cannot train: {e}")
            _write_status(con, extract_date, status)
            atomic_write_text(out / "risk_model_status.md", _status_md(extract_date, status))
            context.log.warning(f"risk model {status['status']}: {status['reason']}")
            return dg.MaterializeResult(
                metadata={"status": status["status"], "reason": status["reason"]}
            )
        status = {
            "status": "trained",
            "reason": "",
            "model_version": model.model_version,
            **_training_rows(model),
        }
        _write_status(con, extract_date, status)
        # the SHA-256 goes to marts.model_registry too: risk_scores refuses a swapped file
        path = save_model(model, _model_path(settings, extract_date.isoformat()), con=con)
        record_model_choice(con, extract_date, model, path, file_sha256(path), decision)
    card = model_card(model, report, out)
    chosen = report.candidates[report.chosen]
    context.log.info(f"chose {report.chosen} ({decision.reason}); model saved to {path}")
    return dg.MaterializeResult(
        metadata={
            "status": "trained",
            "retrained": True,
            "reason": decision.reason,
            "model_card": dg.MetadataValue.md(card),
            "chosen": report.chosen,
            "validation_auroc": round(float(chosen["auroc"]), 4),
            "validation_brier": round(float(chosen["brier"]), 4),
            # the stratified sample the model was fitted on, of the whole training cohort
            "training_rows": model.training_rows,
            "training_cohort_rows": model.training_cohort_rows,
            "path": dg.MetadataValue.path(str(path)),
        }
    )


def _training_rows(model) -> dict:
    """The rows the model was fitted on (its stratified training sample) and the whole training
    cohort's rows; None for a model saved before the sample was recorded."""
    return {
        "training_rows": getattr(model, "training_rows", None),
        "training_cohort_rows": getattr(model, "training_cohort_rows", None),
    }


def _write_status(con, extract_date, status: dict) -> None:
    row = {
        "extract_date": [extract_date],
        "status": [status["status"]],
        "reason": [status["reason"]],
        "model_version": [status.get("model_version")],
        "training_rows": [status.get("training_rows")],
        "training_cohort_rows": [status.get("training_cohort_rows")],
    }
    frame = pl.DataFrame(
        row,
        schema={
            "extract_date": pl.Date,
            "status": pl.String,
            "reason": pl.String,
            "model_version": pl.String,
            "training_rows": pl.Int64,
            "training_cohort_rows": pl.Int64,
        },
    )
    write_table(con, STATUS_TABLE, frame)


def _status_md(extract_date, status: dict) -> str:
    note = (
        "Risk scores, risk tiers and the `high_risk` cohort are empty for this delivery."
        if status["status"] == "skipped"
        else "Risk scores come from the earlier model named above, not one trained on this "
        "delivery."
    )
    return (
        f"# Emergency admission risk model: {status['status']}\n\n"
        f"Delivery {extract_date.isoformat()}: {status['reason']}.\n\n{note}\n"
    )


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["marts", "risk_scores"],
    group_name="segmentation",
    deps=[dg.AssetKey(["marts", "risk_model"]), MEASURES],
    kinds={"duckdb"},
    description=(
        "`marts.risk_scores(person_id, risk_score, risk_tier, risk_factors)`: every currently "
        "registered patient's 12-month emergency admission probability, the Kaiser-style tier "
        "by rank (very high: top 0.5%; high: 0.5-5%; rising: 5-20%; low: the rest) and the "
        "top three contributing factors in plain words."
    ),
)
def risk_scores(
    context: dg.AssetExecutionContext, settings: PHMSettings, warehouse: DuckDBResource
) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        chosen = model_for_delivery(con, extract_date)
        if chosen is not None:
            path, sha = _locate_model(settings, chosen[0]), chosen[1]
        else:
            path, sha = _model_path(settings, extract_date.isoformat()), None
        if not path.is_file():  # the model step was skipped: empty scores, high_risk empty
            write_scores(con, EMPTY_SCORES)
            reason = con.execute(f"SELECT reason FROM {STATUS_TABLE}").fetchone()[0]
            context.log.warning(f"no risk model for this delivery; risk scores empty: {reason}")
            return dg.MaterializeResult(metadata={"rows": 0, "status": "skipped", "reason": reason})
        model = load_model(path, con=con, expected_sha256=sha)
        scores = score(con, model, extract_date)
        rows = write_scores(con, scores)
        record_scoring(con, extract_date, rows)
    tiers = scores.group_by("risk_tier").len().sort("risk_tier")
    sizes = {t: protect_value(n) for t, n in tiers.iter_rows()}
    context.log.info(f"risk tiers (disclosure-controlled): {sizes}")
    return dg.MaterializeResult(
        metadata={"rows": rows, "status": "scored", "tiers": dg.MetadataValue.json(sizes)}
    )


@dg.asset_check(
    asset=dg.AssetKey(["marts", "risk_scores"]),
    name="risk_model_trained",
    additional_deps=[dg.AssetKey(["marts", "risk_model"])],
    description=(
        "Warns (does not block) when the risk model could not be trained on this delivery "
        f"and was reused from an earlier run or skipped (`{STATUS_TABLE}` says why)."
    ),
)
def risk_model_trained(warehouse: DuckDBResource) -> dg.AssetCheckResult:
    with warehouse.get_connection() as con:
        status, reason = con.execute(f"SELECT status, reason FROM {STATUS_TABLE}").fetchone()
    return dg.AssetCheckResult(
        passed=status in ("trained", "current"),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"status": status, "reason": reason},
    )


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["marts", "segments"],
    group_name="segmentation",
    deps=[MEASURES],
    kinds={"duckdb"},
    description=(
        "`marts.segments(person_id, segment, segment_reason)`: every patient in exactly one "
        "Bridges to Health segment (Lynn et al. 2007, as adapted by NHS England's PHM "
        "programme), by rules in data/definitions/bridges_to_health.yaml applied in priority "
        "order."
    ),
)
def segments(warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        rows = assign_segments(con, current_extract_date(con))
        sizes = dict(
            con.execute(
                "SELECT segment, count(*) FROM marts.segments GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
    return dg.MaterializeResult(
        metadata={
            "rows": rows,
            "segments": dg.MetadataValue.json({k: protect_value(v) for k, v in sizes.items()}),
        }
    )


@dg.multi_asset(
    partitions_def=DELIVERY_PARTITIONS,
    name="clusters",
    group_name="segmentation",
    can_subset=False,
    specs=[
        dg.AssetSpec(
            ["marts", "clusters"],
            deps=[MEASURES],
            kinds={"sklearn", "duckdb"},
            description=(
                "`marts.clusters(person_id, cluster)`: needs-based clusters, k-means on "
                "standardised needs features, k from 3 to 8 chosen by silhouette on a seeded "
                "sample."
            ),
        ),
        dg.AssetSpec(
            ["marts", "cluster_profiles"],
            deps=[MEASURES],
            kinds={"duckdb"},
            description="`marts.cluster_profiles`: each cluster in words and numbers.",
        ),
    ],
)
def clusters(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
    """Needs-based clusters (``segmentation.clusters.build_clusters``); skipped, with empty
    tables and a warning, when the delivery has too few patients to cluster."""
    with warehouse.get_connection() as con:
        try:
            result = build_clusters(con, seed=0, extract_date=current_extract_date(con))
        except InsufficientData as e:
            con.execute(
                "CREATE OR REPLACE TABLE marts.clusters "
                "(person_id VARCHAR, cluster INTEGER, cluster_label VARCHAR)"
            )
            con.execute(
                "CREATE OR REPLACE TABLE marts.cluster_profiles "
                "(cluster INTEGER, cluster_label VARCHAR, description VARCHAR, patients BIGINT)"
            )
            context.log.warning(f"clusters skipped: {e}")
            for key in (["marts", "clusters"], ["marts", "cluster_profiles"]):
                yield dg.MaterializeResult(
                    asset_key=key, metadata={"status": "skipped", "reason": str(e)}
                )
            return
    yield dg.MaterializeResult(asset_key=["marts", "clusters"], metadata={"k": int(result.k)})
    yield dg.MaterializeResult(
        asset_key=["marts", "cluster_profiles"], metadata={"clusters": int(result.k)}
    )


@dg.asset(
    partitions_def=DELIVERY_PARTITIONS,
    key=["exports", "segment_outputs"],
    group_name="segmentation",
    deps=[dg.AssetKey(["marts", "segments"]), dg.AssetKey(["marts", "risk_scores"])],
    kinds={"csv", "png"},
    description=(
        "For each PCN: segments.csv (segment sizes, by risk tier, disclosure-controlled) and "
        "population_pyramid.png."
    ),
)
def segment_outputs(settings: PHMSettings, warehouse: DuckDBResource) -> dg.MaterializeResult:
    with warehouse.get_connection() as con:
        extract_date = current_extract_date(con)
        written = write_pcn_outputs(con, settings.exports(extract_date.isoformat()))
    return dg.MaterializeResult(metadata={"pcns": len(written)})
