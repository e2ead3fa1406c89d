"""Files a run creates are for their owner only: the home holds NHS numbers (the identity
table, the PCN exports) and the pseudonymisation key's products.

:func:`owner_only` sets the process umask to 077 for a block, so everything created inside it
(the warehouse and its WAL, exports, models, Dagster's event log and compute logs) is 0600
and every new folder 0700; :func:`private_dir` creates a folder 0700 and tightens one that
exists. See docs/security.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the umask of a run: no permission for group or others
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700


@contextmanager
def owner_only() -> Iterator[None]:
    """Run the block with umask 077 (restored afterwards). The umask is per process: do not
    use it around work in other threads that must create shared files."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_dir(path: Path | str) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700: nobody else can list it or
    reach anything beneath it, whatever the modes of older files inside."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR_MODE)
    return path
