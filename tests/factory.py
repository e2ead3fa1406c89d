"""Hand-made deliveries for tests: a few contract-conforming rows per table, overridable.

``make_delivery(root, tables={...})`` writes ``root/<date>/`` with all twelve tables and a
manifest; any table given replaces the default rows (a list of dicts, missing columns empty).
"""

from __future__ import annotations

import csv
import gzip
import json
from datetime import date
from pathlib import Path

import polars as pl

from phm.contract import CONTRACT_VERSION, TABLE_NAMES, TABLES
from phm.manifest import write_manifest

EXTRACT_DATE = date(2026, 11, 1)

# valid NHS numbers in the 999 test range (Modulus 11)
NHS = ["9990000018", "9990000026", "9990000034", "9990000042", "9990000050"]


def default_rows() -> dict[str, list[dict]]:
    return {
        "practices": [
            {
                "practice_code": "C82001",
                "practice_name": "Alpha Surgery",
                "pcn_code": "U00001",
                "pcn_name": "North PCN",
                "icb_code": "QK1",
            },
            {
                "practice_code": "C82002",
                "practice_name": "Beta Practice",
                "pcn_code": "U00002",
                "pcn_name": "South PCN",
                "icb_code": "QK1",
            },
        ],
        "gp_patients": [
            {
                "nhs_number": NHS[0],
                "date_of_birth": "1950-03-04",
                "sex": "F",
                "ethnic_category": "A",
                "lsoa11_code": "E01013600",
                "lsoa21_code": "E01013600",
                "practice_code": "C82001",
                "registration_start": "2001-01-01",
            },
            {
                "nhs_number": NHS[1],
                "date_of_birth": "1980-07-21",
                "sex": "M",
                "ethnic_category": "H",
                "lsoa11_code": "E01013601",
                "practice_code": "C82002",
                "registration_start": "2010-05-01",
            },
        ],
        "gp_events": [
            {
                "nhs_number": NHS[0],
                "event_date": "2020-02-02",
                "snomed_code": "38341003",
                "practice_code": "C82001",
            },
            {
                "nhs_number": NHS[0],
                "event_date": "2026-10-01",
                "snomed_code": "60621009",
                "numeric_value": "31.5",
                "practice_code": "C82001",
            },
        ],
        "gp_medications": [
            {
                "nhs_number": NHS[0],
                "issue_date": "2026-10-01",
                "dmd_code": "319283006",
                "bnf_code": "0206020A0AAAAAA",
                "quantity": "28",
            },
        ],
        "gp_appointments": [
            {
                "nhs_number": NHS[0],
                "appointment_date": "2026-09-01",
                "status": "attended",
                "staff_role": "gp",
                "mode": "face_to_face",
                "practice_code": "C82001",
            },
            {
                "nhs_number": NHS[1],
                "appointment_date": "2026-12-01",
                "status": "booked",
                "staff_role": "nurse",
                "practice_code": "C82002",
            },
        ],
        "sus_apc": [
            {
                "nhs_number": NHS[0],
                "spell_id": "S1",
                "provider_code": "RWE",
                "admission_date": "2026-05-01",
                "discharge_date": "2026-05-04",
                "admission_method": "21",
                "discharge_method": "1",
                "discharge_destination": "19",
                "primary_diagnosis": "I50.0",
                "secondary_diagnoses": "F00.0*;W19",
            },
        ],
        "sus_ecds": [
            {
                "nhs_number": NHS[0],
                "attendance_id": "A1",
                "provider_code": "RWE",
                "arrival_datetime": "2026-05-01T10:30:00",
                "department_type": "01",
                "admitted": "true",
            },
        ],
        "sus_op": [
            {
                "nhs_number": NHS[1],
                "appointment_id": "O1",
                "appointment_date": "2026-06-01",
                "attendance_status": "5",
                "treatment_function_code": "100",
            },
        ],
        "ppn": [
            {
                "nhs_number": NHS[1],
                "ppn_id": "P1",
                "incident_date": "2026-08-01",
                "shared_date": "2026-08-05",
                "category": "mental_health",
                "risk_level": "medium",
            },
        ],
        "sp_referrals": [
            {
                "nhs_number": NHS[1],
                "referral_id": "R1",
                "referral_date": "2026-03-01",
                "source": "gp",
                "reasons": "isolation;housing",
                "contact_attempts": "2",
                "first_contact_date": "2026-03-10",
                "status": "discharged",
                "discharge_date": "2026-09-01",
            },
        ],
        "sp_outcomes": [
            {
                "referral_id": "R1",
                "measure": "ucla3_loneliness",
                "timepoint": "baseline",
                "score": "8",
                "recorded_date": "2026-03-10",
            },
            {
                "referral_id": "R1",
                "measure": "ucla3_loneliness",
                "timepoint": "followup_6m",
                "score": "5",
                "recorded_date": "2026-09-01",
            },
        ],
        "community_assets": [
            {
                "asset_id": "CA1",
                "name": "Food bank",
                "category": "food",
                "latitude": "52.63",
                "longitude": "-1.13",
                "lsoa11_code": "E01013600",
            },
        ],
    }


