"""One writer per run folder: RUN/.facemark.lock, held while train, pipeline, export or quantize runs.

The lock file is created with O_CREAT | O_EXCL (atomic: of two processes, exactly one creates it)
and holds JSON: pid, host, verb, started (UTC ISO time) and, on Linux, the process start time
(so a pid reused by an unrelated process after a crash is not mistaken for the holder). It is
removed when the holder finishes, fails or is interrupted (Ctrl-C, SIGTERM). A second writer gets a
FacemarkError naming the holder. A lock left by a killed process (same host, pid gone or reused)
is stale: it is taken over with a note on stderr. A lock from another host cannot be checked, so
it is refused with the path to delete once that process is known to be gone.

Locks are re-entrant within a process (the pipeline holds the lock and calls train, export and
quantize on the same folder), so nested `hold_run_lock` calls on a folder this process already
holds do nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from facemark.errors import FacemarkError
from facemark.interrupt import deferred
from facemark.rundir import LOCK_NAME

# A lock file is written right after it is created; one still empty after this long was left
# by a process killed in between.
UNREADABLE_GRACE_S = 2.0
_held: dict[Path, int] = {}   # resolved run folder -> nesting depth, in this process


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK_NAME


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot, /proc/PID/stat field 22), None when
    unknown (no /proc, or no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]   # fields after "(comm)" start at field 3


def _alive(pid: int, start: str | None) -> bool:
    """Is the process that wrote a lock on this host still running?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by another user
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start   # a different start time: pid reused


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's record; None when it vanished. Waits briefly for a lock being written."""
    deadline = time.monotonic() + UNREADABLE_GRACE_S
    while True:
        try:
            record = json.loads(path.read_text())
            if isinstance(record, dict) and isinstance(record.get("pid"), int):
                return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise FacemarkError(f"{path}: run folder lock is unreadable; if no facemark process is using "
                                f"{path.parent}, delete {path}")
        time.sleep(0.05)


def _describe(record: dict[str, Any]) -> str:
    return (f"pid {record.get('pid')} on {record.get('host')}, `facemark {record.get('verb')}` since "
            f"{record.get('started')}")


def _create(path: Path, verb: str) -> bool:
    """Atomically create the lock with this process's record; False if one exists."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "verb": verb,
              "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "process_start": _process_start(os.getpid())}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _take_over(path: Path, stale: dict[str, Any]) -> None:
    """Remove a stale lock, unless another process replaced it in the meantime.

    The lock is moved aside (atomic) and checked: if what was moved is not the stale record
    (a faster process took it over first), it is put back with os.link, which never overwrites.
    """
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    try:
        moved = json.loads(aside.read_text())
    except (OSError, ValueError):
        moved = None
    if moved != stale:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink()
    if moved == stale:
        print(f"facemark: note: took over the stale lock {path} ({_describe(stale)}: that process is gone)",
              file=sys.stderr)


def acquire(run_dir: Path, verb: str) -> None:
    """Take RUN's lock for `verb` or raise FacemarkError naming the holder."""
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for _ in range(3):   # create; or find a stale lock, take it over and create again
        if _create(path, verb):
            return
        record = _read(path)
        if record is None:
            continue
        if record.get("host") != host:
            raise FacemarkError(f"{path.parent}: run folder is in use by {_describe(record)}; if that process "
                                f"is gone, delete {path}")
        if record["pid"] == os.getpid() or _alive(record["pid"], record.get("process_start")):
            raise FacemarkError(f"{path.parent}: run folder is in use by {_describe(record)}; wait for it to "
                                f"finish or use another run folder")
        _take_over(path, record)
    raise FacemarkError(f"{path}: could not take the run folder lock (other processes keep taking it)")


def release(run_dir: Path) -> None:
    """Remove RUN's lock if this process holds it (never someone else's)."""
    path = lock_path(run_dir)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if record.get("pid") == os.getpid() and record.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold_run_lock(run_dir: Path, verb: str) -> Iterator[None]:
    """Hold RUN's lock for the duration of the block (re-entrant within this process). A run
    folder this creates for the lock is removed again if the block leaves it empty (a verb that
    failed before writing anything leaves no trace)."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    created = not run_dir.exists()
    try:
        # a Ctrl-C or SIGTERM that arrives while the lock file is being created and written is
        # raised once it is held, so the clean-up below always removes it (facemark.interrupt)
        with deferred():
            acquire(run_dir, verb)
            _held[key] = 1
        yield
    finally:
        if _held.pop(key, None):
            release(run_dir)
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()   # only if empty
