"""Write contract tables as CSV, gzipped CSV or Parquet, byte-for-byte reproducibly."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from phm.contract import FILE_SUFFIXES, MANIFEST_NAME, TABLE_NAMES

FORMATS = {"csv": ".csv", "csv.gz": ".csv.gz", "parquet": ".parquet"}
DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


def clear_delivery(folder: Path) -> None:
    """Remove a previous manifest and table files so a rewrite never looks complete early."""
    manifest = folder / MANIFEST_NAME
    if manifest.exists():
        manifest.unlink()
    for table in TABLE_NAMES:
        for suffix in FILE_SUFFIXES:
            p = folder / f"{table}{suffix}"
            if p.exists():
                p.unlink()


def write_table(df: pl.DataFrame, folder: Path, table: str, fmt: str) -> Path:
    path = folder / f"{table}{FORMATS[fmt]}"
    if fmt == "parquet":
        df.write_parquet(path, compression="zstd", statistics=True)
        return path
    df.write_csv(
        path,
        include_header=True,
        separator=",",
        line_terminator="\n",
        quote_char='"',
        date_format=DATE_FORMAT,
        datetime_format=DATETIME_FORMAT,
        null_value="",
        compression="gzip" if fmt == "csv.gz" else "uncompressed",
    )
    return path