def write_table_file(
    folder: Path, table: str, rows: list[dict], fmt: str = "csv", drop: set[str] | None = None
) -> Path:
    """One table file; columns in ``drop`` are left out of the file (e.g. v2 columns)."""
    columns = [c for c in TABLES[table].column_names if c not in (drop or set())]
    skip = set(columns) | (drop or set())
    extra = [k for r in rows for k in r if k not in skip]
    header = columns + list(dict.fromkeys(extra))
    if fmt == "parquet":
        path = folder / f"{table}.parquet"
        df = pl.DataFrame(
            [{c: r.get(c) for c in header} for r in rows], schema=dict.fromkeys(header, pl.String)
        )
        df.write_parquet(path)
        return path
    path = folder / f"{table}.{fmt}"
    opener = gzip.open if fmt == "csv.gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in header])
    return path


def make_delivery(
    root: Path,
    tables: dict[str, list[dict]] | None = None,
    extract_date: date = EXTRACT_DATE,
    fmt: str = "csv",
    manifest: bool = True,
    contract_version: int = CONTRACT_VERSION,
) -> Path:
    """A delivery folder with the factory's rows (``tables`` replaces whole tables).

    ``contract_version=1`` writes a v1 delivery: without the columns added in v2 (the files
    do not have them at all) and with ``contract_version: 1`` in the manifest."""
    rows = default_rows()
    rows.update(tables or {})
    folder = Path(root) / extract_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    drop = {c.name for t in TABLES.values() for c in t.columns if c.since > contract_version}
    files = {t: write_table_file(folder, t, rows[t], fmt, drop) for t in TABLE_NAMES}
    if manifest:
        path = write_manifest(folder, extract_date.isoformat(), files)
        if contract_version != CONTRACT_VERSION:
            mpath = Path(path)
            m = json.loads(mpath.read_text(encoding="utf-8"))
            m["contract_version"] = contract_version
            mpath.write_text(json.dumps(m, indent=2), encoding="utf-8")
    return folder


def remanifest(folder: Path) -> Path:
    """Rewrite ``folder``'s manifest from the table files now in it (after a test altered or
    replaced one), keeping its extract date and contract version."""
    folder = Path(folder)
    old = json.loads((folder / "_manifest.json").read_text(encoding="utf-8"))
    files = {}
    for t in TABLE_NAMES:
        found = [
            p for p in folder.iterdir() if p.name in (f"{t}.csv", f"{t}.csv.gz", f"{t}.parquet")
        ]
        files[t] = found[0]
    path = write_manifest(folder, old["extract_date"], files)
    m = json.loads(Path(path).read_text(encoding="utf-8"))
    m["contract_version"] = old["contract_version"]
    Path(path).write_text(json.dumps(m, indent=2), encoding="utf-8")
    return Path(path)
