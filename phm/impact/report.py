"""The PCN leads' impact report: ``exports/<date>/<pcn_code>/impact_report.html`` and CSVs.

Self-contained: no JavaScript, no external files; charts are PNG images embedded as base64
(matplotlib, Agg backend, ``text.usetex`` off and every label with ``$`` escaped so that no
name is parsed as mathtext). Every delivered string is HTML-escaped.

Disclosure control: every count is shown as ``*`` (1-7) or rounded to 5 (by default); the
caseload counts of a PCN (monthly rows and the 12-month totals, which they add up to) go
through :func:`phm.disclosure.protect_linked_tables` together, so no suppressed month or
category can be recovered by differencing (:func:`caseload_table`, :func:`caseload_totals`);
shares are computed from the rounded
counts and shown only when the count is shown and the denominator is at least
``MIN_PEOPLE``; any mean, estimate or interval resting on fewer than ``MIN_PEOPLE`` people
is not shown. Outputs are byte-identical for the same inputs.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from pathlib import Path

import polars as pl

from phm.disclosure import DisclosurePolicy, protect_count, protect_linked_tables
from phm.exports import add_to_manifest
from phm.files import atomic_write_bytes, csv_bytes
from phm.impact.caseload import FUNNEL_STAGES, STATUS_ORDER
from phm.impact.interventions import OUTCOMES
from phm.workers import ordered_map, start_workers

MIN_PEOPLE = 10
HIDDEN = ""

RTM_PARAGRAPH = (
    "Why the two columns differ: people are usually referred when things are at their "
    "worst - a bad month with more GP visits, an A&E attendance or an admission. For most "
    "people, a bad spell passes on its own, so their use of services falls afterwards "
    "whether or not they were helped. This is called regression to the mean. A plain "
    "before-and-after comparison of referred people counts that natural recovery as if "
    "the service caused it, so it overstates the effect. The matched comparison follows "
    "similar people who were not referred at the same time, chosen because their own use "
    "rose and fell in the same way in the months before; the change in that group shows "
    "how much of the fall would have happened anyway. The difference between the two "
    "groups' changes (difference-in-differences) is the better estimate of what the "
    "service did, and its 95% interval shows how uncertain it is."
)


def _esc(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _mpl_text(x) -> str:
    # figures draw plain text (``text.parse_math`` is off in :func:`_pyplot`): no escaping
    return str(x)


def _csv(df: pl.DataFrame) -> bytes:
    return csv_bytes(df, float_precision=4)


def _rounded_int(s: str | None) -> int | None:
    return int(s) if s is not None and s.isdigit() else None


def _fmt(x, digits: int = 2) -> str:
    if x is None:
        return HIDDEN
    return f"{x:.{digits}f}"


# ---------------------------------------------------------------------------------------
# disclosure-controlled tables


def caseload_table(
    caseload: pl.DataFrame,
    pcn_code: str,
    policy: DisclosurePolicy | None = None,
    sort: bool = True,
    *,
    extract_date: dt.date | None = None,
    months: int = 12,
) -> pl.DataFrame:
    """One PCN's monthly caseload rows with counts protected and shares/means hidden under 10.

    With ``extract_date``, the monthly counts are protected together with the ``months``
    period totals :func:`caseload_totals` publishes beside them (the months of the period
    add up to its total), so a suppressed month cannot be worked out as the total minus the
    other months."""
    p = policy or DisclosurePolicy.from_env()
    df = caseload.filter(pl.col("pcn_code") == pcn_code)
    if sort:
        df = df.sort("month", "dimension", "category")
    totals = _period_totals(caseload, pcn_code, extract_date, months) if extract_date else None
    monthly, _ = _protect_caseload(df, totals, p)
    return _caseload_rows(monthly)


def _caseload_rows(df: pl.DataFrame) -> pl.DataFrame:
    n_r = pl.col("n_shown").map_elements(_rounded_int, return_dtype=pl.Int64)
    d_r = pl.col("denominator_shown").map_elements(_rounded_int, return_dtype=pl.Int64)
    is_stat = pl.col("category").is_in(["mean", "median"])
    return df.select(
        "pcn_code",
        pl.col("month").cast(pl.String),
        "dimension",
        "category",
        pl.col("n_shown").alias("n"),
        pl.col("denominator_shown").alias("referrals"),
        pl.when(~is_stat & (pl.col("denominator") >= MIN_PEOPLE) & n_r.is_not_null() & (d_r > 0))
        .then(n_r / d_r)
        .otherwise(None)
        .alias("share"),
        pl.when(is_stat & (pl.col("n") >= MIN_PEOPLE))
        .then(pl.col("value"))
        .otherwise(None)
        .alias("value"),
    )


#: caseload dimensions whose categories add up to the referrals of the month
PARTITIONS = ("source", "status", "contact_attempts")
#: (dimension, category) rows whose ``n`` equals another row's (count(*) of the same people)
_SAME_COUNT = {
    ("contact_attempts", "mean"): ("referrals", "all"),
    ("days_to_first_contact", "median"): ("days_to_first_contact", "mean"),
}


def _caseload_links(tables: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """The equations of the caseload tables (``monthly`` and, if there, ``total``): per
    period, the categories of a partitioning dimension add up to the referrals; rows counting
    the same people are equal; per (dimension, category), the months of the period add up to
    its total."""
    parts: list[pl.DataFrame] = []

    def add(members: pl.DataFrame, group: list[str]) -> None:
        start = sum(int(x["equation"].n_unique()) for x in parts)
        ids = (
            members.select(group)
            .unique()
            .sort(group)
            .with_row_index("equation", offset=start)
            .with_columns(pl.col("equation").cast(pl.Int64))
        )
        parts.append(members.join(ids, on=group).select("equation", "table", "row", "parent"))

    rows = {
        name: df.select(
            pl.lit(name).alias("table"),
            pl.int_range(pl.len(), dtype=pl.Int64).alias("row"),
            pl.col("month").cast(pl.String).alias("period"),
            "dimension",
            "category",
        )
        for name, df in tables.items()
    }
    is_stat = pl.col("category").is_in(["mean", "median"])
    for name, r in rows.items():
        referrals = r.filter((pl.col("dimension") == "referrals") & (pl.col("category") == "all"))
        for dim in PARTITIONS:
            children = r.filter((pl.col("dimension") == dim) & ~is_stat)
            members = pl.concat(
                [
                    referrals.with_columns(pl.lit(True).alias("parent")),
                    children.with_columns(pl.lit(False).alias("parent")),
                ]
            ).with_columns(pl.lit(f"{name}/{dim}").alias("eq"))
            members = members.filter(pl.col("period").is_in(children["period"].implode()))
            add(members, ["eq", "period"])
        for (dim, cat), (pdim, pcat) in _SAME_COUNT.items():
            child = r.filter((pl.col("dimension") == dim) & (pl.col("category") == cat))
            parent = r.filter((pl.col("dimension") == pdim) & (pl.col("category") == pcat))
            both = child.select("period").join(parent.select("period"), on="period")
            members = pl.concat(
                [
                    parent.with_columns(pl.lit(True).alias("parent")),
                    child.with_columns(pl.lit(False).alias("parent")),
                ]
            ).filter(pl.col("period").is_in(both["period"].implode()))
            add(members.with_columns(pl.lit(f"{name}/{dim}/{cat}").alias("eq")), ["eq", "period"])
    if "total" in rows:
        total = rows["total"].drop("period").with_columns(pl.lit(True).alias("parent"))
        months = (
            rows["monthly"]
            .filter(pl.col("period").is_in(tables["total"]["_months"].explode().implode()))
            .join(total.select("dimension", "category"), on=["dimension", "category"], how="semi")
            .drop("period")
            .with_columns(pl.lit(False).alias("parent"))
        )
        add(pl.concat([total, months]), ["dimension", "category"])
    return (
        pl.concat(parts)
        if parts
        else pl.DataFrame(
            schema={"equation": pl.Int64, "table": pl.String, "row": pl.Int64, "parent": pl.Boolean}
        )
    )


def _protect_caseload(
    monthly: pl.DataFrame, totals: pl.DataFrame | None, policy: DisclosurePolicy
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """``n_shown`` and ``denominator_shown`` of one PCN's monthly rows (and of its period
    totals, if given) through :func:`phm.disclosure.protect_linked_tables`: primary and
    complementary suppression over every equation of :func:`_caseload_links`. The
    ``denominator`` of a row is its period's referrals, so it is shown as the referrals row
    is."""
    tables = {"monthly": monthly}
    if totals is not None and not totals.is_empty():
        tables["total"] = totals
    links = _caseload_links(tables)
    shown = protect_linked_tables(tables, ["n"], links, policy=policy)
    out = []
    for name, df in tables.items():
        prot = shown[name]
        refs = prot.filter(
            (pl.col("dimension") == "referrals") & (pl.col("category") == "all")
        ).select(pl.col("month").alias("_m"), pl.col("n").alias("_ref"))
        df = df.with_columns(prot["n"].alias("n_shown")).join(
            refs, left_on="month", right_on="_m", how="left", maintain_order="left"
        )
        # the month's referrals as the referrals row shows them (else as protect_count would)
        df = df.with_columns(
            pl.coalesce("_ref", protect_count(pl.col("denominator"), policy)).alias(
                "denominator_shown"
            )
        ).drop("_ref")
        out.append(df)
    return out[0], (out[1] if len(out) > 1 else None)


def _period_totals(
    caseload: pl.DataFrame, pcn_code: str, extract_date: dt.date, months: int
) -> pl.DataFrame:
    """One PCN's referrals made in the ``months`` calendar months up to the extract date,
    summed per dimension and category (means re-weighted by their counts; medians cannot be
    summed and are left out); ``_months``: the months summed."""
    # the extract month and the (months - 1) calendar months before it
    k = extract_date.year * 12 + extract_date.month - 1 - (months - 1)
    start = dt.date(k // 12, k % 12 + 1, 1)
    df = caseload.filter(
        (pl.col("pcn_code") == pcn_code)
        & (pl.col("month") >= start)
        & (pl.col("month") <= extract_date)
        & (pl.col("category") != "median")
    )
    total = int(df.filter(pl.col("dimension") == "referrals")["n"].sum() or 0)
    agg = (
        df.group_by("dimension", "category")
        .agg(
            pl.col("n").sum().alias("n"),
            ((pl.col("value") * pl.col("n")).sum() / pl.col("n").sum()).alias("value"),
            pl.col("month").cast(pl.String).unique().sort().alias("_months"),
        )
        .with_columns(
            pl.lit(pcn_code).alias("pcn_code"),
            pl.lit(start).alias("month"),
            pl.lit(total, pl.Int64).alias("denominator"),
        )
    )
    order = {c: i for i, c in enumerate(STATUS_ORDER)}
    agg = (
        agg.with_columns(
            pl.col("category").replace_strict(order, default=99, return_dtype=pl.Int64).alias("_o")
        )
        .sort("dimension", "_o", "category")
        .drop("_o")
    )
    return agg.select(
        "pcn_code", "month", "dimension", "category", "n", "denominator", "value", "_months"
    )


def caseload_totals(
    caseload: pl.DataFrame,
    pcn_code: str,
    extract_date: dt.date,
    months: int = 12,
    policy: DisclosurePolicy | None = None,
) -> pl.DataFrame:
    """One PCN's referrals made in the ``months`` calendar months up to the extract date,
    summed per dimension and category (means re-weighted by their counts; medians cannot be
    summed and are left out), disclosure-controlled together with the monthly rows
    (:func:`caseload_table` with the same ``extract_date``)."""
    p = policy or DisclosurePolicy.from_env()
    monthly = caseload.filter(pl.col("pcn_code") == pcn_code).sort("month", "dimension", "category")
    totals = _period_totals(caseload, pcn_code, extract_date, months)
    _, shown = _protect_caseload(monthly, totals, p)
    if shown is None:
        shown = totals.with_columns(
            pl.lit(None, pl.String).alias("n_shown"),
            pl.lit(None, pl.String).alias("denominator_shown"),
        )
    return _caseload_rows(shown.drop("_months")).drop("month")


def funnel_table(
    funnel: pl.DataFrame, pcn_code: str, policy: DisclosurePolicy | None = None
) -> pl.DataFrame:
    p = policy or DisclosurePolicy.from_env()
    df = funnel.filter(pl.col("pcn_code") == pcn_code).sort("cohort_id")
    return df.select(
        "cohort_id", "pcn_code", *(protect_count(pl.col(s), p).alias(s) for s in FUNNEL_STAGES)
    )


def estimates_table(
    estimates: pl.DataFrame, policy: DisclosurePolicy | None = None
) -> pl.DataFrame:
    """Area-wide estimates; figures hidden when fewer than 10 treated (or comparison) people."""
    p = policy or DisclosurePolicy.from_env()
    enough = (pl.col("n_treated") >= MIN_PEOPLE) & (
        (pl.col("method") == "before_after") | (pl.col("n_comparison") >= MIN_PEOPLE)
    )
    figures = [
        "estimate",
        "ci_lower",
        "ci_upper",
        "mean_before_treated",
        "mean_after_treated",
        "mean_before_comparison",
        "mean_after_comparison",
    ]
    return estimates.sort("intervention", "outcome", "window_months", "method").select(
        "intervention",
        "outcome",
        "window_months",
        "method",
        *(pl.when(enough).then(pl.col(c)).otherwise(None).alias(c) for c in figures[:3]),
        protect_count(pl.col("n_treated"), p).alias("n_treated"),
        pl.when(pl.col("method") == "matched_did")
        .then(protect_count(pl.col("n_comparison"), p))
        .otherwise(None)
        .alias("n_comparison"),
        "unit",
        *(pl.when(enough).then(pl.col(c)).otherwise(None).alias(c) for c in figures[3:]),
    )


def outcome_table(
    scores: pl.DataFrame, pcn_code: str, policy: DisclosurePolicy | None = None
) -> pl.DataFrame:
    """Outcome-score changes for a PCN; every figure hidden when fewer than 10 pairs."""
    p = policy or DisclosurePolicy.from_env()
    df = scores.filter(pl.col("pcn_code") == pcn_code).sort("measure")
    enough = pl.col("n_paired") >= MIN_PEOPLE
    figs = [
        "mean_baseline",
        "mean_followup",
        "mean_change",
        "ci_lower",
        "ci_upper",
        "t_test_p",
        "wilcoxon_p",
        "cohens_dz",
    ]
    base_ok = pl.col("n_baseline") >= MIN_PEOPLE
    return df.select(
        "pcn_code",
        "measure",
        "title",
        protect_count(pl.col("n_not_yet_due"), p).alias("n_not_yet_due"),
        protect_count(pl.col("n_baseline"), p).alias("n_baseline"),
        protect_count(pl.col("n_paired"), p).alias("n_paired"),
        pl.when(base_ok).then(pl.col("completion_rate")).otherwise(None).alias("completion_rate"),
        *(pl.when(enough).then(pl.col(c)).otherwise(None).alias(c) for c in figs),
        pl.when(enough & pl.col("n_improved_mid").is_not_null())
        .then(protect_count(pl.col("n_improved_mid"), p))
        .otherwise(None)
        .alias("n_improved_mid"),
        pl.when(enough & (pl.col("n_improved_mid").is_null() | (pl.col("n_improved_mid") >= 0)))
        .then(pl.col("share_improved_mid"))
        .otherwise(None)
        .alias("share_improved_mid"),
        "mid",
        "mid_source",
    )


# ---------------------------------------------------------------------------------------
# charts


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.usetex"] = False
    matplotlib.rcParams["text.parse_math"] = False
    matplotlib.rcParams["svg.hashsalt"] = "phm"
    import matplotlib.pyplot as plt

    return plt


def estimates_chart(est: pl.DataFrame, window: int = 12) -> str | None:
    """Naive before/after next to the matched estimate, per outcome (base64 PNG)."""
    df = est.filter((pl.col("window_months") == window) & pl.col("estimate").is_not_null())
    if df.height == 0:
        return None
    plt = _pyplot()
    outs = [o for o in OUTCOMES if df.filter(pl.col("outcome") == o).height]
    fig, axes = plt.subplots(1, len(outs), figsize=(3.2 * len(outs), 3.2))
    axes = [axes] if len(outs) == 1 else list(axes)
    for ax, o in zip(axes, outs, strict=True):
        sub = df.filter(pl.col("outcome") == o)
        labels, vals, lo, hi = [], [], [], []
        for method, name in (
            ("before_after", "naive\nbefore/after"),
            ("matched_did", "matched\nDiD"),
        ):
            r = sub.filter(pl.col("method") == method)
            if r.height:
                labels.append(name)
                vals.append(r["estimate"][0])
                lo.append(
                    r["estimate"][0]
                    - (r["ci_lower"][0] if r["ci_lower"][0] is not None else r["estimate"][0])
                )
                hi.append(
                    (r["ci_upper"][0] if r["ci_upper"][0] is not None else r["estimate"][0])
                    - r["estimate"][0]
                )
        ax.bar(
            range(len(vals)),
            vals,
            yerr=[lo, hi],
            color=["#bbbbbb", "#005eb8"][: len(vals)],
            capsize=4,
        )
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(vals)), [_mpl_text(x) for x in labels])
        ax.set_title(_mpl_text(OUTCOMES[o][0]), fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(_mpl_text(f"Change per person over {window} months (95% interval)"), fontsize=10)
    fig.tight_layout()
    return _png(fig)


def referrals_chart(case: pl.DataFrame) -> str | None:
    df = case.filter(pl.col("dimension") == "referrals").tail(24)
    vals = [_rounded_int(v) for v in df["n"].to_list()]
    if not df.height:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.bar(range(df.height), [v if v is not None else 0 for v in vals], color="#005eb8")
    ax.set_xticks(range(df.height), [_mpl_text(m[:7]) for m in df["month"].to_list()], rotation=90)
    ax.set_title(_mpl_text("Referrals per month (rounded; * months shown as 0)"), fontsize=10)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------
# HTML


def _table(df: pl.DataFrame, columns: list[tuple[str, str]], digits: int = 2) -> str:
    head = "".join(f"<th>{_esc(label)}</th>" for _, label in columns)
    body = []
    for row in df.iter_rows(named=True):
        cells = []
        for col, _ in columns:
            v = row[col]
            if isinstance(v, float) and col.endswith("_p"):
                v = "<0.001" if v < 0.001 else _fmt(v, 3)
            elif isinstance(v, float):
                v = _fmt(v, digits)
            cells.append(f"<td>{_esc(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return f"<p>{_esc('No chart: too few people to show.')}</p>"
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{b64}">'


CSS = (
    "body{font-family:Arial,sans-serif;max-width:1100px;margin:2em auto;color:#212b32}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left}"
    "th{background:#e8edee}.note{color:#4c6272;font-size:13px}"
)


def _pct(x) -> str:
    return HIDDEN if x is None else f"{100 * x:.0f}%"


def render_report(
    *,
    pcn_code: str,
    pcn_name: str | None,
    extract_date: dt.date,
    caseload: pl.DataFrame,
    caseload_raw: pl.DataFrame,
    funnel: pl.DataFrame,
    estimates: pl.DataFrame,
    outcomes_pcn: pl.DataFrame,
    outcomes_all: pl.DataFrame,
    match_summary: dict[str, dict[str, int]] | None = None,
    policy: DisclosurePolicy | None = None,
    estimate_charts: dict[int, str | None] | None = None,
) -> str:
    """The report as an HTML string. ``caseload``, ``funnel``, ``estimates`` and the outcome
    tables are the disclosure-controlled tables; ``caseload_raw`` (marts.caseload_monthly) is
    summed over the last 12 months and then disclosure-controlled. ``estimate_charts``:
    :func:`estimates_chart` of ``estimates`` per window (12 and 6 months), when already drawn
    (the estimates are area-wide, so every PCN's report shows the same charts)."""
    p = policy or DisclosurePolicy.from_env()
    if estimate_charts is None:
        estimate_charts = {w: estimates_chart(estimates, w) for w in (12, 6)}
    title = f"Social prescribing and proactive care: impact and caseload - {pcn_name or pcn_code} ({pcn_code})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="note">{_esc(f"Data as at {extract_date.isoformat()}. Counts are rounded to the nearest {p.round_to}; 1 to {p.suppress_max} shown as *; figures on fewer than {MIN_PEOPLE} people are not shown (blank).")}</p>',
        "<h2>Caseload</h2>",
        _img(referrals_chart(caseload), "referrals per month"),
    ]
    totals = caseload_totals(caseload_raw, pcn_code, extract_date, 12, p)
    for dim, label in (
        ("referrals", "Referrals"),
        ("status", "Status now"),
        ("source", "Referral source"),
        (
            "reason",
            "Referral reasons (a referral may have several, so shares add up to more than 100%)",
        ),
        ("contact_attempts", "Contact attempts (distribution and mean)"),
        ("days_to_first_contact", "Mean days from referral to first contact"),
    ):
        sub = totals.filter(pl.col("dimension") == dim).with_columns(
            pl.col("share").map_elements(_pct, return_dtype=pl.String)
        )
        parts.append(f"<h3>{_esc(label)}: referrals made in the last 12 months</h3>")
        cols = [("category", "category"), ("n", "referrals"), ("share", "share")]
        if dim in ("contact_attempts", "days_to_first_contact"):
            cols.append(("value", "mean"))
        parts.append(_table(sub, cols))
    parts.append(f'<p class="note">{_esc("Month by month figures: impact_caseload.csv.")}</p>')
    parts.append("<h3>Outreach funnel of each proactive cohort (people)</h3>")
    parts.append(
        f'<p class="note">{_esc("Identified: in the cohort now. Referred: a social prescribing referral in the last 12 months. Contacted: first contact made. Engaged: active or seen and discharged.")}</p>'
    )
    parts.append(_table(funnel, [("cohort_id", "cohort"), *((s, s) for s in FUNNEL_STAGES)]))

    parts.append("<h2>Service use: before/after and matched comparison (whole area)</h2>")
    parts.append(f"<p>{_esc(RTM_PARAGRAPH)}</p>")
    if match_summary:
        for iv, s in match_summary.items():
            c = {
                k: protect_count_text(s.get(k), p)
                for k in ("treated", "eligible", "matched", "unmatched")
            }
            text = (
                f"{iv}: {c['treated']} people treated; {c['eligible']} eligible (registered "
                f"for the 12 months before and observed after); {c['matched']} matched; "
                f"{c['unmatched']} found no match."
            )
            parts.append(f'<p class="note">{_esc(text)}</p>')
    parts.append(_img(estimate_charts[12], "naive and matched estimates, 12 months"))
    parts.append(_img(estimate_charts[6], "naive and matched estimates, 6 months"))
    est = estimates.with_columns(
        pl.col("method").replace_strict(
            {"before_after": "before/after (naive)", "matched_did": "matched comparison (DiD)"},
            default=pl.col("method"),
        ),
        pl.col("outcome").replace_strict(
            {k: v[0] for k, v in OUTCOMES.items()}, default=pl.col("outcome")
        ),
    )
    parts.append(
        _table(
            est,
            [
                ("intervention", "intervention"),
                ("outcome", "outcome"),
                ("window_months", "months"),
                ("method", "method"),
                ("estimate", "change"),
                ("ci_lower", "95% CI low"),
                ("ci_upper", "95% CI high"),
                ("n_treated", "treated"),
                ("n_comparison", "comparison"),
                ("unit", "unit"),
            ],
        )
    )
    parts.append("<h2>Outcome scores: change from baseline to 6 months</h2>")
    parts.append(
        f'<p class="note">{_esc("Only referred people complete these questionnaires, so there is no comparison group: some of the change would have happened anyway. Completion = people with a 6-month score among those with a baseline score whose follow-up is due (baseline at least 210 days ago); people who do not complete follow-up are often those doing worse, so low completion biases results upwards.")}</p>'
    )
    cols = [
        ("title", "measure"),
        ("n_not_yet_due", "follow-up not yet due"),
        ("n_baseline", "with baseline, follow-up due"),
        ("n_paired", "with follow-up"),
        ("completion_rate", "completion"),
        ("mean_baseline", "mean baseline"),
        ("mean_followup", "mean at 6 months"),
        ("mean_change", "mean change"),
        ("ci_lower", "95% CI low"),
        ("ci_upper", "95% CI high"),
        ("t_test_p", "paired t p"),
        ("wilcoxon_p", "Wilcoxon p"),
        ("cohens_dz", "effect size dz"),
        ("share_improved_mid", "improved by at least the MID"),
    ]
    for label, df in (("This PCN", outcomes_pcn), ("Whole area", outcomes_all)):
        parts.append(f"<h3>{_esc(label)}</h3>")
        df = df.with_columns(
            pl.col("completion_rate").map_elements(_pct, return_dtype=pl.String),
            pl.col("share_improved_mid").map_elements(_pct, return_dtype=pl.String),
        )
        parts.append(_table(df, cols))
    parts.append("<h3>Minimal important differences</h3><ul>")
    for row in outcomes_all.iter_rows(named=True):
        mid = "none published" if row["mid"] is None else f"{row['mid']:g} points"
        parts.append(f"<li>{_esc(row['title'])}: {_esc(mid)}. {_esc(row['mid_source'])}</li>")
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def protect_count_text(n: int | None, policy: DisclosurePolicy) -> str:
    from phm.disclosure import protect_value

    v = protect_value(n, policy)
    return "" if v is None else v


