"""Model card and per-PCN segment outputs.

* :func:`model_card` - markdown model card of a fitted risk model and its evaluation report,
  plus ``calibration.png`` (predicted vs observed by decile on the validation period);
* :func:`write_pcn_outputs` - per PCN, ``<out>/<pcn_code>/segments.csv`` (Bridges to Health
  segment sizes, by risk tier when ``marts.risk_scores`` exists) and
  ``<out>/<pcn_code>/population_pyramid.png`` (age-sex pyramid coloured by segment).

Every count written here is disclosure-controlled (suppress 1-7, round to 5); tables whose
cells add up (segments by risk tier; the pyramid's age band x sex x segment cells, whose
totals are the age-band, sex, segment and PCN totals) go through
:func:`phm.disclosure.protect_table` for complementary suppression; shares are computed from
the protected counts.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import matplotlib
import polars as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from phm.disclosure import (
    SUPPRESSED,
    DisclosurePolicy,
    protect_table,
    protect_value,
    rounded_value,
)
from phm.files import write_csv
from phm.measures._sql import require_tables
from phm.warehouse import table_exists
from phm.workers import ordered_results, start_workers
from segmentation.bridges import segment_names
from segmentation.features import LTC_FACTOR_NOTE, feature_catalogue
from segmentation.risk import (
    HORIZON_DAYS,
    SELECTION_CRITERION,
    TIER_DESCRIPTIONS,
    TIERS,
    RiskModel,
    RiskReport,
)

_PNG_META = {"Software": None}
_LABELS = {
    "logistic": "Logistic regression (L2, standardised)",
    "gradient_boosting": "Histogram gradient boosting",
    "age_only": "Age only (logistic, spline)",
    "truth": "Generator's true probability (ceiling)",
}


# --------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------


#: every figure draws its text as plain text (no mathtext: a ``$`` in a name is a dollar sign)
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


@matplotlib.rc_context(PLAIN_TEXT)
def published_calibration(cal: pl.DataFrame, policy: DisclosurePolicy | None = None):
    """The calibration table as published: patients and events through the disclosure
    function, and the observed rate computed from the rounded counts, hidden when the events
    are suppressed or fewer than the policy's minimum for a rate (a rate from exact counts
    beside a rounded count gives the exact count back; docs/security.md)."""
    p = policy or DisclosurePolicy.from_env()
    rows = []
    for r in cal.iter_rows(named=True):
        n, events = int(r["n"]), int(r["events"])
        n_r, e_r = rounded_value(n, p), rounded_value(events, p)
        hidden = (1 <= events <= p.suppress_max) or e_r < p.min_rate_events or n_r == 0
        rows.append(
            {
                "decile": r["decile"],
                "patients": protect_value(n, p),
                "with_outcome": protect_value(events, p),
                "mean_predicted": r["mean_predicted"],
                "observed_rate": None if hidden else e_r / n_r,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "decile": pl.Int32,
            "patients": pl.String,
            "with_outcome": pl.String,
            "mean_predicted": pl.Float64,
            "observed_rate": pl.Float64,
        },
    )


def calibration_plot(report: RiskReport, path: Path) -> Path:
    """Observed vs mean predicted risk by decile for every candidate (and the truth)."""
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    top = 0.0
    styles = {
        "logistic": ("o-", "#1f77b4"),
        "gradient_boosting": ("s-", "#d62728"),
        "age_only": ("^--", "#7f7f7f"),
        "truth": ("d:", "#2ca02c"),
    }
    for key, exact in report.calibration.items():
        cal = published_calibration(exact)  # the figure is published: protected rates only
        marker, colour = styles.get(key, ("x-", "black"))
        label = _LABELS.get(key, key) + (" - chosen" if key == report.chosen else "")
        ax.plot(
            cal["mean_predicted"],
            cal["observed_rate"],
            marker,
            color=colour,
            label=label,
            linewidth=2.5 if key == report.chosen else 1.2,
        )
        top = max(top, float(cal["mean_predicted"].max()), float(cal["observed_rate"].max() or 0))
    top = top * 1.05 or 1.0
    ax.plot([0, top], [0, top], color="black", linewidth=0.8, label="perfect calibration")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted probability (decile of predicted risk)")
    ax.set_ylabel("observed proportion with an emergency admission")
    ax.set_title(
        f"Calibration on the validation period\n(index {report.validation_index_date}, "
        f"outcome in the next {HORIZON_DAYS} days)"
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata=_PNG_META)
    plt.close(fig)
    return path


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _metric_rows(report: RiskReport) -> list[str]:
    rows = [
        "| predictions | cohort | patients | with outcome | AUROC | average precision | Brier | log loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, cohort: str, m: dict | None) -> None:
        if m is None:
            return
        rows.append(
            f"| {name} | {cohort} | {protect_value(m['n'])} | {protect_value(m['events'])} | "
            f"{_fmt(m['auroc'])} | {_fmt(m['average_precision'])} | {_fmt(m['brier'], 4)} | "
            f"{_fmt(m['log_loss'], 4)} |"
        )

    for name, m in report.candidates.items():
        chosen = " **(chosen)**" if name == report.chosen else ""
        row(_LABELS[name] + chosen, "validation", m)
    row(_LABELS["age_only"], "validation", report.age_only)
    row(
        _LABELS[report.chosen] + " (chosen)",
        "validation with truth",
        report.chosen_on_ceiling_cohort,
    )
    row(_LABELS["truth"], "validation with truth", report.ceiling)
    if report.observable_ceiling is not None:
        row(
            "Truth projected onto the features (in-sample diagnostic)",
            "validation with truth",
            report.observable_ceiling,
        )
    return rows


def model_card(model: RiskModel, report: RiskReport, out_dir: Path | str) -> str:
    """Markdown model card; writes ``calibration.png`` and ``model_card.md`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    calibration_plot(report, out_dir / "calibration.png")
    cat = {f.name: f for f in feature_catalogue()}
    chosen = report.candidates[report.chosen]
    other = [n for n in report.candidates if n != report.chosen]
    gap = report.auroc_gap_to_ceiling
    lines = [
        "# Model card: emergency admission in the next 12 months",
        "",
        "## Model details",
        "",
        f"- **Version**: `{model.model_version}`",
        f"- **Model**: {_LABELS[model.name]}, calibrated with `CalibratedClassifierCV` "
        f"({model.calibration_method}, 5-fold stratified, ensemble of the 5 fold models) on the "
        "training period.",
        f"- **Chosen by**: lower {SELECTION_CRITERION} score on the validation period "
        + ", ".join(
            f"{_LABELS[n]} {report.candidates[n][SELECTION_CRITERION]:.5f}"
            for n in report.candidates
        )
        + ".",
        f"- **scikit-learn**: {model.sklearn_version}; **random_state**: {model.random_state}",
        f"- **Training data hash** (SHA-256 of features, outcomes and person ids): "
        f"`{model.training_data_hash}`",
        f"- **Feature set hash**: `{model.feature_set_hash}` (scoring refuses a model whose "
        "feature definitions differ)",
        f"- **Extract date**: {model.extract_date}",
        "",
        "## Intended use",
        "",
        "Population risk stratification for proactive care in Primary Care Networks: ranking the "
        "registered population by the probability of at least one emergency hospital admission "
        "in the next 12 months, so that multidisciplinary teams can review the highest-risk "
        "patients (risk tiers: "
        + "; ".join(f"{t} = {TIER_DESCRIPTIONS[t]}" for t, _ in TIERS)
        + "). Scores support, and never replace, clinical judgement. Not for decisions about an "
        "individual's eligibility for care, for insurance or employment, or outside the "
        "population it was trained on.",
        "",
        "## Data",
        "",
        "- **Outcome**: at least one emergency admission (`sus_apc.admission_method` 21-25, 2A-2D "
        "or 28; a 2B transfer that continues a stay is the same admission: `phm/hospital.py`) with "
        f"`admission_date` in the {HORIZON_DAYS} days after the index date (index + 1 .. index + "
        f"{HORIZON_DAYS}).",
        f"- **Training**: patients registered and alive on {report.training_index_date}, features "
        f"as of that date; {protect_value(report.training['patients'])} patients, "
        f"{protect_value(report.training['events'])} with the outcome.",
        f"- **Validation (temporal hold-out)**: patients registered and alive on "
        f"{report.validation_index_date}, outcome up to the extract date {report.extract_date}; "
        f"{protect_value(report.validation['patients'])} patients, "
        f"{protect_value(report.validation['events'])} with the outcome.",
        "- Features are built by `segmentation.features.build_features`, which runs the same "
        "measures code as `marts.patient_measures` on an as-of snapshot of the record (only rows "
        "known on the index date), so training, validation and scoring cannot drift apart.",
        "",
        "## Features",
        "",
        f"{len(model.feature_names)} features:",
        "",
    ]
    for n in model.feature_names:
        lines.append(f"- `{n}`: {cat[n].label}")
    if model.excluded_features:
        lines += [
            "",
            "Left out because the delivery's history does not cover their look-back at the "
            "training index date (they would be zero in training but populated at scoring):",
            "",
        ]
        for n, why in model.excluded_features.items():
            lines.append(f"- `{n}`: {why}")
    lines += [
        "",
        "## Metrics (held-out validation period)",
        "",
        *_metric_rows(report),
        "",
    ]
    if gap is not None:
        lines.append(
            f"AUROC gap to the generator's true probabilities on the same patients: **{gap:.3f}** "
            f"(target <= 0.02)."
        )
        if report.observable_ceiling is not None:
            lines.append(
                "The in-sample projection of the truth onto the features (a regression of log "
                "true probability on exactly these features, fitted on the validation patients "
                f"themselves) reaches AUROC {report.observable_ceiling['auroc']:.3f} and explains "
                f"{report.observable_ceiling['r2_log_truth']:.0%} of the variance of the log "
                "true probability: that is about the best any model of these features can do; "
                "the rest of the gap is risk the record does not show."
            )
        lines.append("")
    cal = report.calibration[report.chosen]
    lines += [
        "## Calibration by decile (chosen model, validation period)",
        "",
        "![calibration](calibration.png)",
        "",
        "| decile | patients | with outcome | mean predicted | observed |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in published_calibration(cal).iter_rows(named=True):
        observed = "" if r["observed_rate"] is None else f"{r['observed_rate']:.4f}"
        lines.append(
            f"| {r['decile']} | {r['patients']} | {r['with_outcome']} | "
            f"{r['mean_predicted']:.4f} | {observed} |"
        )
    drift = report.feature_means.with_columns(
        (pl.col("validation_mean") - pl.col("training_mean")).abs().alias("diff")
    ).sort("diff", descending=True, maintain_order=True)
    lines += [
        "",
        "## Feature drift between training and validation index dates (largest 8)",
        "",
        "| feature | training mean | validation mean |",
        "|---|---:|---:|",
        *[
            f"| `{r['feature']}` | {r['training_mean']:.4f} | {r['validation_mean']:.4f} |"
            for r in drift.head(8).iter_rows(named=True)
        ],
        "",
        "## Limitations",
        "",
        f"- Validated on one temporal hold-out of one population; mean predicted "
        f"{chosen['mean_predicted']:.4f} vs observed {chosen['observed_rate']:.4f}. Recalibrate "
        "before using it elsewhere or after a change in coding or admission practice.",
        "- Features use only what the record shows on the index date. Risk the record does not "
        "show (social circumstances, unrecorded conditions, an unobserved propensity to be "
        "admitted) cannot be learnt; prior admissions and A&E use are partial proxies.",
        "- Patients who left or died during the outcome year stay in the cohorts with the "
        "admissions observed while registered (no censoring adjustment).",
        "- The area deprivation feature uses the patient's current LSOA, not the address on the "
        "index date.",
        "- Emergency admissions cluster in people already admitted: the top tier is dominated by "
        "recent high users, some of whom would regress to the mean without intervention.",
        "- Contributing factors are model-based what-ifs (risk minus risk with that factor at its "
        "reference value), not causes. " + LTC_FACTOR_NOTE,
        f"- The other candidate(s) ({', '.join(_LABELS[o] for o in other)}) scored within "
        f"{max(abs(report.candidates[o]['auroc'] - chosen['auroc']) for o in other):.3f} AUROC."
        if other
        else "",
        "- Counts in this card are disclosure-controlled (1-7 suppressed, others rounded to 5).",
        "",
    ]
    text = "\n".join(line for line in lines if line is not None) + "\n"
    (out_dir / "model_card.md").write_text(text, encoding="utf-8")
    return text


# --------------------------------------------------------------------------------------
# Per-PCN outputs
# --------------------------------------------------------------------------------------

AGE_BANDS = [(lo, lo + 4) for lo in range(0, 90, 5)] + [(90, 200)]
SEGMENT_COLOURS = [
    "#4d4d4d",  # short decline before dying
    "#8c510a",  # frailty and dementia
    "#d73027",  # organ failure
    "#fc8d59",  # disability
    "#fee090",  # maternal and infant
    "#91bfdb",  # chronic conditions
    "#4575b4",  # acute
    "#1a9850",  # healthy
]


def _band_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 200 else f"{lo}-{hi}"


def _protected_number(n: int, policy: DisclosurePolicy | None = None) -> int | None:
    v = protect_value(n, policy)
    return None if v in (None, SUPPRESSED) else int(v)


def _protect_segment_counts(
    counts: pl.DataFrame, has_risk: bool, policy: DisclosurePolicy | None
) -> pl.DataFrame:
    """One PCN's segment counts (``n`` and, with risk, one column per tier) through
    :func:`phm.disclosure.protect_table`: the segments add up to the PCN's population
    (published elsewhere) and a segment's tiers (plus the unscored) add up to its ``n``, so
    suppression is primary and secondary over both. Returns the same columns as text."""
    tiers = [t for t, _ in TIERS] if has_risk else []
    long = counts.select("segment", pl.lit("ALL").alias("tier"), pl.col("n").cast(pl.Int64))
    if tiers:
        parts = [
            counts.select("segment", pl.lit(t).alias("tier"), pl.col(t).cast(pl.Int64).alias("n"))
            for t in tiers
        ]
        unscored = counts.select(
            "segment",
            pl.lit("unscored").alias("tier"),
            (pl.col("n") - pl.sum_horizontal(tiers)).cast(pl.Int64).alias("n"),
        )
        long = pl.concat([long, *parts, unscored])
    prot = protect_table(
        long,
        ["n"],
        ["tier"],
        margins=["segment"],
        total={"tier": "ALL"},
        policy=policy,
    )
    wide = prot.filter(pl.col("tier") == "ALL").select("segment", "n")
    for t in tiers:
        wide = wide.join(
            prot.filter(pl.col("tier") == t).select("segment", pl.col("n").alias(t)),
            on="segment",
            how="left",
        )
    return counts.select("segment", "priority").join(wide, on="segment", how="left")


def write_pcn_outputs(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path | str,
    *,
    policy: DisclosurePolicy | None = None,
    pcn_codes: list[str] | None = None,
    workers: int | None = None,
) -> dict[str, list[Path]]:
    """Per PCN (every PCN, or those of ``pcn_codes``): ``<out>/<pcn_code>/segments.csv`` and
    ``<out>/<pcn_code>/population_pyramid.png``. The pyramids are drawn in ``workers``
    processes (:func:`phm.workers.export_workers`: ``PHM_WORKERS``); the files are
    the same with any number.

    ``segments.csv``: ``pcn_code, segment, priority, patients, share_pct`` and, when
    ``marts.risk_scores`` exists, one column per risk tier (patients in that segment and tier).
    Every count is disclosure-controlled; ``share_pct`` = protected count / protected PCN
    total (blank when suppressed). Needs ``marts.segments`` (:func:`assign_segments`).
    """
    require_tables(con, "marts.segments", "marts.patient_measures")
    out_dir = Path(out_dir)
    names = segment_names()
    has_risk = table_exists(con, "marts.risk_scores")
    risk_join = "LEFT JOIN marts.risk_scores r USING (person_id)" if has_risk else ""
    tier_col = "r.risk_tier" if has_risk else "NULL"
    n_pcns = con.execute(
        "SELECT count(DISTINCT pcn_code) FROM marts.patient_measures WHERE pcn_code IS NOT NULL"
    ).fetchone()[0]
    workers = start_workers(  # the workers' server starts while we read
        n_pcns if pcn_codes is None else min(n_pcns, len(pcn_codes)), workers
    )
    df = con.execute(
        f"""
        SELECT pm.pcn_code, pm.age, pm.sex, s.segment, {tier_col} AS risk_tier
        FROM marts.patient_measures pm
        JOIN marts.segments s USING (person_id)
        {risk_join}
        WHERE pm.pcn_code IS NOT NULL
        """
    ).pl()
    unknown = set(df["segment"].unique()) - set(names)
    if unknown:
        raise ValueError(f"marts.segments holds segment(s) not in the definition: {unknown}")
    seg_order = pl.DataFrame({"segment": names, "priority": list(range(1, len(names) + 1))})
    # resolved here: a worker process would read its own environment
    policy = policy or DisclosurePolicy.from_env()
    by_pcn = df.partition_by("pcn_code", as_dict=True, maintain_order=True)
    pcns = [
        p for p in sorted(df["pcn_code"].unique().to_list()) if pcn_codes is None or p in pcn_codes
    ]
    for pcn in pcns:
        (out_dir / pcn).mkdir(parents=True, exist_ok=True)
    # the pyramids (matplotlib, one thread) in worker processes, the largest PCNs first,
    # while this process writes the segment tables
    pyramids = [
        (
            by_pcn[(pcn,)].select("age", "sex", "segment"),
            pcn,
            names,
            out_dir / pcn / "population_pyramid.png",
            policy,
        )
        for pcn in pcns
    ]
    written: dict[str, list[Path]] = {}
    with ordered_results(
        _pyramid,
        pyramids,
        workers=workers,
        sizes=[job[0].height for job in pyramids],
    ) as drawn:
        for pcn, (_, _, _, png, _) in zip(pcns, pyramids, strict=True):
            csv = out_dir / pcn / "segments.csv"
            table = _segment_table(by_pcn[(pcn,)], pcn, seg_order, has_risk, policy)
            write_csv(table, csv, null_value="")
            written[pcn] = [csv, png]
        for _ in drawn:  # every pyramid drawn (a failure raises here)
            pass
    return written


def _segment_table(
    sub: pl.DataFrame,
    pcn: str,
    seg_order: pl.DataFrame,
    has_risk: bool,
    policy: DisclosurePolicy,
) -> pl.DataFrame:
    """One PCN's segments.csv (see :func:`write_pcn_outputs`)."""
    counts = seg_order.join(
        sub.group_by("segment").agg(pl.len().alias("n")), on="segment", how="left"
    ).with_columns(pl.col("n").fill_null(0))
    if has_risk:
        tiers = (
            sub.group_by("segment", "risk_tier")
            .agg(pl.len().alias("k"))
            .pivot(on="risk_tier", index="segment", values="k")
        )
        for t, _ in TIERS:
            if t not in tiers.columns:
                tiers = tiers.with_columns(pl.lit(None, pl.UInt32).alias(t))
        counts = counts.join(
            tiers.select("segment", *[t for t, _ in TIERS]), on="segment", how="left"
        )
        counts = counts.with_columns(pl.col(t).fill_null(0) for t, _ in TIERS)
    total_protected = _protected_number(sub.height, policy)
    shown = _protect_segment_counts(counts, has_risk, policy)
    return shown.sort("priority").select(
        pl.lit(pcn).alias("pcn_code"),
        "segment",
        "priority",
        pl.col("n").alias("patients"),
        (pl.col("n").cast(pl.Int64, strict=False) / pl.lit(total_protected or None, pl.Int64) * 100)
        .round(1)
        .alias("share_pct"),
        *([pl.col(t).alias(t.replace(" ", "_")) for t, _ in TIERS] if has_risk else []),
    )


def pyramid_counts(
    sub: pl.DataFrame, names: list[str], policy: DisclosurePolicy | None = None
) -> pl.DataFrame:
    """One PCN's age band x sex (M, F) x segment counts as published in the pyramid:
    ``sex, band, segment, n`` (exact, internal) and ``shown`` (Int64 rounded, null where
    suppressed), through :func:`phm.disclosure.protect_table` with margins over sex, band
    and segment: the cells add up to the age-band and sex totals, the segment sizes
    (segments.csv) and the PCN total, all taken as published, so no suppressed cell can be
    worked out by differencing."""
    band_expr = pl.lit(None, pl.String)
    for lo, hi in reversed(AGE_BANDS):
        band_expr = (
            pl.when((pl.col("age") >= lo) & (pl.col("age") <= hi))
            .then(pl.lit(_band_label(lo, hi)))
            .otherwise(band_expr)
        )
    counts = (
        sub.filter(pl.col("sex").is_in(["M", "F"]) & pl.col("segment").is_in(names))
        .with_columns(band_expr.alias("band"))
        .group_by("sex", "band", "segment")
        .agg(pl.len().cast(pl.Int64).alias("n"))
        .sort("sex", "band", "segment", nulls_last=True)
    )
    shown = protect_table(
        counts, ["n"], margins=["sex", "band", "segment"], policy=policy, as_text=False
    )
    return counts.with_columns(shown["n"].alias("shown"))


@matplotlib.rc_context(PLAIN_TEXT)
def _pyramid(
    sub: pl.DataFrame, pcn: str, names: list[str], path: Path, policy: DisclosurePolicy | None
) -> None:
    bands = [_band_label(lo, hi) for lo, hi in AGE_BANDS]
    counts = pyramid_counts(sub, names, policy)
    lookup = {(r["sex"], r["band"], r["segment"]): r["shown"] for r in counts.iter_rows(named=True)}
    fig, ax = plt.subplots(figsize=(12, 7), dpi=100)
    y = list(range(len(bands)))
    left_m = [0] * len(bands)
    left_f = [0] * len(bands)
    for seg, colour in zip(names, SEGMENT_COLOURS * 2, strict=False):
        m = [lookup.get(("M", b, seg)) or 0 for b in bands]
        f = [lookup.get(("F", b, seg)) or 0 for b in bands]
        ax.barh(y, [-v for v in m], left=[-v for v in left_m], color=colour, label=seg, height=0.85)
        ax.barh(y, f, left=left_f, color=colour, height=0.85)
        left_m = [a + b for a, b in zip(left_m, m, strict=True)]
        left_f = [a + b for a, b in zip(left_f, f, strict=True)]
    top = max([*left_m, *left_f, 1])
    # a bar with suppressed parts: a hatched end mark (fixed width, no count) after it
    hidden = {(s, b) for (s, b, _), v in lookup.items() if v is None}
    mark = top * 0.03
    for i, b in enumerate(bands):
        for sex, end, sign in (("M", left_m[i], -1), ("F", left_f[i], 1)):
            if (sex, b) in hidden:
                ax.barh(
                    i,
                    sign * mark,
                    left=sign * end,
                    color="white",
                    edgecolor="grey",
                    hatch="////",
                    height=0.85,
                    linewidth=0.5,
                )
    ax.set_xlim(-top * 1.1, top * 1.1)
    ax.set_yticks(y, bands)
    ticks = ax.get_xticks()
    ax.set_xticks(ticks, [f"{abs(int(t))}" for t in ticks])
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("patients (males left, females right)")
    ax.set_ylabel("age band (years)")
    ax.set_title(f"PCN {pcn}: registered population by age, sex and Bridges to Health segment")
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="segment", title_fontsize=9
    )
    fig.text(
        0.01,
        0.01,
        "Counts per age band, sex and segment, rounded to 5; 1-7 and any count that could be "
        "worked out from the totals are suppressed: not drawn, the bar ends in a hatched mark "
        "(its length is not a count). Sex I/U not shown.",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, metadata=_PNG_META)
    plt.close(fig)
