"""Checks of the warehouse the pipeline built, beyond row validation (raw = staging +
quarantine, :mod:`phm.validate`): marts keys unique, and cohort sizes plausible against the
previous delivery. Pure functions over a DuckDB connection; the Dagster asset checks
(pipelines/checks.py) call them and put their answers in the check metadata.

Nothing here returns or logs a patient identifier: duplicate keys are counted, not listed,
and cohort sizes are counts per cohort and PCN.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from phm.cohorts import MEMBERS, PATIENTS
from phm.warehouse import table_exists

#: the key of every marts table: the columns that identify one row
MARTS_KEYS: dict[str, tuple[str, ...]] = {
    "marts.person_identity": ("person_id",),
    "marts.patient_measures": ("person_id",),
    "marts.efi": ("person_id",),
    "marts.hfrs": ("person_id",),
    "marts.utilisation": ("person_id",),
    "marts.risk_scores": ("person_id",),
    "marts.segments": ("person_id",),
    "marts.clusters": ("person_id",),
    "marts.impact_people": ("person_id",),
    "marts.ltc_registers": ("person_id", "condition_id"),
    "marts.efi_deficits": ("person_id", "deficit_id"),
    "marts.cohort_members": ("cohort_id", "person_id"),
    "marts.cohort_definitions": ("cohort_id",),
    "marts.cluster_profiles": ("cluster",),
    "marts.model_registry": ("model_file",),
    "marts.caseload_monthly": ("pcn_code", "month", "dimension", "category"),
    "marts.impact_balance": ("intervention", "covariate"),
    "marts.impact_estimates": ("intervention", "outcome", "window_months", "method"),
    "marts.impact_interventions": ("intervention", "person_id"),
    "marts.impact_match_summary": ("intervention",),
    "marts.impact_matched_pairs": ("intervention", "person_id", "match_rank"),
    "marts.impact_monthly_use": ("person_id", "month"),
    "marts.impact_outcome_scores": ("pcn_code", "measure"),
    "marts.impact_outreach_funnel": ("cohort_id", "pcn_code"),
}

#: per-delivery cohort sizes, one row per (extract_date, cohort_id, pcn_code)
COHORT_SIZE_HISTORY = "reports.cohort_size_history"


@dataclass(frozen=True)
class KeyReport:
    """One table's key check: rows, and rows beyond the first for a repeated key value
    (null key values count as repeats: a key has no nulls)."""

    table: str
    key: tuple[str, ...]
    rows: int
    duplicate_rows: int

    @property
    def passed(self) -> bool:
        return self.duplicate_rows == 0


def key_report(con: duckdb.DuckDBPyConnection, table: str, key: tuple[str, ...]) -> KeyReport:
    """Whether ``key`` identifies one row of ``table``: rows minus distinct non-null keys."""
    cols = ", ".join(f'"{c}"' for c in key)
    not_null = " AND ".join(f'"{c}" IS NOT NULL' for c in key)
    rows, distinct = con.execute(
        f"SELECT count(*), count(DISTINCT ({cols})) FILTER (WHERE {not_null}) FROM {table}"
    ).fetchone()
    return KeyReport(table, tuple(key), int(rows), int(rows) - int(distinct))


def marts_keys_unique(
    con: duckdb.DuckDBPyConnection, keys: dict[str, tuple[str, ...]] | None = None
) -> list[KeyReport]:
    """:func:`key_report` for every table of ``keys`` (default :data:`MARTS_KEYS`) that
    exists in the warehouse."""
    keys = MARTS_KEYS if keys is None else keys
    return [key_report(con, t, k) for t, k in keys.items() if table_exists(con, t)]


def undeclared_marts_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """``marts`` tables with no key in :data:`MARTS_KEYS` (a new table should declare one)."""
    rows = con.execute(
        "SELECT 'marts.' || table_name FROM information_schema.tables "
        "WHERE table_schema = 'marts' ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows if r[0] not in MARTS_KEYS]


# --------------------------------------------------------------------------------------
# cohort sizes against the previous delivery


def record_cohort_sizes(con: duckdb.DuckDBPyConnection, extract_date: dt.date) -> int:
    """Replace ``extract_date``'s rows of :data:`COHORT_SIZE_HISTORY` with the members of each
    cohort per PCN (from ``marts.cohort_members`` and the PCN of ``marts.patient_measures``;
    no PCN is recorded as 'unknown'). Other deliveries' rows are kept. Returns rows written."""
    con.execute("CREATE SCHEMA IF NOT EXISTS reports")
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {COHORT_SIZE_HISTORY} (
            extract_date DATE NOT NULL, cohort_id VARCHAR NOT NULL, pcn_code VARCHAR NOT NULL,
            members BIGINT NOT NULL, PRIMARY KEY (extract_date, cohort_id, pcn_code))"""
    )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {COHORT_SIZE_HISTORY} WHERE extract_date = ?", [extract_date])
        con.execute(
            f"""INSERT INTO {COHORT_SIZE_HISTORY}
            SELECT ?::DATE, m.cohort_id, coalesce(p.pcn_code, 'unknown'), count(*)
            FROM {MEMBERS} m LEFT JOIN {PATIENTS} p USING (person_id)
            GROUP BY ALL ORDER BY 2, 3""",
            [extract_date],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return con.execute(
        f"SELECT count(*) FROM {COHORT_SIZE_HISTORY} WHERE extract_date = ?", [extract_date]
    ).fetchone()[0]


@dataclass(frozen=True)
class CohortSizeChange:
    cohort_id: str
    pcn_code: str
    previous: int
    current: int

    @property
    def ratio(self) -> float | None:
        return None if self.previous == 0 else self.current / self.previous


@dataclass(frozen=True)
class CohortSizeReport:
    """The delivery compared against (None: no earlier delivery) and the cohort sizes that
    moved outside the bounds."""

    extract_date: dt.date
    previous_date: dt.date | None
    compared: int
    out_of_bounds: list[CohortSizeChange]

    @property
    def passed(self) -> bool:
        return not self.out_of_bounds


def cohort_sizes_plausible(
    con: duckdb.DuckDBPyConnection,
    extract_date: dt.date,
    low: float = 0.5,
    high: float = 2.0,
    min_members: int = 20,
) -> CohortSizeReport:
    """Each cohort's size per PCN in ``extract_date`` against the latest earlier delivery in
    :data:`COHORT_SIZE_HISTORY`: out of bounds when current/previous is below ``low`` or above
    ``high``. Small cohorts move by chance, so a pair is only judged when the larger of the two
    sizes is at least ``min_members``. A cohort absent from the earlier delivery (new
    definition) is not judged; one that emptied counts as size 0."""
    if not 0 < low <= 1 <= high:
        raise ValueError(f"bounds must satisfy 0 < low <= 1 <= high, got {low} and {high}")
    if not table_exists(con, COHORT_SIZE_HISTORY):
        return CohortSizeReport(extract_date, None, 0, [])
    previous = con.execute(
        f"SELECT max(extract_date) FROM {COHORT_SIZE_HISTORY} WHERE extract_date < ?",
        [extract_date],
    ).fetchone()[0]
    if previous is None:
        return CohortSizeReport(extract_date, None, 0, [])
    rows = con.execute(
        f"""WITH prev AS (SELECT cohort_id, pcn_code, members FROM {COHORT_SIZE_HISTORY}
                          WHERE extract_date = $prev),
                 cur AS (SELECT cohort_id, pcn_code, members FROM {COHORT_SIZE_HISTORY}
                         WHERE extract_date = $cur),
                 pairs AS (
                    SELECT cohort_id, pcn_code, coalesce(prev.members, 0) AS previous,
                           coalesce(cur.members, 0) AS current
                    FROM prev FULL JOIN cur USING (cohort_id, pcn_code)
                    WHERE cohort_id IN (SELECT cohort_id FROM prev))
            SELECT cohort_id, pcn_code, previous, current,
                   greatest(previous, current) >= $min
                       AND (current < previous * $low OR current > previous * $high) AS out
            FROM pairs WHERE greatest(previous, current) >= $min
            ORDER BY cohort_id, pcn_code""",
        {"prev": previous, "cur": extract_date, "min": min_members, "low": low, "high": high},
    ).fetchall()
    changes = [CohortSizeChange(c, p, int(a), int(b)) for c, p, a, b, out in rows if out]
    return CohortSizeReport(extract_date, previous, len(rows), changes)
