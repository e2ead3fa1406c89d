"""The English Indices of Deprivation: the one path, the one configuration and the one reader.

The vendored tidy IoD2019 file on LSOA 2011 (``data/reference/imd2019/``; provenance and
licence in ``data/reference/SOURCES.md`` section 1) is the default index, read here for the
patient measures, the geography and the synthetic data generator alike.

A deployment can use another index (e.g. IMD 2025 on LSOA 2021) without code changes:

* ``PHM_IMD_PATH``: a CSV (optionally gzipped) with one row per LSOA: a code column
  (``lsoa11cd`` / ``lsoa21cd``, ``lsoa_code``, or the published header ``LSOA code (2011)`` /
  ``LSOA code (2021)``) and a decile column (``imd_decile`` or the published header starting
  ``Index of Multiple Deprivation (IMD) Decile``), 1 = most deprived 10% of LSOAs;
* ``PHM_IMD_VINTAGE``: its name, shown in the measures and reports (required with a path;
  default ``IMD2019``);
* ``PHM_IMD_LSOA_VINTAGE``: ``2011`` or ``2021``, the LSOA geography it is published on,
  which decides the patient column joined to it (``gp_patients.lsoa11_code`` or
  ``lsoa21_code``; default ``2011``).

A patient whose LSOA the index does not cover (e.g. a new 2021 code under an index on LSOA
2011), or who has no LSOA, is "deprivation unknown": never in a deprivation decile, counted
in the data-quality report and the cohort summaries (:mod:`phm.validate`,
:func:`phm.exports.cohort_summary`).

The geography (``geo/``) maps LSOA 2011 boundaries and keeps using :func:`load_imd2019`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import polars as pl

from phm.paths import REFERENCE_DIR

IMD2019_PATH = REFERENCE_DIR / "imd2019" / "imd2019_lsoa11_england_tidy.csv.gz"

ENV_PATH = "PHM_IMD_PATH"
ENV_VINTAGE = "PHM_IMD_VINTAGE"
ENV_LSOA_VINTAGE = "PHM_IMD_LSOA_VINTAGE"
LSOA_VINTAGES = (2011, 2021)
_VINTAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}$")
_DECILE_HEADER = "Index of Multiple Deprivation (IMD) Decile"


@dataclass(frozen=True)
class ImdConfig:
    """Which deprivation index the measures use, and on which LSOA geography."""

    path: Path = IMD2019_PATH
    vintage: str = "IMD2019"
    lsoa_vintage: int = 2011

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.lsoa_vintage not in LSOA_VINTAGES:
            raise ValueError(
                f"IMD LSOA vintage must be one of {LSOA_VINTAGES}, got {self.lsoa_vintage!r}"
            )
        if not _VINTAGE.match(str(self.vintage)):
            raise ValueError(f"IMD vintage name must be short plain text, got {self.vintage!r}")

    @property
    def lsoa_column(self) -> str:
        """The ``gp_patients`` column joined to the index: ``lsoa11_code`` or ``lsoa21_code``."""
        return f"lsoa{self.lsoa_vintage % 100}_code"

    @property
    def label(self) -> str:
        """E.g. ``IMD2019 on LSOA 2011``."""
        return f"{self.vintage} on LSOA {self.lsoa_vintage}"


DEFAULT_IMD = ImdConfig()


def imd_config(environ: Mapping[str, str] | None = None) -> ImdConfig:
    """The configured index (environment variables above; the vendored IMD 2019 by default)."""
    env = os.environ if environ is None else environ
    path = (env.get(ENV_PATH) or "").strip()
    vintage = (env.get(ENV_VINTAGE) or "").strip()
    lsoa = (env.get(ENV_LSOA_VINTAGE) or "").strip()
    if path and not vintage:
        raise ValueError(f"{ENV_PATH} is set: set {ENV_VINTAGE} too (e.g. IMD2025)")
    try:
        lsoa_vintage = int(lsoa) if lsoa else 2011
    except ValueError:
        raise ValueError(f"{ENV_LSOA_VINTAGE} must be 2011 or 2021, got {lsoa!r}") from None
    return ImdConfig(
        path=Path(path) if path else IMD2019_PATH,
        vintage=vintage or "IMD2019",
        lsoa_vintage=lsoa_vintage,
    )


def _pick(columns: list[str], candidates: list[str], prefix: str | None, what: str, path) -> str:
    for c in candidates:
        if c in columns:
            return c
    if prefix:
        hits = [c for c in columns if c.startswith(prefix)]
        if len(hits) == 1:
            return hits[0]
    raise ValueError(f"deprivation index file {path}: no {what} column (tried {candidates})")


def read_imd_deciles(config: ImdConfig | None = None) -> pl.DataFrame:
    """``lsoa_code`` (String, unique) and ``imd_decile`` (Int32, 1..10) of the configured
    index, sorted by code. Fails clearly on a missing file, column, bad or duplicate row."""
    config = config if config is not None else imd_config()
    if not config.path.is_file():
        raise FileNotFoundError(f"deprivation index file not found: {config.path}")
    stat = config.path.stat()
    return _read_deciles(config.path, config.lsoa_vintage, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _read_deciles(path: Path, lsoa_vintage: int, _mtime: int, _size: int) -> pl.DataFrame:
    df = pl.read_csv(path, infer_schema=False)
    yy = lsoa_vintage % 100
    code = _pick(
        df.columns,
        [f"lsoa{yy}cd", f"LSOA{yy}CD", "lsoa_code", f"LSOA code ({lsoa_vintage})"],
        None,
        f"LSOA {lsoa_vintage} code",
        path,
    )
    decile = _pick(df.columns, ["imd_decile"], _DECILE_HEADER, "IMD decile", path)
    out = df.select(
        pl.col(code).str.strip_chars().alias("lsoa_code"),
        pl.col(decile).str.strip_chars().cast(pl.Int32, strict=False).alias("imd_decile"),
    )
    bad = out.filter(
        pl.col("lsoa_code").is_null()
        | pl.col("imd_decile").is_null()
        | ~pl.col("imd_decile").is_between(1, 10)
    )
    if bad.height:
        raise ValueError(
            f"deprivation index file {path}: {bad.height} row(s) without an LSOA code or "
            "with a decile outside 1..10"
        )
    if out["lsoa_code"].is_duplicated().any():
        raise ValueError(f"deprivation index file {path}: duplicate LSOA codes")
    return out.sort("lsoa_code")


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
