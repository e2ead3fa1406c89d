"""History across deliveries: per-delivery aggregates kept in ``reports.history_*`` so
analysts see the trend month to month, and a trend chart per PCN folder.

:func:`record_delivery_history` replaces one delivery's rows (keyed by ``extract_date``) in:

* ``reports.cohort_size_history`` (extract_date, cohort_id, pcn_code, members) is read, not
  written, here: the cohort sizes per PCN are recorded once, by
  :func:`phm.quality.record_cohort_sizes` (the ``reports/cohort_size_history`` asset, shared
  with the cohort size plausibility check), before this step;
* ``reports.history_data_quality`` (extract_date, table_name, rows_delivered, rows_accepted,
  rows_quarantined): from ``reports.data_quality``;
* ``reports.history_measures`` (extract_date, pcn_code, imd2019_quintile, registered,
  ltc5_pct, frailty_pct, emergency_admissions_per_1000, their counts, scope): rows of
  ``scope = 'quintile'`` copied from the disclosure-controlled
  ``geo.need_by_imd_quintile_published`` (``registered`` as published: ``*`` or rounded;
  rates computed there from protected counts; ``pcn_code = 'ALL'`` is every PCN together,
  ``imd2019_quintile`` null: patients with no known quintile), and one row per PCN of
  ``scope = 'total'`` (:func:`pcn_totals`: the PCN over all quintiles, counts protected,
  rates from the protected counts);
* ``reports.history_model`` (extract_date, status, reason, model_version, validation_auroc,
  validation_brier): from ``reports.risk_model_status`` and the metrics the caller passes.

A rerun of a delivery deletes that delivery's rows and inserts the new ones in one transaction:
the other deliveries' rows are kept. Counts are exact inside the warehouse (internal, like
every marts table); whatever leaves it (Dagster metadata: :func:`history_metadata`; the PNG:
:func:`write_trend_charts`) goes through :mod:`phm.disclosure` first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from phm.disclosure import (
    SUPPRESSED,
    DisclosurePolicy,
    protect_count,
    protect_value,
    rounded_value,
)
from phm.exports import add_to_manifest
from phm.files import atomic_path
from phm.quality import COHORT_SIZE_HISTORY
from phm.warehouse import table_exists
from phm.workers import n_workers, worker_context

DATA_QUALITY = "reports.data_quality"
MODEL_STATUS = "reports.risk_model_status"
NEED_BY_QUINTILE = "geo.need_by_imd_quintile_published"
NEED_BY_QUINTILE_RAW = "geo.need_by_imd_quintile"
#: rows of reports.history_measures: one IMD quintile of a PCN, or the PCN over all quintiles
SCOPE_QUINTILE = "quintile"
SCOPE_TOTAL = "total"

HISTORY_DATA_QUALITY = "reports.history_data_quality"
HISTORY_MEASURES = "reports.history_measures"
HISTORY_MODEL = "reports.history_model"
#: every history table, keyed by extract_date (cohort sizes: the table the size check reads)
HISTORY_TABLES = (COHORT_SIZE_HISTORY, HISTORY_DATA_QUALITY, HISTORY_MEASURES, HISTORY_MODEL)

ALL_PCNS = "ALL"
#: measure column in history_measures -> column of the published need table
MEASURES = {
    "ltc5_pct": "ltc5_pct",
    "frailty_pct": "frailty_pct",
    "emergency_admissions_per_1000": "emergency_admissions_crude_per_1000",
}
#: published counts kept with the rates: a PCN's figure over all quintiles is computed from them
#: measure -> (numerator, denominator; None: the registered population)
RATE_COUNTS = {
    "ltc5_pct": ("ltc5_n", "ltc5_denominator", 100),
    "frailty_pct": ("frailty_n", "frailty_denominator", 100),
    "emergency_admissions_per_1000": ("emergency_admissions_n", None, 1000),
}
PUBLISHED_COUNTS = (
    "ltc5_n",
    "ltc5_denominator",
    "frailty_n",
    "frailty_denominator",
    "emergency_admissions_n",
)
MEASURE_LABELS = {
    "ltc5_pct": "% with 5+ long-term conditions",
    "frailty_pct": "% frail (65+)",
    "emergency_admissions_per_1000": "Emergency admissions per 1,000 (12 months)",
}
TREND_FILE = "trends.png"
PNG_METADATA = {"Software": None}
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False, "svg.hashsalt": "phm-history"}

_DDL = {
    HISTORY_DATA_QUALITY: """(extract_date DATE NOT NULL, table_name VARCHAR NOT NULL,
        rows_delivered BIGINT, rows_accepted BIGINT, rows_quarantined BIGINT,
        PRIMARY KEY (extract_date, table_name))""",
    HISTORY_MEASURES: """(extract_date DATE NOT NULL, pcn_code VARCHAR NOT NULL,
        imd2019_quintile INTEGER, registered VARCHAR, ltc5_pct DOUBLE, frailty_pct DOUBLE,
        emergency_admissions_per_1000 DOUBLE, ltc5_n VARCHAR, ltc5_denominator VARCHAR,
        frailty_n VARCHAR, frailty_denominator VARCHAR, emergency_admissions_n VARCHAR,
        scope VARCHAR)""",
    HISTORY_MODEL: """(extract_date DATE NOT NULL PRIMARY KEY, status VARCHAR,
        reason VARCHAR, model_version VARCHAR, validation_auroc DOUBLE,
        validation_brier DOUBLE)""",
}


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    schema, name = table.split(".")
    return {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?",
            [schema, name],
        ).fetchall()
    }


def _data_quality_sql() -> str:
    pivot = ", ".join(
        f"sum(value) FILTER (WHERE metric = '{m}')::BIGINT AS {m}"
        for m in ("rows_delivered", "rows_accepted", "rows_quarantined")
    )
    return (
        f'SELECT ?::DATE, "table", {pivot} FROM {DATA_QUALITY} '
        "WHERE metric IN ('rows_delivered', 'rows_accepted', 'rows_quarantined') "
        'GROUP BY "table" ORDER BY "table"'
    )


def _measures_sql(con: duckdb.DuckDBPyConnection) -> str:
    cols = _columns(con, NEED_BY_QUINTILE)
    values = ", ".join(
        f"{src}::DOUBLE" if src in cols else "NULL::DOUBLE" for src in MEASURES.values()
    )
    counts = ", ".join(f"{c}::VARCHAR" if c in cols else "NULL::VARCHAR" for c in PUBLISHED_COUNTS)
    return (
        f"SELECT ?::DATE, pcn_code, imd2019_quintile::INTEGER, population::VARCHAR, {values}, "
        f"{counts}, '{SCOPE_QUINTILE}' "
        f"FROM {NEED_BY_QUINTILE} WHERE pcn_code IS NOT NULL "
        "ORDER BY pcn_code, imd2019_quintile NULLS LAST"
    )


def pcn_totals(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> pl.DataFrame:
    """One row per PCN (and ``ALL``) over all IMD quintiles, in the shape of
    ``reports.history_measures`` (``scope = 'total'``, quintile null): each count is the PCN's
    exact total (from the raw quintile table) through :func:`phm.disclosure.protect_value`
    (suppress 1-7, round to 5), and each rate is computed from those protected counts. The
    joint protection of the need tables treats exactly these PCN totals as published
    (:func:`geo.need.protect_need_counts`, ``elsewhere``), so a suppressed area cell cannot be
    recovered from them; summing the published quintile cells instead would undercount
    wherever a quintile cell is suppressed."""
    cols = _columns(con, NEED_BY_QUINTILE_RAW)
    present = [c for c in PUBLISHED_COUNTS if c in cols]
    sums = ", ".join(
        ["sum(population)::BIGINT AS registered"] + [f"sum({c})::BIGINT AS {c}" for c in present]
    )
    raw = con.execute(
        f"SELECT pcn_code, {sums} FROM {NEED_BY_QUINTILE_RAW} WHERE pcn_code IS NOT NULL "
        "GROUP BY pcn_code ORDER BY pcn_code"
    ).pl()
    policy = DisclosurePolicy.from_env()
    texts = ["registered", *present]
    shown = raw.with_columns(protect_count(pl.col(c), policy).alias(c) for c in texts)
    nums = shown.with_columns(_published_ints(pl.col(c)).alias(f"_{c}") for c in texts)
    rates = []
    for m, (num, den, per) in RATE_COUNTS.items():
        if num not in present or (den is not None and den not in present):
            rates.append(pl.lit(None, pl.Float64).alias(m))
            continue
        n, d = pl.col(f"_{num}"), pl.col(f"_{den or 'registered'}")
        ok = n.is_not_null() & d.is_not_null() & (n >= policy.min_rate_events) & (d > 0)
        rates.append(pl.when(ok).then((n * per / d).round(1)).otherwise(None).alias(m))
    out = nums.with_columns(rates).select(
        pl.lit(extract_date).alias("extract_date"),
        "pcn_code",
        pl.lit(None, pl.Int32).alias("imd2019_quintile"),
        "registered",
        *MEASURES,
        *[
            (pl.col(c) if c in present else pl.lit(None, pl.String)).alias(c)
            for c in PUBLISHED_COUNTS
        ],
        pl.lit(SCOPE_TOTAL).alias("scope"),
    )
    return out


def _model_row(
    con: duckdb.DuckDBPyConnection, extract_date: dt.date, metrics: Mapping[str, float] | None
) -> list:
    status = reason = version = None
    if table_exists(con, MODEL_STATUS):
        row = con.execute(
            f"SELECT status, reason, model_version FROM {MODEL_STATUS} "
            "WHERE extract_date = ? LIMIT 1",
            [extract_date],
        ).fetchone()
        if row:
            status, reason, version = row
    metrics = dict(metrics or {})
    if status == "current" and table_exists(con, HISTORY_MODEL):
        # the retraining policy kept a model: its validation figures are those recorded when
        # it was trained; a rerun of the delivery it was trained on keeps that row as it was
        prev = con.execute(
            f"SELECT extract_date, status, reason, validation_auroc, validation_brier "
            f"FROM {HISTORY_MODEL} WHERE model_version = ? AND status = 'trained' "
            "ORDER BY extract_date LIMIT 1",
            [version],
        ).fetchone()
        if prev is not None:
            metrics = {"auroc": prev[3], "brier": prev[4]}
            if prev[0] == extract_date:
                status, reason = prev[1], prev[2]
    trained = status in ("trained", "current")
    return [
        extract_date,
        status or "not run",
        reason,
        version,
        metrics.get("auroc") if trained else None,
        metrics.get("brier") if trained else None,
    ]


def record_delivery_history(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    model_metrics: Mapping[str, float] | None = None,
) -> dict[str, int]:
    """Replace ``extract_date``'s rows of every history table with this delivery's aggregates;
    other deliveries' rows are kept. ``model_metrics``: the risk model's validation
    ``auroc`` and ``brier`` for this delivery (recorded when it was trained; a model the retraining policy kept (``current``) carries the figures recorded when it was trained).
    A source table that does not exist (a partial run) leaves that history without a row for
    this delivery. Returns rows written per history table."""
    con.execute("CREATE SCHEMA IF NOT EXISTS reports")
    for table, ddl in _DDL.items():
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} {ddl}")
    # a home whose history predates the PCN-total rows: their rows are per quintile
    con.execute(f"ALTER TABLE {HISTORY_MEASURES} ADD COLUMN IF NOT EXISTS scope VARCHAR")
    con.execute("BEGIN TRANSACTION")
    try:
        model_row = _model_row(con, extract_date, model_metrics)  # before its old row goes
        for table in _DDL:
            con.execute(f"DELETE FROM {table} WHERE extract_date = ?", [extract_date])
        if table_exists(con, DATA_QUALITY):
            con.execute(f"INSERT INTO {HISTORY_DATA_QUALITY} {_data_quality_sql()}", [extract_date])
        if table_exists(con, NEED_BY_QUINTILE):
            con.execute(f"INSERT INTO {HISTORY_MEASURES} {_measures_sql(con)}", [extract_date])
        if table_exists(con, NEED_BY_QUINTILE_RAW):
            totals = pcn_totals(con, extract_date)  # noqa: F841 (read by the SQL below)
            con.execute(f"INSERT INTO {HISTORY_MEASURES} BY NAME SELECT * FROM totals")
        con.execute(f"INSERT INTO {HISTORY_MODEL} VALUES (?, ?, ?, ?, ?, ?)", model_row)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return {
        t: con.execute(
            f"SELECT count(*) FROM {t} WHERE extract_date = ?", [extract_date]
        ).fetchone()[0]
        for t in HISTORY_TABLES
    }


# --------------------------------------------------------------------------------------
# reading the history back, disclosure-controlled


def _published_int(text: str | None) -> int | None:
    """A published count as a number to plot: None for suppressed (``*``) or missing."""
    return None if text in (None, SUPPRESSED) else int(text)


def _published_ints(expr: pl.Expr) -> pl.Expr:
    """:func:`_published_int` over a column of published counts (vectorised)."""
    return pl.when(expr != SUPPRESSED).then(expr).cast(pl.Int64)  # keeps the column's name


def protected_cohort_sizes(
    con: duckdb.DuckDBPyConnection, pcn_code: str | None = None
) -> pl.DataFrame:
    """Cohort sizes across deliveries (extract_date, cohort_id, pcn_code, members as published:
    ``*`` or rounded) for one PCN, or summed over PCNs (``pcn_code`` = 'ALL') when None."""
    if pcn_code is None:
        sql = (
            f"SELECT extract_date, cohort_id, '{ALL_PCNS}' AS pcn_code, sum(members)::BIGINT AS n "
            f"FROM {COHORT_SIZE_HISTORY} GROUP BY ALL"
        )
        params: list = []
    else:
        sql = (
            f"SELECT extract_date, cohort_id, pcn_code, members AS n FROM {COHORT_SIZE_HISTORY} "
            "WHERE pcn_code = ?"
        )
        params = [pcn_code]
    df = con.execute(sql + " ORDER BY extract_date, cohort_id", params).pl()
    policy = DisclosurePolicy.from_env()
    return df.with_columns(protect_count(pl.col("n"), policy).alias("members")).drop("n")


def pcn_measure_trend(con: duckdb.DuckDBPyConnection, pcn_code: str) -> pl.DataFrame:
    """A PCN's (or 'ALL') key measures across deliveries, over all IMD quintiles together,
    from published counts only: the PCN-total rows (:func:`pcn_totals`) where the delivery
    has them; for deliveries recorded before those rows existed, registered = sum of the
    published quintile populations and each rate = sum of published numerators / sum of
    published denominators (suppressed cells count as 0, so a lower bound), shown only on at
    least ``min_rate_events`` published events. One row per delivery: extract_date,
    registered, the :data:`MEASURES`."""
    df = con.execute(
        f"SELECT * FROM {HISTORY_MEASURES} WHERE pcn_code = ? ORDER BY extract_date",
        [pcn_code],
    ).pl()
    schema = {"extract_date": pl.Date, "registered": pl.Int64} | {m: pl.Float64 for m in MEASURES}
    if df.is_empty():
        return pl.DataFrame(schema=schema)
    if "scope" not in df.columns:
        df = df.with_columns(pl.lit(None, pl.String).alias("scope"))
    totals = df.filter(pl.col("scope") == SCOPE_TOTAL)
    # deliveries recorded with their PCN totals use them; older ones sum the quintile rows
    df = df.filter(
        (pl.col("scope") != SCOPE_TOTAL).fill_null(True)
        & ~pl.col("extract_date").is_in(totals["extract_date"].implode())
    )
    from_totals = totals.select(
        "extract_date",
        _published_ints(pl.col("registered")),
        *MEASURES,
    )
    policy = DisclosurePolicy.from_env()
    texts = ["registered", *PUBLISHED_COUNTS]
    df = df.with_columns(_published_ints(pl.col(c)).fill_null(0) for c in texts)
    sums = df.group_by("extract_date").agg(pl.col(c).sum() for c in texts)
    rates = []
    for m, (num, den, per) in RATE_COUNTS.items():
        d = pl.col(den or "registered")
        rate = (pl.col(num) * per / d).round(1)
        ok = (pl.col(num) >= policy.min_rate_events) & (d > 0)
        rates.append(pl.when(ok).then(rate).otherwise(None).alias(m))
    summed = sums.select("extract_date", "registered", *rates) if df.height else from_totals.clear()
    return pl.concat([from_totals.cast(schema), summed.cast(schema)]).sort("extract_date")


def history_metadata(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> dict[str, object]:
    """This delivery's headline figures, disclosure-controlled, as plain numbers comparable
    across deliveries (Dagster plots numeric metadata over materialisations): registered
    (rounded), the key measures for all PCNs, rows quarantined, the model's validation AUROC
    and Brier score (None when not trained)."""
    policy = DisclosurePolicy.from_env()
    trend = pcn_measure_trend(con, ALL_PCNS).filter(pl.col("extract_date") == extract_date)
    out: dict[str, object] = {}
    if trend.height:
        row = trend.row(0, named=True)
        if row["registered"] is not None:  # None: suppressed (a PCN of 1-7 patients)
            out["registered"] = rounded_value(row["registered"], policy)
        out |= {m: row[m] for m in MEASURES}
    dq = con.execute(
        f"SELECT sum(rows_delivered), sum(rows_quarantined) FROM {HISTORY_DATA_QUALITY} "
        "WHERE extract_date = ?",
        [extract_date],
    ).fetchone()
    if dq[0] is not None:
        out["rows_delivered"] = rounded_value(int(dq[0]), policy)
        out["rows_quarantined"] = _published_int(protect_value(int(dq[1] or 0), policy))
    model = con.execute(
        f"SELECT status, validation_auroc, validation_brier FROM {HISTORY_MODEL} "
        "WHERE extract_date = ?",
        [extract_date],
    ).fetchone()
    if model:
        out["model_status"] = model[0]
        out["validation_auroc"] = model[1]
        out["validation_brier"] = model[2]
    return out


def history_markdown(con: duckdb.DuckDBPyConnection) -> str:
    """A Markdown table, one row per delivery: registered, key measures (all PCNs), cohort
    members (all PCNs, all cohorts: published), rows quarantined, model status and AUROC."""
    trend = pcn_measure_trend(con, ALL_PCNS)
    sizes = protected_cohort_sizes(con).with_columns(_published_ints(pl.col("members")))
    policy = DisclosurePolicy.from_env()
    dates = con.execute(
        f"SELECT extract_date FROM {HISTORY_MODEL} ORDER BY extract_date"
    ).fetchall()
    head = (
        "| delivery | registered | % 5+ LTCs | % frail 65+ | emerg. adm. /1,000 | "
        "cohort members | rows quarantined | model | AUROC |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|---:|"]

    def fmt(v) -> str:
        return "" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))

    for (d,) in dates:
        t = trend.filter(pl.col("extract_date") == d)
        reg = t["registered"][0] if t.height else None
        reg = rounded_value(reg, policy) if reg is not None else None
        ms = [t[m][0] if t.height else None for m in MEASURES]
        members = sizes.filter(pl.col("extract_date") == d)["members"].sum()
        q = con.execute(
            f"SELECT sum(rows_quarantined) FROM {HISTORY_DATA_QUALITY} WHERE extract_date = ?",
            [d],
        ).fetchone()[0]
        status, auroc = con.execute(
            f"SELECT status, validation_auroc FROM {HISTORY_MODEL} WHERE extract_date = ?", [d]
        ).fetchone()
        cells = [
            d.isoformat(),
            fmt(reg),
            *(fmt(m) for m in ms),
            fmt(int(members)),
            protect_value(int(q)) if q is not None else "",
            status or "",
            f"{auroc:.3f}" if auroc is not None else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the trend chart


def trend_data(con: duckdb.DuckDBPyConnection, pcn_code: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What ``pcn_code``'s trend chart draws, from the history tables, published values only:
    (cohort sizes, key measures) across deliveries."""
    sizes = protected_cohort_sizes(con, pcn_code).with_columns(_published_ints(pl.col("members")))
    return sizes, pcn_measure_trend(con, pcn_code)