def write_pcn_reports(
    out_dir: Path,
    extract_date: dt.date,
    *,
    pcns: dict[str, str | None],
    caseload: pl.DataFrame,
    funnel: pl.DataFrame,
    estimates: pl.DataFrame,
    outcome_scores: pl.DataFrame,
    match_summary: dict[str, dict[str, int]] | None = None,
    policy: DisclosurePolicy | None = None,
    workers: int | None = None,
) -> dict[str, list[str]]:
    """Write ``<out_dir>/<pcn_code>/impact_report.html`` and the CSVs for each PCN in
    ``pcns`` (code -> name). Returns the files written per PCN. The files are made in
    ``workers`` processes (:func:`phm.workers.export_workers`: ``PHM_WORKERS``); they
    are the same with any number."""
    workers = start_workers(len(pcns), workers)  # the workers' server starts meanwhile
    p = policy or DisclosurePolicy.from_env()
    est = estimates_table(estimates, p)
    # area-wide: drawn once, the same image in every PCN's report
    charts = {w: estimates_chart(est, w) for w in (12, 6)}
    out_all = outcome_table(outcome_scores, "ALL", p)
    codes = sorted(pcns)
    # per PCN: its rows only (every table below is filtered to the PCN first)
    case_of = caseload.partition_by("pcn_code", as_dict=True, maintain_order=True)
    fun_of = funnel.partition_by("pcn_code", as_dict=True, maintain_order=True)
    scores_of = outcome_scores.partition_by("pcn_code", as_dict=True, maintain_order=True)
    jobs = [
        (
            code,
            pcns[code],
            extract_date,
            case_of.get((code,), caseload.clear()),
            fun_of.get((code,), funnel.clear()),
            est,
            scores_of.get((code,), outcome_scores.clear()),
            out_all,
            charts,
            match_summary,
            p,
        )
        for code in codes
    ]
    # the reports (matplotlib, one thread) in worker processes, the largest PCNs first; the
    # files are written here, in PCN order
    sizes = [job[3].height for job in jobs]
    written = {}
    results = ordered_map(_pcn_files, jobs, workers=workers, sizes=sizes)
    for code, files in zip(codes, results, strict=True):
        folder = Path(out_dir) / code
        for name, (_, data) in files.items():
            atomic_write_bytes(folder / name, data)
        # listed in the PCN's manifest.json beside the direct-care exports (rows: null for HTML)
        add_to_manifest(folder, extract_date, code, files)
        written[code] = sorted(files)
    return written


