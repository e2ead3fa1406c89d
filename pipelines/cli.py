"""The ``phm`` command: generate synthetic deliveries, run the pipeline, benchmark it.

Run ``phm --help`` or ``phm <command> --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path

from phm.nhs_test_range import NHS_TEST_RANGE_NOTE
from pipelines.bench import STAGES as BENCH_STAGES

#: exit code of `phm run --no-wait` when another run holds the home (EX_TEMPFAIL)
EXIT_BUSY = 75

EPILOG = """\
examples:
  phm generate --patients 20000 --seed 42 --extract-date 2026-11-01 --out var/extracts
  phm run --extracts var/extracts --home var/home
  phm bench --patients 100000

Outputs of `phm run --home DIR`: the warehouse DIR/warehouse.duckdb, the exports
DIR/exports/<extract_date>/, and the Dagster event log and compute logs DIR/dagster/
(start the UI over them with `make ui HOME_DIR=DIR`). Readers (notebooks, the UI) read the
published copy DIR/published/warehouse.duckdb, swapped in when a run succeeds. One run at a
time per home: a run holds DIR/.lock; a second waits (--wait, default) or exits with code 75
(--no-wait)."""


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date in YYYY-MM-DD form") from e


def _positive_int(value: str) -> int:
    try:
        n = int(value.replace("_", "").replace(",", ""))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from e
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _rate(value: str) -> float:
    try:
        r = float(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from e
    if not 0 <= r <= 0.5:
        raise argparse.ArgumentTypeError("fault rate must be between 0 and 0.5 (e.g. 0.01)")
    return r


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phm",
        description=(
            "Population health management pipeline for NHS Primary Care Networks: ingest GP, "
            "hospital (SUS), police PPN and social prescribing extracts into DuckDB, validate "
            "them, compute clinical measures and cohorts, and export per-PCN lists and maps."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate",
        help="write a seeded synthetic delivery per the data contract",
        description=(
            "Write one synthetic delivery ROOT/<extract-date>/ exactly per the data contract: "
            "all twelve tables and _manifest.json (written last). The same arguments always "
            "give byte-identical files. Sidecars outside the delivery, in "
            "ROOT/_sidecar/<extract-date>/: truth.parquet (each patient's true probability of "
            "an emergency admission) and, with --faults, faults.csv (every injected fault)."
        ),
    )
    g.add_argument(
        "--patients", type=_positive_int, default=50_000, help="registered patients (default 50000)"
    )
    g.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    g.add_argument(
        "--extract-date",
        type=_date,
        default=date(2026, 11, 1),
        help="the delivery's as-of date, YYYY-MM-DD (default 2026-11-01)",
    )
    g.add_argument("--out", type=Path, required=True, metavar="ROOT", help="extracts root folder")
    g.add_argument(
        "--faults",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="inject row-level faults into this fraction of rows (e.g. 0.01); default none",
    )
    g.add_argument(
        "--nhs-overflow",
        action="store_true",
        help=(
            f"{NHS_TEST_RANGE_NOTE}. Beyond that, take the rest from the 998 range (not "
            "reserved for testing; past 1.8 million numbers 997, 996 and on; for benchmarks only)"
        ),
    )
    g.add_argument(
        "--format",
        choices=("csv", "csv.gz", "parquet"),
        default="csv",
        help="file format of the tables (default csv)",
    )

    r = sub.add_parser(
        "run",
        help="materialise every asset through Dagster over the latest complete delivery",
        description=(
            "Materialise every asset (ingest, validation, measures, cohorts, exports) through "
            "Dagster in this process, over the latest complete delivery under --extracts "
            "(folders without _manifest.json are still arriving and are skipped). The "
            "warehouse is DIR/warehouse.duckdb, exports go to DIR/exports/<extract_date>/ and "
            "the Dagster run storage to DIR/dagster/. A delivery with a file-level fault fails "
            "with a message naming the file; the warehouse keeps its last good state."
        ),
    )
    r.add_argument(
        "--extracts", type=Path, required=True, metavar="ROOT", help="extracts root folder"
    )
    r.add_argument(
        "--delivery",
        type=_date,
        default=None,
        metavar="YYYY-MM-DD",
        help="a particular delivery instead of the latest",
    )
    r.add_argument("--home", type=Path, required=True, metavar="DIR", help="output home folder")
    w = r.add_mutually_exclusive_group()
    w.add_argument(
        "--wait",
        dest="wait",
        action="store_true",
        default=True,
        help="if another run holds the home's lock (DIR/.lock), wait for it (default)",
    )
    w.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        help=f"if another run holds the home's lock, exit at once with code {EXIT_BUSY}",
    )
    r.add_argument(
        "--select",
        action="append",
        metavar="ASSET",
        help="materialise only this asset key (e.g. raw/gp_patients); repeatable",
    )

    b = sub.add_parser(
        "bench",
        help="measure wall time and peak memory of each pipeline stage",
        description=(
            "Generate a synthetic delivery of --patients patients and time each stage "
            "(generate, read_floor, ingest, validate, measures, impact, pipeline, nightly) in "
            "its own process, printing wall time, CPU time and peak memory (max RSS) per stage "
            "and writing them to a results file. 'pipeline' is the whole Dagster run in a fresh "
            "home (it trains the risk model); 'nightly' runs it again in that home, as a "
            "nightly run with a current model does (scoring only); both list their slowest "
            "steps."
        ),
    )
    b.add_argument("--patients", type=_positive_int, default=100_000, help="default 100000")
    b.add_argument("--seed", type=int, default=42)
    b.add_argument(
        "--workdir", type=Path, default=Path("var/bench"), help="scratch folder (default var/bench)"
    )
    b.add_argument(
        "--results",
        type=Path,
        default=Path("bench/results"),
        help="results folder (default bench/results)",
    )
    b.add_argument(
        "--stage",
        action="append",
        choices=list(BENCH_STAGES),
        help="run only this stage (repeatable; later stages need the earlier ones' output "
        "in --workdir); default: every stage",
    )
    return parser


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from phm.synth import generate

    try:
        result = _generate(args, generate)
    except ValueError as e:
        hint = " (or pass --nhs-overflow, for benchmarks)" if "NHS" in str(e) else ""
        print(f"phm generate: {e}{hint}", file=sys.stderr)
        return 2
    print(f"delivery written: {result.delivery}")
    for table, rows in result.rows.items():
        print(f"  {table:<18} {rows:>12,} rows")
    return 0


def _generate(args: argparse.Namespace, generate):
    return generate(
        out_root=args.out,
        patients=args.patients,
        seed=args.seed,
        extract_date=args.extract_date,
        faults=args.faults,
        fmt=args.format,
        nhs_overflow=args.nhs_overflow,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from phm.delivery import DeliveryError
    from phm.runhome import HomeBusy
    from pipelines.runner import PipelineFailed, run_pipeline

    # inside the run, Dagster prints the domain code's log records (dagster.yaml captures the
    # "phm" logger); stop them reaching the root handler a second time
    logging.getLogger("phm").propagate = False
    # the lock and recovery messages come before and after the run, outside Dagster
    ops_log = logging.getLogger("phm.runhome")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ops_log.addHandler(handler)

    try:
        summary = run_pipeline(
            args.extracts,
            args.home,
            delivery=args.delivery.isoformat() if args.delivery else None,
            selection=args.select,
            wait=args.wait,
        )
    except HomeBusy as e:
        print(f"phm run: {e}", file=sys.stderr)
        return EXIT_BUSY
    except (PipelineFailed, DeliveryError) as e:
        print(f"phm run: failed\n{e}", file=sys.stderr)
        return 1
    print(f"run {summary.run_id}: {len(summary.materialized)} assets in {summary.seconds:.1f}s")
    print(f"warehouse: {Path(args.home) / 'warehouse.duckdb'}")
    print(f"readers:   {Path(args.home) / 'published' / 'warehouse.duckdb'}")
    print(f"exports:   {Path(args.home) / 'exports'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pipelines.bench import run_bench

    run_bench(args.patients, args.seed, args.workdir, args.results, stages=args.stage)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    handlers = {"generate": cmd_generate, "run": cmd_run, "bench": cmd_bench}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
