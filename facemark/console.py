"""A quiet console: third-party noise goes to the run's log file, facemark's own lines to the terminal.

The toolchains talk a lot: coremltools ("Failed to load _MLModelProxy"), torch.jit and torch.onnx
(FutureWarning, TracerWarning, DeprecationWarning), TensorFlow and onnx2tf (C++ logs written
straight to file descriptor 2, blank lines), conversion progress bars. While `quiet_console` is
active:
- file descriptors 1 and 2, where C/C++ libraries and inherited child processes write, point at
  the log file;
- sys.stdout / sys.stderr, which facemark's print() and tqdm bars use, write to the terminal
  through duplicates of the original descriptors;
- Python warnings and the logging module's records go to the log (torch's logger, which prints
  to stderr itself, too), and so do "Exception ignored in ..." reports (sys.unraisablehook): a
  Ctrl-C that lands inside a library constructor (tqdm's) leaves a half-built object whose
  __del__ fails, noise the user should not see under "interrupted";
- `captured()` sends sys.stdout / sys.stderr to the log too, around third-party Python calls
  that print (coremltools' conversion passes).
The log is written in a temporary file and appended to `log_path` at the end when its folder
exists and something was logged (a command refused before it made its run folder, or refused by
the run lock, leaves nothing behind). Under a test
runner or any caller that has replaced sys.stdout / sys.stderr, descriptors are left alone and
only warnings and logging are routed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shlex
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

_log_stream: TextIO | None = None   # the active log, for captured()


@contextlib.contextmanager
def captured() -> Iterator[None]:
    """sys.stdout / sys.stderr into the active log (no-op outside quiet_console)."""
    if _log_stream is None:
        yield
        return
    with contextlib.redirect_stdout(_log_stream), contextlib.redirect_stderr(_log_stream):
        yield


@contextlib.contextmanager
def quiet_console(log_path: Path, argv: list[str]) -> Iterator[None]:
    """Route third-party output to `log_path` (appended) for the duration; see the module docstring."""
    global _log_stream
    handle, tmp_name = tempfile.mkstemp(prefix="facemark-", suffix=".log")
    log = os.fdopen(handle, "w", buffering=1, encoding="utf-8", errors="replace")
    log.write(f"== {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} "
              f"{shlex.join(['facemark', *argv])}\n")
    redirect = sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__ and sys.__stderr__ is not None
    saved = _redirect_descriptors(log) if redirect else None
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    own = _own_handlers(handler)
    previous_stream, _log_stream = _log_stream, log
    previous_hook, sys.unraisablehook = sys.unraisablehook, lambda report: _log_unraisable(log, report)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log.write(
                warnings.formatwarning(message, category, filename, lineno, line))
            yield
    except KeyboardInterrupt as exc:
        # the interrupted frames' objects are finalised here, while their reports still go to the log
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        sys.unraisablehook = previous_hook
        _log_stream = previous_stream
        root.removeHandler(handler)
        for logger, handlers in own.items():
            logger.handlers[:] = handlers
        if saved is not None:
            _restore_descriptors(saved)
        log.close()
        _append(Path(tmp_name), Path(log_path))


def _log_unraisable(log: TextIO, report: "sys.UnraisableHookArgs") -> None:
    """Write a sys.unraisablehook report as Python's default hook would, into the log."""
    where = report.err_msg or "Exception ignored in"
    log.write(f"{where}: {report.object!r}\n")
    log.write("".join(traceback.format_exception(report.exc_type, report.exc_value, report.exc_traceback)))


# loggers that do not propagate to the root and write to sys.stderr (at emit time) themselves
SELF_PRINTING_LOGGERS = ("torch",)


def _own_handlers(handler: logging.Handler) -> dict[logging.Logger, list[logging.Handler]]:
    """Point SELF_PRINTING_LOGGERS at `handler` (the log) -> their handlers, to restore. torch
    sets up its logger at import, so it is imported here (every verb with a log runs it anyway)."""
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
    saved = {}
    for name in SELF_PRINTING_LOGGERS:
        logger = logging.getLogger(name)
        saved[logger] = list(logger.handlers)
        logger.handlers[:] = [handler]
    return saved


def _redirect_descriptors(log: TextIO) -> tuple[int, int, TextIO, TextIO]:
    """fds 1, 2 -> the log; sys.stdout / sys.stderr -> the terminal (duplicated fds)."""
    sys.stdout.flush()
    sys.stderr.flush()
    terminal_out, terminal_err = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = os.fdopen(os.dup(terminal_out), "w", buffering=1, encoding=old_out.encoding, errors="replace")
    sys.stderr = os.fdopen(os.dup(terminal_err), "w", buffering=1, encoding=old_err.encoding, errors="replace")
    return terminal_out, terminal_err, old_out, old_err


def _restore_descriptors(saved: tuple[int, int, TextIO, TextIO]) -> None:
    terminal_out, terminal_err, old_out, old_err = saved
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
        stream.close()
    os.dup2(terminal_out, 1)
    os.dup2(terminal_err, 2)
    os.close(terminal_out)
    os.close(terminal_err)
    sys.stdout, sys.stderr = old_out, old_err


def _append(source: Path, target: Path) -> None:
    """Append the temporary log to `target` when its folder exists and anything beyond the header
    line was logged (a refused command writes nothing into the run folder); remove the temporary file."""
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
        if target.parent.is_dir() and text.count("\n") > 1:
            with open(target, "a", encoding="utf-8") as out:
                out.write(text)
    finally:
        source.unlink(missing_ok=True)
