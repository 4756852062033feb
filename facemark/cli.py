"""`facemark VERB ...`: argparse -> one library call per verb.

The verbs, each one entry of one table, are in facemark/verbs.py. Known user errors
(FacemarkError) become one line on stderr and exit code 2; third-party output goes to the run's
facemark.log (facemark.console); Ctrl-C and SIGTERM (facemark.interrupt) become one line saying what
was interrupted and how to resume, and exit code 130 or 143 (files are written atomically, so nothing
partial is left under a final name; the run lock is released).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

from facemark import __version__
from facemark.console import quiet_console
from facemark.errors import FacemarkError
from facemark.interrupt import EXIT_CODES, NAMES, handled, signal_of
from facemark.rundir import RunDir
from facemark.verbs import VERBS, log_path


def build_parser() -> argparse.ArgumentParser:
    """`facemark VERB ...`: one subparser per entry of VERBS, its flags added by the entry."""
    parser = argparse.ArgumentParser(prog="facemark", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"facemark {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        verb.arguments(sub.add_parser(name, help=verb.help, description=verb.description or verb.help))
    return parser


def resume_hint(args: argparse.Namespace, argv: list[str]) -> str:
    """How to pick up an interrupted command: train needs --resume once an epoch has been saved;
    every other verb resumes by running again (pipeline, export and quantize redo only what is
    missing, boxes skips cached images, benchmark and ablate reuse finished runs)."""
    command = shlex.join(["facemark", *argv])
    if args.verb == "train":
        if args.resume or RunDir(args.run).last.is_file():
            again = argv if args.resume else [*argv, "--resume"]
            return f"resume with: {shlex.join(['facemark', *again])}"
        return f"no epoch was saved; start again with: {command}"
    return f"run the same command again to resume: {command}"


PATH_ARGUMENTS = ("out", "run")


def fill_defaults(args: argparse.Namespace) -> None:
    """Arguments left out take their base.yaml default (Verb.defaults; given ones are checked by the
    verb, as everything else it reads)."""
    from facemark.config import base_value

    for attr, dotted in VERBS[args.verb].defaults.items():
        if getattr(args, attr) is None:
            value = base_value(dotted)
            setattr(args, attr, Path(value) if attr in PATH_ARGUMENTS else value)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    try:
        fill_defaults(args)
        log = log_path(args)
        with handled(), quiet_console(log, argv) if log is not None else contextlib.nullcontext():
            return VERBS[args.verb].run(args)
    except KeyboardInterrupt as exc:   # Ctrl-C, or SIGTERM (facemark.interrupt.Terminated)
        return _interrupted(args, argv, exc)
    except Exception as exc:
        interruption = _interruption_behind(exc)
        if interruption is not None:
            return _interrupted(args, argv, interruption)
        if isinstance(exc, FacemarkError):
            print(f"facemark {args.verb}: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):   # disk full, read-only folder, permission: the user's environment
            where = f" {exc.filename}" if exc.filename else ""
            print(f"facemark {args.verb}: error:{where}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        raise


def _interruption_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM an error was raised while handling: a signal that lands inside
    threading's own code or a temporary folder's cleanup can leave as the error it caused there
    ("release unlocked lock", "Directory not empty"); it is still that interruption."""
    while exc is not None and not isinstance(exc, KeyboardInterrupt):
        exc = exc.__context__
    return exc


def _interrupted(args: argparse.Namespace, argv: list[str], exc: KeyboardInterrupt) -> int:
    number = signal_of(exc)
    print(f"facemark {args.verb}: interrupted ({NAMES[number]}); {resume_hint(args, argv)}", file=sys.stderr)
    return EXIT_CODES[number]


if __name__ == "__main__":
    raise SystemExit(main())
