"""Finding, verifying and reading extract deliveries (see docs/data-contract.md).

A delivery is ``<root>/<YYYY-MM-DD>/`` with one file per contract table and a
``_manifest.json`` written last. Folders without a manifest are still arriving and are
ignored. Every file-level fault raises :class:`DeliveryError` naming the file and the fault,
before anything is written to the warehouse.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import zlib
from collections.abc import Iterator
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
from phm.manifest import _count_chunk

log = logging.getLogger("phm.delivery")

_DATE_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ROW_NUMBER = "_row_number"

#: columns the pipeline adds itself (raw's row number, quarantine's bookkeeping): a delivered
#: column with one of these names (in any letter case) would be silently overwritten
RESERVED_COLUMNS = (ROW_NUMBER, "table_name", "delivery_date", "failed_rules")

#: decompressed bytes allowed per compressed byte of a .csv.gz (a gzip bomb is refused)
DEFAULT_MAX_DECOMPRESSION_RATIO = 100
#: however small the compressed file, this much may always be decompressed
_DECOMPRESSION_FLOOR = 16 << 20
_CHUNK = 1 << 20


def max_decompression_ratio() -> float:
    """``PHM_MAX_DECOMPRESSION_RATIO`` (default 100): the most a .csv.gz may expand."""
    value = os.environ.get("PHM_MAX_DECOMPRESSION_RATIO")
    if not value:
        return DEFAULT_MAX_DECOMPRESSION_RATIO
    ratio = float(value)
    if not ratio > 1:
        raise ValueError(f"PHM_MAX_DECOMPRESSION_RATIO must be > 1, got {value!r}")
    return ratio


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


def _check_inside(entry: ManifestEntry) -> None:
    """Refuse a delivery file that is a symbolic link resolving outside the delivery folder
    (the pipeline reads only what was delivered); links within the folder are followed."""
    path = entry.file
    if not path.is_symlink():
        return
    folder = path.parent.resolve()
    target = path.resolve()
    if not target.is_relative_to(folder):
        raise DeliveryError(path, "is a symbolic link pointing outside the delivery: refused")


class _BoundedGunzip:
    """Streaming gzip decompression (several members allowed) in bounded steps; stops at the
    first fault (expansion beyond ``limit`` bytes, invalid or truncated gzip) and records it,
    so the caller can check the file's sha256 first: a truncated or corrupt file is reported
    as such, not as the decompression fault it causes."""

    def __init__(self, path: Path, limit: int):
        self.path = path
        self.limit = limit
        self.total = 0
        self.fault: DeliveryError | None = None
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = False  # the current member has been fed bytes

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.fault is not None:
            return
        try:
            while data:
                self._pending = True
                while True:
                    piece = self._d.decompress(data, _CHUNK)
                    self.total += len(piece)
                    if self.total > self.limit:
                        self.fault = DeliveryError(
                            self.path,
                            f"decompresses to more than {self.limit:,} bytes (over "
                            f"{max_decompression_ratio():g} times its size): refused as a "
                            "possible gzip bomb (PHM_MAX_DECOMPRESSION_RATIO)",
                        )
                        return
                    if piece:
                        yield piece
                    if self._d.eof:
                        break
                    data = self._d.unconsumed_tail
                    if not data and len(piece) < _CHUNK:
                        return  # all input consumed, nothing more buffered
                # end of a member: whatever follows starts the next one
                data = self._d.unused_data
                self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._pending = False
        except zlib.error:
            self.fault = DeliveryError(self.path, "unreadable file (not valid gzip)")

    def finish(self) -> None:
        if self.fault is None and self._pending and not self._d.eof:
            self.fault = DeliveryError(self.path, "unreadable file (gzip stream is truncated)")


class _CsvRows:
    """Data rows of CSV text fed in pieces (:func:`phm.manifest.count_csv_rows`: newlines
    outside quoted fields), and the line on which a quoted field left open was opened."""

    def __init__(self) -> None:
        self.newlines = 0  # outside quotes
        self.all_newlines = 0
        self.in_quotes = False
        self.opened_line = 0
        self.last = b""

    def feed(self, data: bytes) -> None:
        for start in range(0, len(data), _CHUNK):
            chunk = data[start : start + _CHUNK]
            n, self.in_quotes, at = _count_chunk(chunk, self.in_quotes)
            self.newlines += n
            if at >= 0:
                self.opened_line = self.all_newlines + chunk.count(b"\n", 0, at) + 1
            self.all_newlines += chunk.count(b"\n")
            if chunk:
                self.last = chunk[-1:]

    @property
    def rows(self) -> int:
        records = self.newlines + (1 if self.last not in (b"", b"\n") else 0)
        return max(records - 1, 0)


def _verified_copy(entry: ManifestEntry, copy_to: Path | None = None) -> int:
    """Read the file once, in chunks: hash it and, for a CSV, count its rows (decompressing a
    .csv.gz in bounded steps) and, when ``copy_to`` is given, write the (decompressed) bytes to
    that private file as they are hashed. Then check sha256, decompression and row count
    against the manifest; returns the row count.

    The copy is what gets parsed, so the bytes parsed are the bytes hashed, the file is read
    once and never held in memory whole."""
    path = entry.file
    _check_inside(entry)
    is_parquet = path.name.endswith(".parquet")
    digest = hashlib.sha256()
    counter = None if is_parquet else _CsvRows()
    gunzip = None
    out = open(copy_to, "xb") if copy_to is not None else None  # noqa: SIM115
    try:
        try:
            f = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError as e:
            raise DeliveryError(path, "file listed in the manifest is missing") from e
        except OSError as e:
            raise DeliveryError(path, f"unreadable file ({e.strerror or e})") from e
        with f:
            if path.name.endswith(".gz"):
                size = os.fstat(f.fileno()).st_size
                limit = max(int(size * max_decompression_ratio()), _DECOMPRESSION_FLOOR)
                gunzip = _BoundedGunzip(path, limit)
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                pieces = gunzip.feed(chunk) if gunzip is not None else (chunk,)
                for piece in pieces:
                    if counter is not None:
                        counter.feed(piece)
                    if out is not None:
                        out.write(piece)
        if gunzip is not None:
            gunzip.finish()
    finally:
        if out is not None:
            out.close()
    if digest.hexdigest() != entry.sha256:
        raise DeliveryError(path, "sha256 differs from the manifest: truncated or corrupt delivery")
    if gunzip is not None and gunzip.fault is not None:
        raise gunzip.fault
    if counter is None:
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(copy_to if copy_to is not None else path).metadata.num_rows
        except Exception as e:
            raise DeliveryError(path, _read_fault(e)) from None
    else:
        if counter.in_quotes:
            raise DeliveryError(
                path,
                f"unbalanced quote: the quoted field opened on line {counter.opened_line} "
                "is never closed",
            )
        rows = counter.rows
    if rows != entry.rows:
        raise DeliveryError(
            path, f"has {rows} data rows but the manifest says {entry.rows}: truncated or corrupt"
        )
    return rows


def verify_files(delivery: Delivery) -> None:
    """Every listed file exists inside the delivery, matches its manifest sha256 and row count,
    and decompresses within bounds (each file read once, in chunks, nothing kept).
    :func:`read_table_checked` checks the bytes it parses again (a file replaced after this
    check is caught there)."""
    for entry in delivery.entries.values():
        t0 = time.perf_counter()
        rows = _verified_copy(entry)
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


def _header_names(entry: ManifestEntry, copy: Path) -> list[str]:
    """The column names exactly as delivered (polars would rename duplicates)."""
    path = entry.file
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(copy).names)
        except Exception as e:
            raise DeliveryError(path, _read_fault(e)) from None
    with open(copy, "rb") as f:
        first = f.readline()
    first = first[:-1] if first.endswith(b"\n") else first
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DeliveryError(path, "wrong encoding: not UTF-8") from None
    return next(csv.reader([text.rstrip("\r")]), [])


def _check_header(entry: ManifestEntry, names: list[str]) -> None:
    path = entry.file
    clean = [n.lstrip("\ufeff").strip() for n in names]
    seen: dict[str, str] = {}
    dups = []
    for n in clean:
        if n.lower() in seen:
            dups.append(n if n == seen[n.lower()] else f"{seen[n.lower()]}/{n}")
        seen.setdefault(n.lower(), n)
    if dups:
        raise DeliveryError(
            path, f"duplicate column name(s) in the header: {', '.join(sorted(set(dups)))}"
        )
    reserved = [n for n in clean if n.lower() in RESERVED_COLUMNS]
    if reserved:
        raise DeliveryError(
            path,
            f"column(s) {', '.join(reserved)} clash with the pipeline's own columns "
            f"({', '.join(RESERVED_COLUMNS)}): rename them in the extract",
        )


def _parquet_as_strings(entry: ManifestEntry, copy: Path) -> pl.DataFrame:
    """Parquet as text like a CSV; a contract ``date`` column stored as a timestamp is taken as
    its date when every value is at midnight, otherwise the file is refused."""
    df = pl.read_parquet(copy)
    contract = TABLES[entry.table]
    date_columns = {c.name for c in contract.columns if c.type == "date"}
    out = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if dtype == pl.Boolean:
            out.append(
                pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).alias(name)
            )
        elif isinstance(dtype, pl.Datetime) and name.strip() in date_columns:
            off_midnight = df.select(
                (col.cast(pl.Date).cast(pl.Datetime(dtype.time_unit, dtype.time_zone)) != col).sum()
            ).item()
            if off_midnight:
                raise DeliveryError(
                    entry.file,
                    f"column {name} is a date in the contract but is stored as a timestamp "
                    f"with a time of day in {off_midnight} row(s): converting would lose "
                    "information; deliver it as a date",
                )
            out.append(col.dt.strftime("%Y-%m-%d").alias(name))
        elif isinstance(dtype, pl.Datetime):
            out.append(col.dt.strftime("%Y-%m-%dT%H:%M:%S").alias(name))
        elif dtype == pl.Date:
            out.append(col.dt.strftime("%Y-%m-%d").alias(name))
        else:
            out.append(col.cast(pl.String).alias(name))
    return df.select(out)


def read_table(entry: ManifestEntry, workdir: Path | str | None = None) -> pl.DataFrame:
    """A table exactly as delivered: every column as text (empty field = null) plus
    ``_row_number`` (1-based data row in the file). Unknown extra columns are kept.

    A missing optional (v2) column is added as all null; see :func:`read_table_checked` for
    which ones were missing."""
    return read_table_checked(entry, workdir)[0]


def read_table_checked(
    entry: ManifestEntry, workdir: Path | str | None = None
) -> tuple[pl.DataFrame, list[str]]:
    """:func:`read_table` and the optional (later contract version) columns the file lacks,
    in contract order; those columns are in the frame, all null.

    The file is read once: hashed while copied (decompressed) to a private temporary file in
    ``workdir`` (default the system's temporary folder; a folder only the pipeline's user can
    read), which is checked against the manifest, parsed, and deleted."""
    path = entry.file
    with tempfile.TemporaryDirectory(prefix="phm-ingest-", dir=workdir) as scratch:
        copy = Path(scratch) / ("table.parquet" if path.name.endswith(".parquet") else "table.csv")
        _verified_copy(entry, copy)
        _check_header(entry, _header_names(entry, copy))
        try:
            if path.name.endswith(".parquet"):
                df = _parquet_as_strings(entry, copy)
            else:
                df = pl.read_csv(copy, infer_schema=False, encoding="utf8", raise_if_empty=False)
        except DeliveryError:
            raise
        except Exception as e:
            # ``from None``: the reader's message (and so its traceback in the Dagster event
            # log) can quote the content of a field, i.e. a delivered value
            raise DeliveryError(path, _read_fault(e)) from None
    # strip a BOM polars may leave on the first header and stray spaces around names
    df = df.rename({c: c.lstrip("\ufeff").strip() for c in df.columns})
    contract = TABLES[entry.table]
    missing = [c for c in contract.required_column_names if c not in df.columns]
    if missing:
        raise DeliveryError(path, f"missing required column(s): {', '.join(missing)}")
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
