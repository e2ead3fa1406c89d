"""Scale check: all measures on a synthetic delivery of about a million patients.

    .venv/bin/python -m phm.measures.benchmark --patients 1000000 [--db /tmp/bench.duckdb]

Generates the staging tables in DuckDB SQL (≈15 events, 10 medication issues and 5
appointments per patient, ≈0.5 spells per patient), loads the reference tables, then times
:func:`phm.measures.build_patient_measures`. The generated data are random, not realistic;
they only exercise the joins and aggregations at volume. Not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import duckdb

from phm.measures.fixtures import create_staging_tables
from phm.measures.patient import build_patient_measures, load_reference_tables
from phm.pseudonymise import load_key

EXTRACT = dt.date(2026, 11, 1)


def generate(con: duckdb.DuckDBPyConnection, n: int, seed: float = 0.42) -> dict[str, int]:
    """Fill ``staging`` with random contract-shaped rows for ``n`` current patients."""
    create_staging_tables(con)
    con.execute(f"SELECT setseed({seed})")
    ed = f"DATE '{EXTRACT.isoformat()}'"
    con.execute(
        """
        INSERT INTO staging.practices
        SELECT printf('C%05d', i), 'Practice ' || i, printf('U%05d', i // 10),
               'PCN ' || (i // 10), 'QK1'
        FROM range(100) t(i)
        """
    )
    con.execute(
        f"""
        INSERT INTO staging.gp_patients
        SELECT printf('%010d', i),
               DATE '1920-01-01' + CAST(random() * 37000 AS INTEGER),
               CASE WHEN random() < 0.5 THEN 'F' ELSE 'M' END,
               'A',
               'E01' || printf('%06d', 10000 + CAST(random() * 32000 AS INTEGER)),
               printf('C%05d', i % 100),
               DATE '2000-01-01' + CAST(random() * 9000 AS INTEGER),
               CASE WHEN i >= {n} THEN {ed} - 100 END,
               CASE WHEN i % 97 = 0 THEN {ed} - 50 END
        FROM range({int(n * 1.02)}) t(i)
        """
    )
    # codes: 40 % from the lists the measures use, 60 % other (random valid-looking ids)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _codes AS
        SELECT row_number() OVER () - 1 AS k, code FROM (SELECT DISTINCT code FROM reference.codelists)
        """
    )
    n_codes = con.execute("SELECT count(*) FROM _codes").fetchone()[0]
    con.execute(
        f"""
        INSERT INTO staging.gp_events
        WITH r AS (
            SELECT CAST(random() * {n} AS BIGINT) AS p, random() AS u, random() AS v,
                   CAST(floor(random() * {n_codes}) AS BIGINT) AS k, random() AS w
            FROM range({15 * n})
        )
        SELECT printf('%010d', p),
               {ed} - CAST(v * 7300 AS INTEGER) + CASE WHEN w < 0.001 THEN 400 ELSE 0 END,
               CASE WHEN u < 0.4 THEN c.code
                    ELSE CAST(100000000 + CAST(w * 899999999 AS BIGINT) AS VARCHAR) END,
               NULL, 'C00001'
        FROM r LEFT JOIN _codes c USING (k)
        """
    )
    con.execute(
        f"""
        INSERT INTO staging.gp_medications
        WITH r AS (
            SELECT CAST(random() * {n} AS BIGINT) AS p, random() AS v,
                   CAST(floor(random() * 23) + 1 AS INTEGER) AS ch,
                   CAST(floor(random() * 60) AS INTEGER) AS sub
            FROM range({10 * n})
        )
        SELECT printf('%010d', p), {ed} - CAST(v * 800 AS INTEGER),
               CAST(1000000 + sub AS VARCHAR),
               printf('%02d%02d%02d0%s0AAAAAA', ch, (sub % 8) + 1, sub % 4, chr(65 + sub % 26)),
               28
        FROM r
        """
    )
    con.execute(
        f"""
        INSERT INTO staging.gp_appointments
        SELECT printf('%010d', CAST(random() * {n} AS BIGINT)),
               {ed} - CAST(random() * 800 AS INTEGER),
               CASE WHEN random() < 0.85 THEN 'attended' WHEN random() < 0.5 THEN 'did_not_attend'
                    ELSE 'cancelled_by_patient' END,
               'gp', 'face_to_face', 'C00001'
        FROM range({5 * n})
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _icd AS
        SELECT row_number() OVER () - 1 AS k, c FROM (
            SELECT icd10_code || '0' AS c FROM reference.hfrs_weights
            UNION ALL SELECT chr(CAST(65 + i % 26 AS INTEGER)) || printf('%02d', i % 100) || 'X' FROM range(400) t(i))
        """
    )
    n_icd = con.execute("SELECT count(*) FROM _icd").fetchone()[0]
    con.execute(
        f"""
        INSERT INTO staging.sus_apc
        WITH r AS (
            SELECT i, CAST(random() * {n} AS BIGINT) AS p, random() AS v, random() AS m,
                   CAST(floor(random() * {n_icd}) AS BIGINT) AS k0,
                   CAST(floor(random() * 6) AS INTEGER) AS nsec
            FROM range({n // 2}) t(i)
        ),
        sec AS (
            SELECT r.i, string_agg(x.c, ';') AS secondary
            FROM r, range(6) s(j)
            JOIN _icd x ON x.k = (hash(r.i * 7 + s.j) % {n_icd})
            WHERE s.j < r.nsec
            GROUP BY r.i
        )
        SELECT printf('%010d', r.p), 'S' || r.i, 'RWE',
               {ed} - CAST(r.v * 1100 AS INTEGER) AS adm,
               {ed} - CAST(r.v * 1100 AS INTEGER) + CAST(r.m * 10 AS INTEGER),
               CASE WHEN r.m < 0.6 THEN '21' WHEN r.m < 0.9 THEN '11' ELSE '31' END,
               x.c, sec.secondary
        FROM r JOIN _icd x ON x.k = r.k0 LEFT JOIN sec USING (i)
        """
    )
    con.execute(
        f"""
        INSERT INTO staging.sus_ecds
        SELECT printf('%010d', CAST(random() * {n} AS BIGINT)), 'A' || i, 'RWE',
               CAST({ed} AS TIMESTAMP) - to_minutes(CAST(random() * 800 * 1440 AS BIGINT)),
               CASE WHEN random() < 0.7 THEN '01' ELSE '03' END, NULL, random() < 0.3
        FROM range({(4 * n) // 10}) t(i)
        """
    )
    con.execute(
        f"""
        INSERT INTO staging.sus_op
        SELECT printf('%010d', CAST(random() * {n} AS BIGINT)), 'O' || i,
               {ed} - CAST(random() * 800 AS INTEGER),
               CASE WHEN random() < 0.8 THEN '5' WHEN random() < 0.5 THEN '3' ELSE '2' END, '100'
        FROM range({n}) t(i)
        """
    )
    return {
        t: con.execute(f"SELECT count(*) FROM staging.{t}").fetchone()[0]
        for t in (
            "gp_patients",
            "gp_events",
            "gp_medications",
            "gp_appointments",
            "sus_apc",
            "sus_ecds",
            "sus_op",
        )
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=None, help="DuckDB file (default: in memory)")
    ap.add_argument("--reuse", action="store_true", help="reuse the staging tables in --db")
    args = ap.parse_args(argv)
    if args.db and args.db.exists() and not args.reuse:
        args.db.unlink()
    con = duckdb.connect(str(args.db) if args.db else ":memory:")
    con.execute("SET enable_progress_bar = false")
    if not args.reuse:
        t0 = time.perf_counter()
        load_reference_tables(con)
        counts = generate(con, args.patients)
        print(f"generated in {time.perf_counter() - t0:.1f} s: {counts}")
        if args.db:
            con.execute("CHECKPOINT")
            con.close()
            con = duckdb.connect(str(args.db))
            con.execute("SET enable_progress_bar = false")
    t0, c0 = time.perf_counter(), time.process_time()
    report = build_patient_measures(con, EXTRACT, key=load_key(), load_reference=False)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"build_patient_measures: {elapsed:.1f} s wall, {cpu:.1f} s CPU; rows: {report.row_counts}"
    )
    print("wall seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    print(
        "CPU seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in report.cpu_seconds.items())
    )
    with open("/proc/loadavg") as fh:
        print("load average (1, 5, 15 min) after the run: " + " ".join(fh.read().split()[:3]))
    print(
        con.execute(
            "SELECT avg(ltc_count), avg(efi_deficit_count), count(hfrs_score), "
            "avg(gp_appointments_attended_12m) FROM marts.patient_measures"
        ).fetchone()
    )


if __name__ == "__main__":
    main()