def trend_figure_png(con: duckdb.DuckDBPyConnection, pcn_code: str, path: Path) -> Path:
    """Draw ``pcn_code``'s trend chart (cohort sizes and key measures across deliveries, from
    the history tables, published values only) to ``path`` (atomic)."""
    return draw_trend_png(pcn_code, *trend_data(con, pcn_code), path)


@matplotlib.rc_context(PLAIN_TEXT)
def draw_trend_png(pcn_code: str, sizes: pl.DataFrame, measures: pl.DataFrame, path: Path) -> Path:
    """Draw a trend chart of :func:`trend_data` to ``path`` (atomic); no warehouse needed."""
    fig, axes = plt.subplots(1 + len(MEASURES), 1, figsize=(8.27, 11.69), sharex=True)
    fig.suptitle(f"{pcn_code}: trends across deliveries", fontsize=13)
    ax = axes[0]
    for cohort in sorted(sizes["cohort_id"].unique().to_list()):
        c = sizes.filter(pl.col("cohort_id") == cohort)
        ax.plot(c["extract_date"].to_list(), c["members"].to_list(), marker="o", label=cohort)
    ax.set_title("Cohort members (rounded to 5; 1-7 suppressed, not drawn)", fontsize=10)
    if sizes.height:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax, m in zip(axes[1:], MEASURES, strict=True):
        if measures.height:
            ax.plot(
                measures["extract_date"].to_list(), measures[m].to_list(), marker="o", color="C0"
            )
        ax.set_title(MEASURE_LABELS[m], fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("extract date")
    fig.autofmt_xdate()
    fig.text(
        0.01,
        0.005,
        "Published values only (statistical disclosure control): counts rounded to 5, 1-7 "
        "suppressed; rates from protected counts, hidden on fewer than 10 events.",
        fontsize=7,
        color="#333333",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata=PNG_METADATA)
    plt.close(fig)
    return path


def write_trend_charts(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    extract_date: dt.date,
    pcn_codes: list[str] | None = None,
    workers: int | None = None,
) -> dict[str, Path]:
    """``out_dir/<pcn>/trends.png`` for every PCN (or each of ``pcn_codes``) with cohort sizes
    in this delivery (the PCN folders of the exports), listed in the folder's manifest.
    Returns pcn -> path.

    The data are read here; ``workers`` > 1 draws the charts in that many worker processes
    (:func:`phm.workers.worker_context`; default: :func:`phm.workers.worker_count`,
    ``PHM_WORKERS``, from 4 PCNs, since starting a worker costs about two charts); the
    manifests are updated here, in PCN order. The files are byte-identical to drawing in
    this process."""
    pcns = [
        r[0]
        for r in con.execute(
            f"SELECT DISTINCT pcn_code FROM {COHORT_SIZE_HISTORY} WHERE extract_date = ? "
            "AND pcn_code <> 'unknown' ORDER BY pcn_code",
            [extract_date],
        ).fetchall()
    ]
    if pcn_codes is not None:
        pcns = [p for p in pcns if p in set(pcn_codes)]
    jobs = [(pcn, *trend_data(con, pcn), Path(out_dir) / pcn / TREND_FILE) for pcn in pcns]
    n = n_workers(workers, len(jobs), worth_it=len(jobs) >= 4)
    if n <= 1:
        paths = [draw_trend_png(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=n, mp_context=worker_context()) as pool:
            paths = list(pool.map(draw_trend_png, *zip(*jobs, strict=True)))
    written = {}
    for pcn, path in zip(pcns, paths, strict=True):  # in PCN order, as in one process
        add_to_manifest(path.parent, extract_date, pcn, {TREND_FILE: (None, path.read_bytes())})
        written[pcn] = path
    return written
