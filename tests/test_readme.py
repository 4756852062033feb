"""No stale docs: every command in the README's code blocks is valid against the real CLI and Makefile.

`facemark ...` lines (also behind torchrun) must parse with the real argument parser, config files
they name must exist, `make ...` targets must exist (make -n), and the two first commands must be
`make demo` and `make test`, the test command CI runs (.ci/run). The commands themselves run in
`make demo` and in the stage tests.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from facemark.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_first_commands_are_demo_and_test():
    commands = readme_commands()
    assert commands[:2] == ["make demo", "make test"]
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("line", [c for c in readme_commands() if "facemark " in c and " ... " not in c])
def test_facemark_commands_parse(line):
    words = shlex.split(line)
    words = words[words.index("facemark") + 1:]
    if words and words[0] == "--":  # torchrun ... -m facemark -- VERB
        words = words[1:]
    args = build_parser().parse_args(words)
    for attr in ("config", "configs"):
        value = getattr(args, attr, None)
        for path in value if isinstance(value, list) else [value]:
            if path is not None:
                assert (REPO / path).exists(), f"README names {path}, which does not exist"


@pytest.mark.parametrize("line", [c for c in readme_commands() if c.startswith("make ")])
def test_make_targets_exist(line):
    result = subprocess.run(["make", "-n", *shlex.split(line)[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
