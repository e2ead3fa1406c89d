"""Atomic file writes (a file is either the old one or the whole new one, never half written)
and the one CSV writer (formula-like text neutralised).

The new content goes to a hidden temporary file beside the target (same directory, so the same
file system) and is then moved over it with :func:`os.replace`, which is atomic on POSIX and
Windows. A failed write leaves the target untouched and removes the temporary file.

The temporary file is created exclusively (``O_CREAT | O_EXCL``, a fresh random name) with
its final permissions from the start: a file written with ``mode=0o600`` (a key, NHS numbers)
is never readable by anyone else, not even for the moment between writing and renaming.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl


@contextmanager
def atomic_path(path: Path | str, *, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, move it onto
    ``path`` (with permissions ``mode`` if given). For writers that take a file name.

    The temporary file already exists (empty, with its final permissions) when the block
    starts; a writer that opens it for writing keeps them. On any exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path, mode)
    try:
        yield tmp
        if mode is not None:
            tmp.chmod(mode)  # a writer that re-created the file may have widened it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(path: Path, mode: int | None) -> Path:
    """Create an empty, new temporary file beside ``path``: with permissions ``mode`` from
    the start if given (whatever the umask), else those of any new file (0o666 less umask).
    Writers that open it for writing keep its permissions."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666 if mode is None else mode & 0o777)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        break
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # exactly ``mode``: the umask can only have narrowed it
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def atomic_write_bytes(path: Path | str, data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(
    path: Path | str, text: str, *, encoding: str = "utf-8", mode: int | None = None
) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding), mode=mode)


# ------------------------------------------------------------------------------ CSV

#: A text cell starting with one of these is read as a formula by spreadsheet programs
#: (OWASP, "CSV Injection": https://owasp.org/www-community/attacks/CSV_Injection).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

_TEXT_TYPES = (pl.String, pl.Categorical, pl.Enum)


def neutralise_formulas(df: pl.DataFrame) -> pl.DataFrame:
    """Prefix ``'`` to every text cell that starts with a formula character (OWASP), so a
    spreadsheet shows it as text. Numeric, date and boolean columns are left as they are
    (a negative number stays a number); categorical text is written as plain text."""
    pattern = "^[" + "".join("\\" + c if c in "-\\" else c for c in FORMULA_START) + "]"
    exprs = []
    for name, dtype in df.schema.items():
        if isinstance(dtype, _TEXT_TYPES) or dtype in _TEXT_TYPES:
            text = pl.col(name).cast(pl.String)
            exprs.append(
                pl.when(text.str.contains(pattern))
                .then(pl.lit("'") + text)
                .otherwise(text)
                .alias(name)
            )
    return df.with_columns(exprs) if exprs else df


def csv_bytes(df: pl.DataFrame, **options) -> bytes:
    """``df`` as UTF-8 CSV bytes with formula-like text neutralised (see
    :func:`neutralise_formulas`); ``options`` go to :meth:`polars.DataFrame.write_csv`. The
    one way the project turns a frame into CSV."""
    options.setdefault("line_terminator", "\n")
    return neutralise_formulas(df).write_csv(**options).encode("utf-8")


def write_csv(df: pl.DataFrame, path: Path | str, *, mode: int | None = None, **options) -> Path:
    """Write ``df`` to ``path`` as CSV, atomically, with formula-like text neutralised."""
    return atomic_write_bytes(path, csv_bytes(df, **options), mode=mode)