def _pcn_files(
    code: str,
    name: str | None,
    extract_date: dt.date,
    caseload: pl.DataFrame,
    funnel: pl.DataFrame,
    est: pl.DataFrame,
    outcome_scores: pl.DataFrame,
    out_all: pl.DataFrame,
    charts: dict[int, str | None],
    match_summary: dict[str, dict[str, int]] | None,
    p: DisclosurePolicy,
) -> dict[str, tuple[int | None, bytes]]:
    """One PCN's impact files (name -> (rows, bytes)) from its rows of the caseload, funnel
    and outcome scores."""
    case = caseload_table(caseload, code, p, extract_date=extract_date)
    fun = funnel_table(funnel, code, p)
    out_pcn = outcome_table(outcome_scores, code, p)
    scores = pl.concat([out_pcn, out_all])
    return {
        "impact_caseload.csv": (case.height, _csv(case)),
        "impact_outreach_funnel.csv": (fun.height, _csv(fun)),
        "impact_estimates.csv": (est.height, _csv(est)),
        "impact_outcome_scores.csv": (scores.height, _csv(scores)),
        "impact_report.html": (
            None,
            render_report(
                pcn_code=code,
                pcn_name=name,
                extract_date=extract_date,
                caseload=case,
                caseload_raw=caseload,
                funnel=fun,
                estimates=est,
                outcomes_pcn=out_pcn,
                outcomes_all=out_all,
                match_summary=match_summary,
                policy=p,
                estimate_charts=charts,
            ).encode("utf-8"),
        ),
    }
