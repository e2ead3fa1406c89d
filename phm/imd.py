"""The English Indices of Deprivation 2019 on LSOA 2011: the one path and the one reader.

The vendored tidy file (``data/reference/imd2019/``; provenance and licence in
``data/reference/SOURCES.md`` section 1) is read here for the patient measures, the
geography and the synthetic data generator alike.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from phm.paths import REFERENCE_DIR

IMD2019_PATH = REFERENCE_DIR / "imd2019" / "imd2019_lsoa11_england_tidy.csv.gz"


def load_imd2019(path: Path | str | None = None) -> pl.DataFrame:
    """IoD2019 for every LSOA 2011 in England: all domains' ranks and deciles, IDACI, IDAOPI,
    transformed domain scores and the mid-2015 denominators (the tidy file's columns), with
    the keys renamed ``lsoa11_code`` / ``lsoa11_name`` and ``imd_quintile`` added
    (``ceil(decile / 2)``; 1 = most deprived). Sorted by code."""
    df = pl.read_csv(Path(path) if path else IMD2019_PATH, infer_schema_length=None)
    missing = {"lsoa11cd", "lsoa11nm", "imd_decile"} - set(df.columns)
    if missing:
        raise ValueError(f"IMD 2019 file lacks column(s): {', '.join(sorted(missing))}")
    df = df.rename({"lsoa11cd": "lsoa11_code", "lsoa11nm": "lsoa11_name"})
    df = df.with_columns(((pl.col("imd_decile") + 1) // 2).cast(pl.Int64).alias("imd_quintile"))
    return df.sort("lsoa11_code")
