"""What the bad-input test files share: run the CLI and read its one error line, find a split's
first file, check that nothing partial is left, and start `python -m facemark` as a child."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from facemark.cli import main

COUNTS = {"train": 6, "val": 3, "test": 3}   # the faces per split of the catalogue's dataset (conftest.py)


def error_line(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI; assert the exit code, no traceback and exactly one error line; return that line."""
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def first(root: Path, split: str, sub: str) -> Path:
    return sorted((root / split / sub).iterdir())[0]


def no_partial(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.name.endswith(".partial")]
    assert not leftovers, leftovers


def facemark_child(argv: list[str], **popen) -> subprocess.Popen:
    """`python -m facemark ARGV` in its own process group (as a container or a Slurm step runs it),
    stdout and stderr piped unless `popen` says otherwise."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, "-m", "facemark", *map(str, argv)], text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True, **popen)


def replace_line(root: Path, split: str, index: int, text: str) -> Path:
    """Overwrite line `index` (0 = the count line) of the split's first landmark file."""
    path = first(root, split, "landmarks")
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")
    return path
