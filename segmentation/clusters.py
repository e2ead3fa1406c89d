"""Needs-based clusters: k-means on standardised needs features, k chosen by silhouette.

Features (one row per patient of ``marts.patient_measures``): age, long-term condition counts
(all, mental, physical), eFI score, HFRS (0 without a spell), service use in the last 12
months (GP practice appointments attended, A&E attendances, emergency admissions, bed days,
outpatient attendances), area deprivation (11 - IMD 2019 decile, so higher = more deprived;
5.5 when unknown), police notifications and social prescribing referrals in the last 12
months. Counts are log(1 + x) transformed; everything is standardised (mean 0, sd 1).

k is chosen from 3..8 by the mean silhouette coefficient (Rousseeuw, J Comput Appl Math
1987;20:53-65) of a seeded random sample (5,000 patients by default); ties go to the smaller
k. k-means (Lloyd; k-means++ starts, 10 initialisations) uses the same seed, so a seed gives
the same clusters. Clusters are numbered by size (1 = largest) and described in words by the
features whose cluster mean differs most from the population mean (in standard deviations).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

from phm.disclosure import protect_count
from phm.measures._sql import date_literal, require_tables, window_start
from phm.warehouse import current_extract_date, write_table
from segmentation.errors import InsufficientData

CLUSTERS_TABLE = "marts.clusters"
PROFILES_TABLE = "marts.cluster_profiles"

#: name, SQL over marts.patient_measures (pm) and the derived columns, log-transform?, words
#: (above average, below average) used to describe a cluster
NEEDS_FEATURES: tuple[tuple[str, str, bool, str, str | None], ...] = (
    ("age", "CAST(pm.age AS DOUBLE)", False, "older", "younger"),
    ("ltc_count", "pm.ltc_count", True, "multimorbidity", "few long-term conditions"),
    ("mental_ltc_count", "pm.mental_ltc_count", True, "mental health conditions", None),
    ("physical_ltc_count", "pm.physical_ltc_count", True, "physical long-term conditions", None),
    ("efi_score", "pm.efi_score", False, "frailty", None),
    ("hfrs_score", "coalesce(CAST(pm.hfrs_score AS DOUBLE), 0)", True, "hospital frailty", None),
    (
        "gp_appointments_attended_12m",
        "pm.gp_appointments_attended_12m",
        True,
        "frequent GP practice contact",
        "little GP practice contact",
    ),
    ("ae_attendances_12m", "pm.ae_attendances_12m", True, "A&E use", None),
    ("emergency_admissions_12m", "pm.emergency_admissions_12m", True, "emergency admissions", None),
    ("bed_days_12m", "pm.bed_days_12m", True, "days in hospital", None),
    ("op_attendances_12m", "pm.op_attendances_12m", True, "outpatient care", None),
    (
        "deprivation",
        "11 - coalesce(CAST(pm.imd2019_decile AS DOUBLE), 5.5)",
        False,
        "more deprived areas",
        "less deprived areas",
    ),
    ("ppn_12m", "coalesce(ppn.n, 0)", True, "police safeguarding notifications", None),
    ("sp_referrals_12m", "coalesce(sp.n, 0)", True, "social prescribing", None),
)

#: a feature describes a cluster when its cluster mean is at least this many SDs from average
DESCRIBE_MIN_Z = 0.3
K_RANGE = range(3, 9)


@dataclass
class ClusterResult:
    k: int
    silhouettes: dict[int, float]
    sample_size: int
    seed: int
    profiles: pl.DataFrame
    rows: int


def needs_features(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> pl.DataFrame:
    """One row per patient: ``person_id``, ``sex`` and the raw needs features."""
    ed = date_literal(extract_date)
    w0 = window_start(extract_date, 365)
    cols = ",\n".join(f"CAST({sql} AS DOUBLE) AS {name}" for name, sql, *_ in NEEDS_FEATURES)
    return con.execute(
        f"""
        WITH ppn AS (
            SELECT i.person_id, count(*) AS n
            FROM staging.ppn p JOIN marts.person_identity i USING (nhs_number)
            WHERE p.shared_date BETWEEN {w0} AND {ed} GROUP BY i.person_id
        ),
        sp AS (
            SELECT i.person_id, count(*) AS n
            FROM staging.sp_referrals r JOIN marts.person_identity i USING (nhs_number)
            WHERE r.referral_date BETWEEN {w0} AND {ed} GROUP BY i.person_id
        )
        SELECT pm.person_id, pm.sex, {cols}
        FROM marts.patient_measures pm
        LEFT JOIN ppn USING (person_id)
        LEFT JOIN sp USING (person_id)
        ORDER BY pm.person_id
        """
    ).pl()


def _design(df: pl.DataFrame) -> np.ndarray:
    X = df.select(name for name, *_ in NEEDS_FEATURES).to_numpy().astype(np.float64)
    for j, (_, _, logged, *_) in enumerate(NEEDS_FEATURES):
        if logged:
            X[:, j] = np.log1p(np.maximum(X[:, j], 0))
    return StandardScaler().fit_transform(X)


def choose_k(
    Z: np.ndarray, seed: int, k_range=K_RANGE, sample_size: int = 5000
) -> tuple[int, dict[int, float], dict[int, np.ndarray]]:
    """Fit k-means for each k; silhouette on a seeded sample; (best k, scores, labels by k)."""
    n = Z.shape[0]
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, sample_size), replace=False))
    scores, labels = {}, {}
    for k in k_range:
        if k >= len(sample):
            break
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(Z)
        labels[k] = km.labels_
        scores[k] = float(silhouette_score(Z[sample], km.labels_[sample]))
    if not scores:
        raise InsufficientData(f"too few patients ({n}) to cluster")
    best = max(scores, key=lambda k: (round(scores[k], 12), -k))
    return best, scores, labels


def _describe(z_means: np.ndarray) -> str:
    parts = []
    for j in np.argsort(-np.abs(z_means), kind="stable"):
        z = z_means[j]
        if abs(z) < DESCRIBE_MIN_Z or len(parts) == 3:
            break
        _, _, _, high, low = NEEDS_FEATURES[j]
        if z > 0:
            parts.append(f"more {high}" if not high.startswith(("more", "older")) else high)
        elif low is not None:
            parts.append(low)
        # below-average use of a rare service is not a description (nearly everyone has none)
    return ", ".join(parts) if parts else "close to the population average"


def build_clusters(
    con: duckdb.DuckDBPyConnection,
    seed: int = 0,
    *,
    extract_date: dt.date | None = None,
    k_range=K_RANGE,
    sample_size: int = 5000,
) -> ClusterResult:
    """Cluster the current population; write ``marts.clusters`` and ``marts.cluster_profiles``.

    ``marts.clusters(person_id, cluster, cluster_label)``;
    ``marts.cluster_profiles(cluster, cluster_label, description, patients, share_pct,
    mean_<feature>..., pct_female, silhouette, k)`` with ``patients`` disclosure-controlled
    (:func:`phm.disclosure.protect_count`) and ``share_pct`` computed from it.
    """
    require_tables(con, "marts.patient_measures", "marts.person_identity")
    extract_date = extract_date or current_extract_date(con)
    df = needs_features(con, extract_date)
    Z = _design(df)
    k, scores, labels_by_k = choose_k(Z, seed, k_range, sample_size)
    raw = labels_by_k[k]
    # number clusters by size (largest first), ties by the k-means label
    sizes = np.bincount(raw, minlength=k)
    order = sorted(range(k), key=lambda c: (-sizes[c], c))
    renumber = np.empty(k, dtype=np.int32)
    renumber[order] = np.arange(1, k + 1)
    cluster = renumber[raw]

    names = [name for name, *_ in NEEDS_FEATURES]
    labels, rows = {}, []
    total = len(cluster)
    for c in range(1, k + 1):
        m = cluster == c
        z_means = Z[m].mean(axis=0)
        label = _describe(z_means)
        labels[c] = f"{c}: {label}"
        sub = df.filter(pl.Series(m))
        means = {f"mean_{n}": float(sub[n].mean()) for n in names}
        rows.append(
            {
                "cluster": c,
                "cluster_label": labels[c],
                "n": int(m.sum()),
                "pct_female": float((sub["sex"] == "F").mean() * 100),
                **means,
            }
        )
    prof = pl.DataFrame(rows)
    prof = prof.with_columns(protect_count(pl.col("n")).alias("patients"))
    prof = prof.with_columns(
        (pl.col("patients").cast(pl.Int64, strict=False) / pl.lit(total) * 100)
        .round(1)
        .alias("share_pct")
    )
    prof = prof.with_columns(
        pl.struct(pl.all())
        .map_elements(_profile_sentence, return_dtype=pl.String)
        .alias("description"),
        pl.lit(scores[k]).alias("silhouette"),
        pl.lit(k).alias("k"),
    )
    prof = prof.select(
        "cluster",
        "cluster_label",
        "description",
        "patients",
        "share_pct",
        *[f"mean_{n}" for n in names],
        "pct_female",
        "silhouette",
        "k",
    )
    assign = pl.DataFrame(
        {
            "person_id": df["person_id"],
            "cluster": cluster.astype(np.int32),
            # cluster c's label is at position c (0 unused)
            "cluster_label": np.array(["", *(labels[c] for c in range(1, k + 1))])[cluster],
        }
    )
    write_table(con, CLUSTERS_TABLE, assign)
    write_table(con, PROFILES_TABLE, prof)
    return ClusterResult(
        k=k,
        silhouettes=scores,
        sample_size=min(total, sample_size),
        seed=seed,
        profiles=prof,
        rows=assign.height,
    )


def _profile_sentence(r: dict) -> str:
    share = "" if r["share_pct"] is None else f", {r['share_pct']:.1f}% of the population"
    return (
        f"{r['patients']} patients{share}: mean age {r['mean_age']:.0f}, "
        f"{r['pct_female']:.0f}% female, {r['mean_ltc_count']:.1f} long-term conditions, "
        f"eFI {r['mean_efi_score']:.2f}, {r['mean_gp_appointments_attended_12m']:.1f} GP practice "
        f"appointments, {r['mean_ae_attendances_12m']:.2f} A&E attendances, "
        f"{r['mean_emergency_admissions_12m']:.2f} emergency admissions and "
        f"{r['mean_bed_days_12m']:.1f} bed days per person in the last 12 months; "
        f"deprivation {11 - r['mean_deprivation']:.1f} (mean IMD decile, 1 = most deprived); "
        f"{r['mean_ppn_12m']:.3f} police notifications and {r['mean_sp_referrals_12m']:.3f} "
        "social prescribing referrals per person."
    )
