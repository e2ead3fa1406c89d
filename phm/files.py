"""Atomic file writes: a file is either the old one or the whole new one, never half written.

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
