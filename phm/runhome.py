"""One run at a time per home, and a run's results promoted together or not at all.

**Lock.** :func:`home_lock` holds an exclusive ``fcntl.flock`` on ``HOME/.lock`` for the whole
run; the holder's pid is written in the file. A second run waits (logging which pid it waits
for) or, with ``wait=False``, raises :class:`HomeBusy`. The kernel drops the lock when the
holding process ends, however it ends (a SIGKILL included), so a stale lock cannot exist. The
lock is re-entrant within one process (the runner takes it, then the run's resources do).

**Workspace.** A run writes into ``HOME/.run/<run_id>/`` (:func:`start_run`): a copy of the
last good ``warehouse.duckdb`` (the previous delivery's model registry and history are read
from it), ``exports/<extract_date>/``, ``models/<extract_date>/`` and ``published.duckdb``.
Nothing under ``HOME`` that readers or PCNs use changes while the run computes.

**Promotion.** On success :func:`promote` writes a journal (``PROMOTE``) and then moves the
results into place with renames: the warehouse file (``os.replace``), each model folder, each
export folder (a full run replaces ``exports/<extract_date>/`` whole, so folders of PCNs no
longer in the delivery are removed; a ``--select`` run replaces only the entries it wrote),
and the published copy. Every step is idempotent; if the process dies during promotion, the
next run (:func:`recover`, under the lock) finishes it from the journal. A workspace without
a journal is an abandoned (failed or killed) run and is deleted.

**Every launcher.** ``phm run`` takes the lock, recovers and starts its workspace itself, then
ends with :func:`finish`. A run started from the Dagster UI, the schedule or a sensor does the
same through its resources (pipelines/resources.py): :func:`stage` at resource setup and
:func:`unstage` at teardown. Both resources of one run call them with the run's id and get one
workspace and one lock, counted; the last to end finishes the run (publish and promote, or
discard).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from phm.files import atomic_write_text
from phm.paths import lock_path, published_path, run_root, warehouse_path
from phm.permissions import owner_only, private_dir
from phm.publish import build_published

log = logging.getLogger("phm.runhome")

JOURNAL = "PROMOTE"
#: test hook: ``PHM_TEST_KILL_AT=promote:<step>`` SIGKILLs the process before that promotion
#: step (``warehouse``, ``models``, ``exports``, ``published``); documented in docs/operations.md
KILL_ENV = "PHM_TEST_KILL_AT"

_held: dict[str, int] = {}


class HomeBusy(RuntimeError):
    """Another run holds the home's lock (and the caller chose not to wait)."""


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def home_lock(home: Path, *, wait: bool = True) -> Iterator[Path]:
    """Hold the exclusive lock on ``home`` for the duration of the block."""
    path = lock_path(Path(home))
    key = str(path.resolve())
    if key in _held:  # this process already holds it
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _holder(path)
            if not wait:
                raise HomeBusy(
                    f"another run holds {path} (pid {holder}); not waiting (--no-wait). "
                    "Try again when it has finished."
                ) from None
            log.warning("waiting for the run that holds %s (pid %s)", path, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[key] = 1
        try:
            yield path
        finally:
            del _held[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holds_lock(home: Path) -> bool:
    return str(lock_path(Path(home)).resolve()) in _held


def start_run(home: Path, run_id: str) -> Path:
    """Create the run's workspace with a copy of the last good warehouse; returns it."""
    work = run_root(home) / run_id
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    src = warehouse_path(home)
    if src.exists():
        shutil.copyfile(src, warehouse_path(work))
        wal = src.with_name(src.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, warehouse_path(work).with_name(wal.name))
    return work


def discard(work: Path) -> None:
    """Delete a workspace that will not be promoted (a failed run)."""
    shutil.rmtree(work, ignore_errors=True)


def promote(home: Path, work: Path, *, full_exports: bool) -> None:
    """Move a successful run's results into ``home`` (see the module docstring)."""
    atomic_write_text(work / JOURNAL, json.dumps({"full_exports": full_exports}))
    _roll_forward(home, work)


def finish(home: Path, work: Path, run_id: str, *, success: bool, full_exports: bool) -> None:
    """End a run's workspace: on success build its published copy (stamped with ``run_id``)
    and :func:`promote` it; otherwise :func:`discard` it. If the published copy cannot be
    built (:class:`phm.publish.PublishRefused`, or any error), the workspace is discarded and
    the error raised: ``home`` keeps the last good state."""
    if not success:
        discard(work)
        return
    try:
        build_published(warehouse_path(work), work / "published.duckdb", run_id)
    except BaseException:
        discard(work)
        raise
    promote(home, work, full_exports=full_exports)


@dataclass
class _Staged:
    work: Path
    lock: ExitStack
    users: int = 1


#: runs staged by this process (:func:`stage`), by (home, run id)
_staged: dict[tuple[str, str], _Staged] = {}


def _staged_key(home: Path, run_id: str) -> tuple[str, str]:
    return str(Path(home).resolve()), run_id


def stage(home: Path, run_id: str, *, wait: bool = True) -> Path:
    """Begin run ``run_id`` on ``home`` as ``phm run`` does: make the home 0700 and the
    process umask 077 until the run ends, take the lock (waiting, or :class:`HomeBusy` with
    ``wait=False``), :func:`recover`, :func:`start_run`; returns the workspace. Calling it
    again for the same run in this process returns the same workspace (counted: each call
    needs its :func:`unstage`)."""
    key = _staged_key(home, run_id)
    staged = _staged.get(key)
    if staged is not None:
        staged.users += 1
        return staged.work
    lock = ExitStack()
    try:
        lock.enter_context(owner_only())  # as phm run: the home 0700, the run's files 0600
        private_dir(Path(home))
        lock.enter_context(home_lock(Path(home), wait=wait))
        recover(Path(home))
        work = start_run(Path(home), run_id)
    except BaseException:
        lock.close()
        raise
    _staged[key] = _Staged(work, lock)
    return work


def unstage(home: Path, run_id: str, *, success: bool, full_exports: bool) -> bool:
    """End one use of a staged run. The last use ends the run with :func:`finish` (promote on
    ``success``, else discard) and releases the lock, whatever happens; returns True if this
    call ended the run. Raises what :func:`finish` raises (e.g. PublishRefused)."""
    key = _staged_key(home, run_id)
    staged = _staged[key]
    staged.users -= 1
    if staged.users > 0:
        return False
    del _staged[key]
    try:
        finish(Path(home), staged.work, run_id, success=success, full_exports=full_exports)
    finally:
        staged.lock.close()
    return True


def staged_runs() -> list[tuple[str, str]]:
    """(home, run id) of the runs this process has staged and not yet finished."""
    return sorted(_staged)


def recover(home: Path) -> list[str]:
    """Finish interrupted promotions and delete abandoned workspaces; call under the lock.
    Returns what was done, one line per workspace."""
    done = []
    root = run_root(home)
    if not root.is_dir():
        return done
    for work in sorted(p for p in root.iterdir() if p.is_dir()):
        if (work / JOURNAL).exists():
            _roll_forward(home, work)
            done.append(f"finished the promotion of run {work.name}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            done.append(f"removed the workspace of unfinished run {work.name}")
    for line in done:
        log.warning(line)
    return done


def _kill_point(step: str) -> None:
    if os.environ.get(KILL_ENV) == f"promote:{step}":
        os.kill(os.getpid(), 9)


def _swap(new: Path, target: Path, trash: Path) -> None:
    """Put ``new`` at ``target`` (file or folder); an existing target goes to ``trash``.
    Idempotent: if ``new`` is gone, the swap has happened."""
    if not new.exists() and not new.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if new.is_file():
        os.replace(new, target)
        return
    if target.exists():
        trash.parent.mkdir(parents=True, exist_ok=True)
        if trash.exists():
            shutil.rmtree(trash)
        os.rename(target, trash)
    os.rename(new, target)


def _roll_forward(home: Path, work: Path) -> None:
    plan = json.loads((work / JOURNAL).read_text())
    trash = work / ".replaced"
    _kill_point("warehouse")
    wal = warehouse_path(work).with_name("warehouse.duckdb.wal")
    if wal.exists():  # a run closes its connections, so there is none; never promote half a file
        raise RuntimeError(f"{wal} exists: the run's warehouse was not closed cleanly")
    _swap(warehouse_path(work), warehouse_path(home), trash / "warehouse.duckdb")
    _kill_point("models")
    if (work / "models").is_dir():
        for folder in sorted((work / "models").iterdir()):
            _swap(folder, home / "models" / folder.name, trash / "models" / folder.name)
    _kill_point("exports")
    if (work / "exports").is_dir():
        for date_dir in sorted((work / "exports").iterdir()):
            target = home / "exports" / date_dir.name
            if plan["full_exports"] or not target.exists():
                _swap(date_dir, target, trash / "exports" / date_dir.name)
            else:
                for entry in sorted(date_dir.iterdir()):
                    _swap(
                        entry, target / entry.name, trash / "exports" / date_dir.name / entry.name
                    )
    _kill_point("published")
    _swap(work / "published.duckdb", published_path(home), trash / "published.duckdb")
    shutil.rmtree(work)
