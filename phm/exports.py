"""Per-PCN exports for direct care, and a disclosure-controlled summary for publication.

Under ``<home>/exports/<extract_date>/``:

- ``<pcn_code>/cohorts/<cohort_id>.csv``: the cohort's members registered with that PCN's
  practices, most in need first, with ``nhs_number`` (for direct care), the standard
  columns, ``reasons`` and the cohort's own columns;
- ``<pcn_code>/cohorts.xlsx``: the same, one formatted sheet per cohort, plus a sheet
  defining each cohort;
- ``<pcn_code>/risk_register.csv``: every currently registered patient of that PCN;
- ``<pcn_code>/manifest.json``: the files with their row counts and sha256 (other stages that
  write into the PCN folder, e.g. the impact report, add theirs with :func:`add_to_manifest`);
- ``summary.csv``: cohort sizes for all PCNs, per PCN and per practice (with the "deprivation
  unknown" counts), through :func:`phm.disclosure.protect_table` (rounded, primary and
  secondary suppression; meant for publication beyond the PCNs).

Every file is written to a temporary name and renamed into place. Outputs are
byte-identical for the same warehouse contents.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path

import duckdb
import polars as pl

from phm.disclosure import DisclosurePolicy, protect_table
from phm.files import atomic_write_bytes, csv_bytes
from phm.warehouse import table_exists
from phm.workers import ordered_results, start_workers

log = logging.getLogger("phm.exports")

STANDARD = ["nhs_number", "practice_code", "age", "sex", "lsoa11_code", "imd_decile"]
RISK_REGISTER = [
    *STANDARD,
    "ltc_count",
    "mental_ltc_count",
    "physical_ltc_count",
    "ltc_names",
    "efi_score",
    "efi_category",
    "hfrs_score",
    "hfrs_category",
    "gp_appointments_attended_12m",
    "gp_appointments_dna_12m",
    "days_since_last_gp_attendance",
    "ae_attendances_12m",
    "ae_type1_attendances_12m",
    "emergency_admissions_12m",
    "elective_admissions_12m",
    "bed_days_12m",
    "op_attendances_12m",
    "op_dna_12m",
]
#: the pcn_code of the summary row for all PCNs together
ALL_LEVEL = "ALL"
#: added to the risk register when the risk model has scored the population
RISK_COLUMNS = ["risk_score", "risk_tier", "risk_factors"]


def _csv_bytes(df: pl.DataFrame) -> bytes:
    return csv_bytes(df, float_precision=4, datetime_format="%Y-%m-%dT%H:%M:%S")


def _patients_sql(columns: list[str], has_risk: bool) -> str:
    select = []
    for c in columns:
        if c == "nhs_number":
            select.append("i.nhs_number")
        elif c == "imd_decile":
            select.append("pm.imd2019_decile AS imd_decile")
        elif c in RISK_COLUMNS:
            select.append(f"r.{c}")
        else:
            select.append(f"pm.{c}")
    risk_join = "LEFT JOIN marts.risk_scores r USING (person_id)" if has_risk else ""
    return (
        f"SELECT {', '.join(select)} FROM marts.patient_measures pm "
        f"JOIN marts.person_identity i USING (person_id) {risk_join}"
    )


def _cell_writer(ws, dtype: pl.DataType):
    """The xlsxwriter call for every non-null value of a column of ``dtype``, chosen once per
    column: the same cell (type and value) as :func:`_write_value` writes for each value."""
    if dtype == pl.Boolean:
        return ws.write_boolean
    if dtype.is_numeric() and not isinstance(dtype, pl.Decimal):
        return ws.write_number
    if dtype == pl.String:
        return ws.write_string
    if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
        return lambda i, j, v: ws.write_string(i, j, v.isoformat())
    return lambda i, j, v: _write_value(ws, i, j, v)


def _write_value(ws, i: int, j: int, v) -> None:
    """One cell by the Python type of its value (columns of other dtypes)."""
    if isinstance(v, (dt.date, dt.datetime)):
        ws.write_string(i, j, v.isoformat())
    elif isinstance(v, bool):
        ws.write_boolean(i, j, v)
    elif isinstance(v, (int, float)):
        ws.write_number(i, j, v)
    else:
        ws.write_string(i, j, str(v))


def _xlsx_bytes(
    sheets: list[tuple[str, pl.DataFrame]], definitions: pl.DataFrame, created: dt.datetime
) -> bytes:
    import io

    import xlsxwriter

    buffer = io.BytesIO()
    wb = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_numbers": False})
    wb.set_properties({"created": created, "title": "PHM cohorts", "author": "phm-pipeline"})
    header = wb.add_format({"bold": True, "bg_color": "#DCE6F1", "border": 1, "text_wrap": True})
    wrap = wb.add_format({"text_wrap": True, "valign": "top"})

    def write_sheet(name: str, df: pl.DataFrame, wide: set[str]) -> None:
        ws = wb.add_worksheet(name[:31])
        for j, col in enumerate(df.columns):
            ws.write(0, j, col, header)
            values = df[col].to_list()
            write = _cell_writer(ws, df.schema[col])
            for i, v in enumerate(values, start=1):
                if v is not None:
                    write(i, j, v)
            longest = max([len(col), *(len(str(v)) for v in values[:500] if v is not None)])
            width = 60 if col in wide else min(max(10, longest + 2), 30)
            ws.set_column(j, j, width, wrap if col in wide else None)
        ws.freeze_panes(1, 0)
        if df.width:
            ws.autofilter(0, 0, max(df.height, 1), df.width - 1)

    for name, df in sheets:
        write_sheet(name, df, {"reasons", "ltc_names"})
    write_sheet("Definitions", definitions, {"description", "source"})
    wb.close()
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _by_pcn(df: pl.DataFrame, keys: list[str]) -> dict[tuple, pl.DataFrame]:
    """Split ``df`` (sorted by ``keys``) into its runs of equal ``keys``, each a slice in the
    frame's order (the rows of one PCN, or of one PCN's cohort)."""
    runs = df.group_by(keys, maintain_order=True).len()
    out, offset = {}, 0
    for *key, n in runs.iter_rows():
        out[tuple(key)] = df.slice(offset, n)
        offset += n
    return out


def _pcn_filter(pcn_codes: list[str] | None) -> tuple[str, list]:
    if pcn_codes is None:
        return "pm.pcn_code IS NOT NULL", []
    return "list_contains(?, pm.pcn_code)", [list(pcn_codes)]


def export_pcns(
    con: duckdb.DuckDBPyConnection,
    out_dir: Path,
    extract_date: dt.date,
    pcn_codes: list[str] | None = None,
    workers: int | None = None,
) -> dict[str, dict[str, int]]:
    """Write every PCN's folder (or only those of ``pcn_codes``). Returns rows per file per
    PCN (for metadata and tests). The workbooks are made in ``workers`` processes
    (:func:`phm.workers.export_workers`: ``PHM_WORKERS``); the files are the same with
    any number.

    Two queries serve every PCN: the members of every cohort and the risk register, each
    sorted by PCN (then cohort and rank; then the register's order) and cut into one slice
    per PCN, instead of one query per PCN and cohort."""
    out_dir = Path(out_dir)
    has_risk = table_exists(con, "marts.risk_scores")
    definitions = con.execute(
        "SELECT cohort_id, title, description, source, columns FROM marts.cohort_definitions "
        "ORDER BY cohort_id"
    ).pl()
    pcns = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT pcn_code FROM marts.patient_measures WHERE pcn_code IS NOT NULL "
            "ORDER BY pcn_code"
        ).fetchall()
    ]
    if pcn_codes is not None:
        pcns = [p for p in pcns if p in set(pcn_codes)]
    workers = start_workers(len(pcns), workers)  # the workers' server starts while we read
    created = dt.datetime.combine(extract_date, dt.time())
    written: dict[str, dict[str, int]] = {}
    register_cols = RISK_REGISTER + (RISK_COLUMNS if has_risk else [])
    extras = {
        cohort_id: [c for c in (cols.split(",") if cols else []) if c not in STANDARD]
        for cohort_id, cols in definitions.select("cohort_id", "columns").iter_rows()
    }
    where, params = _pcn_filter(pcn_codes)
    member_cols = list(dict.fromkeys([*STANDARD, *(c for e in extras.values() for c in e)]))
    members = con.execute(
        _patients_sql(member_cols, has_risk)
        .replace("SELECT ", "SELECT pm.pcn_code AS _pcn, m.cohort_id AS _cohort, m.reasons, ", 1)
        .replace(
            "FROM marts.patient_measures pm",
            "FROM marts.cohort_members m JOIN marts.patient_measures pm USING (person_id)",
        )
        + f" WHERE {where} ORDER BY _pcn, _cohort, m.rank",
        params,
    ).pl()
    member_runs = _by_pcn(members, ["_pcn", "_cohort"])
    defs_sheet = definitions.rename({"columns": "cohort_columns"})
    sheets_of = {
        pcn: [
            (
                cohort_id,
                member_runs.get((pcn, cohort_id), members.clear()).select(
                    *STANDARD, "reasons", *extra
                ),
            )
            for cohort_id, extra in extras.items()
        ]
        for pcn in pcns
    }
    # the workbooks (xlsxwriter, one thread) in worker processes, the largest PCNs first,
    # while this process reads the risk register and writes the CSVs; then each PCN's
    # workbook and manifest, in PCN order
    jobs = [(sheets_of[pcn], defs_sheet, created) for pcn in pcns]
    sizes = [sum(df.height for _, df in sheets_of[pcn]) for pcn in pcns]
    with ordered_results(_xlsx_bytes, jobs, workers=workers, sizes=sizes) as workbooks:
        register_all = con.execute(
            _patients_sql(register_cols, has_risk).replace(
                "SELECT ", "SELECT pm.pcn_code AS _pcn, ", 1
            )
            + f" WHERE {where} ORDER BY _pcn, "
            + ("r.risk_score DESC NULLS LAST, " if has_risk else "")
            + "pm.ltc_count DESC, pm.efi_score DESC, i.nhs_number",
            params,
        ).pl()
        register_runs = _by_pcn(register_all, ["_pcn"])
        entries = {
            pcn: _write_csvs(
                out_dir / pcn,
                sheets_of[pcn],
                register_runs.get((pcn,), register_all.clear()).drop("_pcn"),
            )
            for pcn in pcns
        }
        for pcn, workbook in zip(pcns, workbooks, strict=True):
            folder = out_dir / pcn
            rows = sum(df.height for _, df in sheets_of[pcn])
            atomic_write_bytes(folder / "cohorts.xlsx", workbook)
            files = {**entries[pcn], "cohorts.xlsx": {"rows": rows, "sha256": _sha256(workbook)}}
            _write_manifest(folder, extract_date, pcn, {**_other_entries(folder, files), **files})
            written[pcn] = {name: e["rows"] for name, e in files.items()}
            log.info("exported PCN %s: %d files", pcn, len(files) + 1)
    return written


def _write_csvs(
    folder: Path, sheets: list[tuple[str, pl.DataFrame]], register: pl.DataFrame
) -> dict[str, dict]:
    """One PCN's cohort CSVs and risk register (removing the CSVs of cohorts that no longer
    exist); returns their manifest entries (rows, sha256)."""
    files: dict[str, tuple[int, bytes]] = {}
    for cohort_id, df in sheets:
        files[f"cohorts/{cohort_id}.csv"] = (df.height, _csv_bytes(df))
    files["risk_register.csv"] = (register.height, _csv_bytes(register))
    stale = folder / "cohorts"
    if stale.is_dir():
        for old in stale.glob("*.csv"):
            if f"cohorts/{old.name}" not in files:
                old.unlink()
    for name, (_, data) in files.items():
        atomic_write_bytes(folder / name, data)
    return {name: {"rows": rows, "sha256": _sha256(data)} for name, (rows, data) in files.items()}


def _write_manifest(folder: Path, extract_date: dt.date, pcn: str, entries: dict) -> None:
    manifest = {
        "extract_date": extract_date.isoformat(),
        "pcn_code": pcn,
        "files": dict(sorted(entries.items())),
    }
    atomic_write_bytes(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())


def _other_entries(folder: Path, own: dict) -> dict:
    """Entries of the existing manifest for files another stage wrote, kept while the file is
    still there unchanged (same sha256)."""
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("files", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    kept = {}
    for name, entry in old.items():
        f = folder / name
        if name not in own and f.is_file() and _sha256(f.read_bytes()) == entry.get("sha256"):
            kept[name] = entry
    return kept


def add_to_manifest(
    folder: Path, extract_date: dt.date, pcn: str, files: dict[str, tuple[int | None, bytes]]
) -> None:
    """Add (or replace) ``files`` (name -> (rows or None, bytes written)) in the PCN folder's
    ``manifest.json``, keeping the other entries whose files are unchanged."""
    folder = Path(folder)
    entries = _other_entries(folder, files)
    entries.update(
        {name: {"rows": rows, "sha256": _sha256(data)} for name, (rows, data) in files.items()}
    )
    _write_manifest(folder, extract_date, pcn, entries)


def cohort_summary(
    con: duckdb.DuckDBPyConnection, policy: DisclosurePolicy | None = None
) -> pl.DataFrame:
    """Cohort sizes for all PCNs together (``level = 'all'``, ``pcn_code = 'ALL'``), per PCN and
    per practice, published through :func:`phm.disclosure.protect_table`: practices add up to
    their PCN and PCNs to ALL, so suppression is primary and secondary (no suppressed cell can
    be recovered by differencing) and every visible count is rounded.

    ``registered_deprivation_unknown`` and ``members_deprivation_unknown`` count the
    registered patients and the members whose deprivation is unknown (no LSOA, or an LSOA the
    deprivation index in use does not cover: ``patient_measures.deprivation_known`` false),
    so they are visible in every denominator instead of vanishing. A deprivation-based
    cohort (Core20) has none among its members; its would-be members are the cohort
    ``multimorbidity_deprivation_unknown``."""
    unknown = "NOT coalesce(pm.deprivation_known, false)"
    raw = con.execute(
        f"""
        WITH reg AS (
            SELECT pcn_code, practice_code, count(*) AS registered,
                   count(*) FILTER (WHERE {unknown}) AS registered_deprivation_unknown
            FROM marts.patient_measures pm GROUP BY ALL),
        mem AS (
            SELECT pm.pcn_code, pm.practice_code, m.cohort_id, count(*) AS members,
                   count(*) FILTER (WHERE {unknown}) AS members_deprivation_unknown
            FROM marts.cohort_members m JOIN marts.patient_measures pm USING (person_id)
            GROUP BY ALL),
        grid AS (
            SELECT r.pcn_code, r.practice_code, r.registered, r.registered_deprivation_unknown,
                   d.cohort_id
            FROM reg r CROSS JOIN marts.cohort_definitions d),
        practice AS (
            SELECT 'practice' AS level, g.pcn_code, g.practice_code, g.cohort_id,
                   g.registered, coalesce(m.members, 0) AS members,
                   g.registered_deprivation_unknown,
                   coalesce(m.members_deprivation_unknown, 0) AS members_deprivation_unknown
            FROM grid g LEFT JOIN mem m USING (pcn_code, practice_code, cohort_id)),
        pcn AS (
            SELECT 'pcn' AS level, pcn_code, NULL AS practice_code, cohort_id,
                   sum(registered) AS registered, sum(members) AS members,
                   sum(registered_deprivation_unknown) AS registered_deprivation_unknown,
                   sum(members_deprivation_unknown) AS members_deprivation_unknown
            FROM practice GROUP BY pcn_code, cohort_id),
        total AS (
            SELECT 'all' AS level, 'ALL' AS pcn_code, NULL AS practice_code, cohort_id,
                   sum(registered) AS registered, sum(members) AS members,
                   sum(registered_deprivation_unknown) AS registered_deprivation_unknown,
                   sum(members_deprivation_unknown) AS members_deprivation_unknown
            FROM practice GROUP BY cohort_id)
        SELECT s.level, s.pcn_code,
               CASE WHEN s.level = 'all' THEN 'All PCNs' ELSE pn.pcn_name END AS pcn_name,
               s.practice_code, pr.practice_name, s.cohort_id,
               CAST(s.registered AS BIGINT) AS registered, CAST(s.members AS BIGINT) AS members,
               CAST(s.registered_deprivation_unknown AS BIGINT)
                   AS registered_deprivation_unknown,
               CAST(s.members_deprivation_unknown AS BIGINT) AS members_deprivation_unknown
        FROM (SELECT * FROM total UNION ALL SELECT * FROM pcn UNION ALL SELECT * FROM practice) s
        LEFT JOIN (SELECT pcn_code, min(pcn_name) AS pcn_name
                   FROM staging.practices GROUP BY pcn_code) pn USING (pcn_code)
        LEFT JOIN (SELECT practice_code, min(practice_name) AS practice_name
                   FROM staging.practices GROUP BY practice_code) pr
          ON pr.practice_code = s.practice_code
        ORDER BY s.level <> 'all', s.pcn_code, s.level, s.practice_code NULLS FIRST, s.cohort_id
        """
    ).pl()
    return protect_table(
        raw,
        [
            "registered",
            "members",
            "registered_deprivation_unknown",
            "members_deprivation_unknown",
        ],
        ["pcn_code", "practice_code"],
        by=["cohort_id"],
        total={"pcn_code": ALL_LEVEL, "practice_code": None},
        policy=policy,
    )


def write_summary(con: duckdb.DuckDBPyConnection, out_dir: Path) -> Path:
    df = cohort_summary(con)
    path = Path(out_dir) / "summary.csv"
    atomic_write_bytes(path, _csv_bytes(df))
    return path
