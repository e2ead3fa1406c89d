"""Delivery manifests: ``_manifest.json`` lists each table's file, row count and sha256.

The manifest is written last: a folder without one is still arriving.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from phm.contract import CONTRACT_VERSION, MANIFEST_NAME
from phm.files import atomic_write_text

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV (or .csv.gz) file: records after the header, honouring RFC 4180 quotes.

    Counts newlines outside quoted fields, so a quoted value holding a line break is one row.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    newlines = 0
    in_quotes = False
    last = b""
    with opener(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            n, in_quotes, _ = _count_chunk(chunk, in_quotes)
            newlines += n
            last = chunk[-1:]
    records = newlines + (1 if last not in (b"", b"\n") else 0)
    return max(records - 1, 0)


def _count_chunk(chunk: bytes, in_quotes: bool) -> tuple[int, bool, int]:
    """Newlines outside quotes in ``chunk``, the quote state after it, and the offset of the
    last quote that opened a field (-1 if none)."""
    if b'"' not in chunk and not in_quotes:
        return chunk.count(b"\n"), in_quotes, -1
    newlines, opened, offset = 0, -1, 0
    for part_index, part in enumerate(chunk.split(b'"')):
        if part_index:
            in_quotes = not in_quotes
            if in_quotes:
                opened = offset - 1
        if not in_quotes:
            newlines += part.count(b"\n")
        offset += len(part) + 1
    return newlines, in_quotes, opened


def count_csv_rows_bytes(data: bytes) -> tuple[int, int | None]:
    """:func:`count_csv_rows` of CSV text in memory, and, when a quoted field is never closed,
    the byte offset of its opening quote (else None)."""
    newlines, in_quotes, opened = 0, False, -1
    for start in range(0, len(data), _CHUNK):  # in slices: split() would copy the whole file
        n, in_quotes, at = _count_chunk(data[start : start + _CHUNK], in_quotes)
        newlines += n
        if at >= 0:
            opened = start + at
    records = newlines + (1 if data[-1:] not in (b"", b"\n") else 0)
    return max(records - 1, 0), (opened if in_quotes else None)


def count_parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def count_rows(path: Path) -> int:
    if path.name.endswith(".parquet"):
        return count_parquet_rows(path)
    return count_csv_rows(path)


def write_manifest(folder: Path, extract_date: str, files: dict[str, Path]) -> Path:
    """Write ``_manifest.json`` for the table files in ``folder`` (atomically, last).

    ``files`` maps table name to its file path; rows and sha256 are computed from the files.
    """
    entries = {
        table: {"file": path.name, "rows": count_rows(path), "sha256": sha256_file(path)}
        for table, path in sorted(files.items())
    }
    manifest = {
        "extract_date": extract_date,
        "contract_version": CONTRACT_VERSION,
        "files": entries,
    }
    target = folder / MANIFEST_NAME
    return atomic_write_text(target, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
