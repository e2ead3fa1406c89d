"""Finding, verifying and reading extract deliveries (see docs/data-contract.md).

A delivery is ``<root>/<YYYY-MM-DD>/`` with one file per contract table and a
``_manifest.json`` written last. Folders without a manifest are still arriving and are
ignored. Every file-level fault raises :class:`DeliveryError` naming the file and the fault,
before anything is written to the warehouse.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from phm.contract import (
    ACCEPTED_CONTRACT_VERSIONS,
    CONTRACT_VERSION,
    FILE_SUFFIXES,
    MANIFEST_NAME,
    TABLE_NAMES,
    TABLES,
)
from phm.manifest import count_rows, sha256_file

log = logging.getLogger("phm.delivery")

_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ROW_NUMBER = "_row_number"


class DeliveryError(Exception):
    """A file-level fault: the whole delivery is refused and the warehouse is left as it was."""

    def __init__(self, path: Path | str, fault: str):
        self.path = Path(path)
        self.fault = fault
        super().__init__(f"{self.path}: {fault}")


@dataclass(frozen=True)
class ManifestEntry:
    table: str
    file: Path
    rows: int
    sha256: str


@dataclass(frozen=True)
class Delivery:
    folder: Path
    extract_date: date
    entries: dict[str, ManifestEntry]
    #: the manifest's contract_version (1 or 2); a v1 delivery lacks the v2 optional columns
    contract_version: int = CONTRACT_VERSION

    @property
    def extract_date_str(self) -> str:
        return self.extract_date.isoformat()


def list_deliveries(root: Path) -> list[tuple[date, Path, bool]]:
    """Every dated folder under ``root`` as (date, folder, complete), oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise DeliveryError(root, "extracts folder does not exist")
    found = []
    for child in root.iterdir():
        if child.is_dir() and _DATE_DIR.match(child.name):
            try:
                d = date.fromisoformat(child.name)
            except ValueError:
                continue
            found.append((d, child, (child / MANIFEST_NAME).is_file()))
    return sorted(found)


def find_delivery(root: Path, delivery: str | date | None = None) -> Path:
    """The folder of the requested delivery, or of the latest complete one.

    Folders without ``_manifest.json`` are skipped (still arriving).
    """
    found = list_deliveries(root)
    if delivery is not None:
        wanted = date.fromisoformat(str(delivery))
        for d, folder, complete in found:
            if d == wanted:
                if not complete:
                    raise DeliveryError(folder, f"delivery has no {MANIFEST_NAME}: still arriving")
                return folder
        raise DeliveryError(Path(root) / wanted.isoformat(), "no such delivery")
    complete = [folder for _, folder, ok in found if ok]
    skipped = [folder.name for _, folder, ok in found if not ok]
    if skipped:
        log.info("skipping %d incomplete deliveries (no manifest): %s", len(skipped), skipped)
    if not complete:
        raise DeliveryError(root, f"no complete delivery (a dated folder with {MANIFEST_NAME})")
    return complete[-1]


