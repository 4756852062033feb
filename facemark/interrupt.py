"""Interruptions: Ctrl-C (SIGINT) and SIGTERM take one path, and child processes stop with us.

Containers, Kubernetes, Slurm and CI runners stop a job with SIGTERM (then SIGKILL after a grace
period), a terminal with Ctrl-C. `handled()` (entered once, by the CLI) installs one handler for
both: SIGINT raises KeyboardInterrupt as Python's own handler does, SIGTERM raises Terminated, a
KeyboardInterrupt, so every `except KeyboardInterrupt` clean-up (atomic writes, the run lock, work
folders) runs for both and the CLI reports either in one line (exit 130 or 143).

- `deferred()`: a block that mutates several objects together (one optimiser step: weights,
  optimiser, schedule, EMA) finishes before a signal that arrives inside it is raised, so the
  state an interrupted trainer saves is the state after a whole step. A second signal inside the
  block is raised at once (the user insists).
- `run_child(...)`: subprocess.run for our own child processes (artifact harness, onnx2tf). A
  SIGTERM sent to facemark alone (`docker stop`, `kill PID`) does not reach them as a terminal's
  Ctrl-C reaches the whole process group, and threads waiting on them would hold the exit; the
  handler therefore sends each running child SIGTERM, and no new child starts once interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}   # 128 + signal number, as shells report it
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

_lock = threading.Lock()
_children: set[subprocess.Popen] = set()
_state = {"installed": False, "stopping": False, "depth": 0, "pending": None}


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: handled like Ctrl-C (exit code 143 instead of 130)."""


def signal_of(exc: KeyboardInterrupt) -> signal.Signals:
    """The signal behind an interruption: SIGTERM for Terminated, else SIGINT."""
    return signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT


def _interrupt(signum: int) -> None:
    """Stop our children, then raise the interruption of `signum` in the main thread."""
    with _lock:
        _state["stopping"] = True
        running = list(_children)
    for child in running:
        with contextlib.suppress(OSError):
            child.send_signal(signal.SIGTERM)
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt()


def _handler(signum: int, frame: Any) -> None:
    if _state["depth"] and _state["pending"] is None:
        _state["pending"] = signum   # raised when the deferred block ends
        return
    _interrupt(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt / Terminated for the duration (main thread only;
    a signal the parent told us to ignore, as `nohup` or a background shell does with SIGINT,
    stays ignored). The previous handlers come back afterwards, and an interruption handled inside
    the block no longer stops `run_child` after it (a library caller goes on in the same process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in EXIT_CODES}
    for number, current in previous.items():
        if current is not signal.SIG_IGN:
            signal.signal(number, _handler)
    _state.update(installed=True, stopping=False, depth=0, pending=None)
    try:
        yield
    finally:
        _state.update(installed=False, stopping=False, depth=0, pending=None)
        for number, current in previous.items():
            signal.signal(number, current)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a SIGINT/SIGTERM that arrives inside the block until its end (see the module docstring).
    Without `handled()` (facemark used as a library) signals are not deferred."""
    if not _state["installed"] or threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        pending = _state["pending"]
        if not _state["depth"] and pending is not None:
            _state["pending"] = None
            _interrupt(pending)


def deferred_items(iterable: Iterable[T]) -> Iterator[T]:
    """The items of `iterable`, each fetched inside deferred(): a DataLoader batch that is still
    arriving from a worker (a file descriptor passed over a socket) finishes arriving, else the
    worker reports the connection its parent dropped with a traceback."""
    items = iter(iterable)
    while True:
        with deferred():
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


def run_child(command: list[str], timeout: float | None = None, capture_output: bool = False,
              **popen_args: Any) -> subprocess.CompletedProcess:
    """subprocess.run(command, timeout=..., capture_output=..., **popen_args) whose child an
    interruption stops (SIGTERM). Raises subprocess.TimeoutExpired (child killed) like run(), and
    KeyboardInterrupt when called after an interruption (from a worker thread still running)."""
    if capture_output:
        popen_args.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with _lock:
        if _state["stopping"]:
            raise KeyboardInterrupt()
        child = subprocess.Popen(command, **popen_args)
        _children.add(child)
    try:
        with child:
            try:
                stdout, stderr = child.communicate(timeout=timeout)
            except BaseException:   # timeout or interruption: never leave the child running
                child.kill()
                raise
    finally:
        with _lock:
            _children.discard(child)
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