def read_manifest(folder: Path) -> Delivery:
    """Parse and check the manifest's structure (not yet the files' contents)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as e:
        raise DeliveryError(path, "manifest is missing") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeliveryError(path, f"manifest is not valid JSON ({e})") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("files"), dict):
        raise DeliveryError(path, "manifest has no 'files' object")
    version = raw.get("contract_version")
    if isinstance(version, bool) or version not in ACCEPTED_CONTRACT_VERSIONS:
        raise DeliveryError(
            path,
            f"contract_version is {version!r}; this pipeline reads versions "
            f"{', '.join(map(str, ACCEPTED_CONTRACT_VERSIONS))}",
        )
    try:
        extract_date = date.fromisoformat(str(raw.get("extract_date")))
    except ValueError as e:
        raise DeliveryError(
            path, f"extract_date {raw.get('extract_date')!r} is not YYYY-MM-DD"
        ) from e
    if _DATE_DIR.match(folder.name) and folder.name != extract_date.isoformat():
        raise DeliveryError(
            path, f"extract_date {extract_date} does not match the folder name {folder.name}"
        )
    entries: dict[str, ManifestEntry] = {}
    for table in TABLE_NAMES:
        item = raw["files"].get(table)
        if item is None:
            raise DeliveryError(path, f"manifest does not list table {table!r}")
        try:
            name, rows, sha = str(item["file"]), int(item["rows"]), str(item["sha256"])
        except (KeyError, TypeError, ValueError) as e:
            raise DeliveryError(
                path, f"manifest entry for {table!r} needs file, rows, sha256"
            ) from e
        if Path(name).name != name or not any(name == table + s for s in FILE_SUFFIXES):
            raise DeliveryError(
                path, f"manifest names {name!r} for {table}; expected {table}.csv/.csv.gz/.parquet"
            )
        entries[table] = ManifestEntry(table, folder / name, rows, sha.lower())
    unknown = sorted(set(raw["files"]) - set(TABLE_NAMES))
    if unknown:
        log.warning("manifest lists tables outside the contract, ignored: %s", unknown)
    return Delivery(folder, extract_date, entries, int(version))


def verify_files(delivery: Delivery) -> None:
    """Every listed file exists and matches its manifest sha256 and row count."""
    for entry in delivery.entries.values():
        if not entry.file.is_file():
            raise DeliveryError(entry.file, "file listed in the manifest is missing")
        t0 = time.perf_counter()
        digest = sha256_file(entry.file)
        if digest != entry.sha256:
            raise DeliveryError(
                entry.file,
                "sha256 differs from the manifest: truncated or corrupt delivery",
            )
        try:
            rows = count_rows(entry.file)
        except Exception as e:  # unreadable gzip / parquet
            raise DeliveryError(entry.file, _read_fault(e)) from None
        if rows != entry.rows:
            raise DeliveryError(
                entry.file,
                f"has {rows} data rows but the manifest says {entry.rows}: truncated or corrupt",
            )
        log.info(
            "verified %s: %d rows, sha256 ok (%.1fs)",
            entry.file.name,
            rows,
            time.perf_counter() - t0,
        )


def open_delivery(root: Path, delivery: str | date | None = None) -> Delivery:
    """Find, parse and fully verify a delivery; raises DeliveryError on any file-level fault."""
    folder = find_delivery(root, delivery)
    d = read_manifest(folder)
    verify_files(d)
    return d


_COLUMN_IN_MESSAGE = re.compile(r"at column '([A-Za-z0-9_]{1,64})'")


def _read_fault(e: BaseException) -> str:
    """What went wrong reading a file, in words that never quote its content: reader errors
    (polars, gzip, parquet) can include a whole delivered field, so only the kind of fault,
    the exception type and a contract-like column name are kept."""
    msg = str(e)
    low = msg.lower()
    column = _COLUMN_IN_MESSAGE.search(msg)
    where = f" in column {column.group(1)}" if column else ""
    if "utf-8" in low or "utf8" in low:
        return "wrong encoding: not UTF-8"
    if "more fields" in low or "ragged" in low:
        return "unreadable file: a row has more fields than the header"
    if "not properly escaped" in low or "quote" in low:
        return f"unreadable file: a field is not properly quoted{where}"
    return f"unreadable file ({type(e).__name__}{where})"


def _parquet_as_strings(path: Path) -> pl.DataFrame:
    df = pl.read_parquet(path)
    out = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if dtype == pl.Boolean:
            out.append(
                pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).alias(name)
            )
        elif dtype == pl.Datetime or isinstance(dtype, pl.Datetime):
            out.append(col.dt.strftime("%Y-%m-%dT%H:%M:%S").alias(name))
        elif dtype == pl.Date:
            out.append(col.dt.strftime("%Y-%m-%d").alias(name))
        else:
            out.append(col.cast(pl.String).alias(name))
    return df.select(out)


def read_table(entry: ManifestEntry) -> pl.DataFrame:
    """A table exactly as delivered: every column as text (empty field = null) plus
    ``_row_number`` (1-based data row in the file). Unknown extra columns are kept.

    A missing optional (v2) column is added as all null; see :func:`read_table_checked` for
    which ones were missing."""
    return read_table_checked(entry)[0]


def read_table_checked(entry: ManifestEntry) -> tuple[pl.DataFrame, list[str]]:
    """:func:`read_table` and the optional (later contract version) columns the file lacks,
    in contract order; those columns are in the frame, all null."""
    path = entry.file
    try:
        if path.name.endswith(".parquet"):
            df = _parquet_as_strings(path)
        else:
            df = pl.read_csv(
                path,
                infer_schema=False,
                encoding="utf8",
                raise_if_empty=False,
            )
    except Exception as e:
        # ``from None``: the reader's message (and so its traceback in the Dagster event log)
        # can quote the content of a field, i.e. a delivered value
        raise DeliveryError(path, _read_fault(e)) from None
    # strip a BOM polars may leave on the first header and stray spaces around names
    df = df.rename({c: c.lstrip("\ufeff").strip() for c in df.columns})
    contract = TABLES[entry.table]
    missing = [c for c in contract.required_column_names if c not in df.columns]
    if missing:
        raise DeliveryError(path, f"missing required column(s): {', '.join(missing)}")
    if len(set(df.columns)) != len(df.columns):
        raise DeliveryError(path, "duplicate column names in the header")
    if df.height != entry.rows:
        raise DeliveryError(
            path, f"parsed {df.height} rows but the manifest says {entry.rows}: corrupt file"
        )
    extras = [c for c in df.columns if c not in contract.column_names]
    if extras:
        log.info("%s: extra columns kept in raw and ignored downstream: %s", path.name, extras)
    absent = [c for c in contract.optional_column_names if c not in df.columns]
    if absent:
        log.info("%s: optional v2 column(s) not delivered, loaded as null: %s", path.name, absent)
    df = df.with_columns(pl.col(c).cast(pl.String) for c in df.columns)
    df = df.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in absent)
    out = df.select(
        pl.int_range(1, df.height + 1, dtype=pl.Int64).alias(ROW_NUMBER),
        *contract.column_names,
        *extras,
    )
    return out, absent
