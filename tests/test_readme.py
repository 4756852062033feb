"""No stale docs: every command and link in README.md and docs/*.md is valid against the real code.

Commands are the lines of ```bash blocks and the inline code spans that start with `facemark VERB`
or `make TARGET`. `facemark ...` commands (also behind torchrun) must parse with the real argument
parser, the config files they name must exist and their `--set` keys must be config keys; `make ...`
targets must exist (make -n); `python benchmarks/X.py` scripts must exist; a `section.key` named in
backticks must be a config key. Every relative link (android-demo/README.md's too) must name a file
that exists and, with `#anchor`, a heading of that file. The README is a front door: under 200
lines, `make demo` and `make test` (the test command CI runs, .ci/run) first, a small picture that
exists, every CLI verb in its verb table, a Python example that uses only the real API. No doc
names a path of one machine or data copy.
The commands themselves run in `make demo` and in the stage tests; this file only reads text.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from functools import cache
from pathlib import Path

import pytest

from facemark.cli import build_parser
from facemark.verbs import VERBS
from facemark.config import leaf_fields

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
LINKED = [*DOCS, REPO / "android-demo" / "README.md"]   # link checks only: its commands are Gradle's
MAX_README_LINES = 200
MAX_IMAGE_BYTES = 150_000


def _name(path: Path) -> str:
    return str(path.relative_to(REPO))


def bash_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _is_command(span: str) -> bool:
    """`facemark VERB ARG...` is a command; `facemark VERB` and `facemark VERB --flag` name a verb or
    an option in prose; `make TARGET ...` is always a command."""
    words = span.split()
    if words[0] == "make":
        return len(words) > 1 and re.match(r"[a-z]", words[1]) is not None
    if words[0] != "facemark" or len(words) < 3 or words[1] not in VERBS:
        return False
    return not (len(words) == 3 and words[2].startswith("-"))


def inline_commands(text: str) -> list[str]:
    """Inline `facemark VERB ...` and `make TARGET ...` spans (prose outside code blocks)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return [span.strip() for span in re.findall(r"`([^`\n]+)`", prose) if _is_command(span.strip())]


def commands(path: Path) -> list[str]:
    text = path.read_text()
    return bash_lines(text) + inline_commands(text)


def _cases(kind: str) -> list:
    cases = []
    for path in DOCS:
        for line in commands(path):
            is_kind = {"facemark": "facemark " in line and "..." not in line,
                       "make": line.startswith("make "),
                       "python": re.search(r"python\S* benchmarks/", line) is not None}[kind]
            if is_kind:
                cases.append(pytest.param(line, id=f"{_name(path)}: {line[:60]}"))
    return cases


def test_first_commands_are_demo_and_test():
    assert bash_lines(README.read_text())[:2] == ["make demo", "make test"]
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text()


def test_readme_is_short_with_a_picture():
    text = README.read_text()
    assert len(text.splitlines()) < MAX_README_LINES, "README.md is a front door: details go to docs/"
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert images, "README.md shows no picture"
    for image in images:
        assert (REPO / image).is_file(), f"README.md shows {image}, which does not exist"
        assert (REPO / image).stat().st_size < MAX_IMAGE_BYTES, f"{image}: keep README pictures small"


def test_readme_verb_table_has_every_verb():
    rows = re.findall(r"^\| `([a-z-]+)` \|.*\| `make ([a-z-]+)` \|$", README.read_text(), flags=re.M)
    assert sorted(verb for verb, _ in rows) == sorted(VERBS), "README's verb table and facemark/verbs.py VERBS differ"


def test_readme_api_example_names_the_real_api():
    """The README's Python example compiles and uses only what Landmarker and Face have."""
    import dataclasses
    import inspect

    from facemark import Face, Landmarker

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README.md has no Python API example"
    example = blocks[0]
    compile(example, "README.md", "exec")
    assert "from facemark import Landmarker" in example and len(example.strip().splitlines()) <= 6
    face_names = {f.name for f in dataclasses.fields(Face)} | set(dir(Face))
    for used in re.findall(r"\bfaces?(?:\[\d+\])?\.(\w+)", example):
        assert used in face_names, f"README's example uses Face.{used}, which does not exist"
    for used in re.findall(r"\blm\.(\w+)", example):
        assert hasattr(Landmarker, used), f"README's example uses Landmarker.{used}, which does not exist"
    for keyword in re.findall(r"lm\.predict\([^)]*?\b(\w+)=", example):
        assert keyword in inspect.signature(Landmarker.predict).parameters, keyword


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_inline_commands_sit_on_one_line(doc):
    prose = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    broken = [span for span in re.findall(r"`([^`]+)`", prose)
              if "\n" in span and re.match(r"(facemark|make|python\S*)\s", span)]
    assert not broken, f"{_name(doc)}: inline commands broken over lines are not checked: {broken}"


@pytest.mark.parametrize("line", _cases("facemark"))
def test_facemark_commands_parse(line):
    words = shlex.split(line)
    words = words[words.index("facemark") + 1:]
    if words and words[0] == "--":  # torchrun ... -m facemark -- VERB
        words = words[1:]
    try:
        args = build_parser().parse_args(words)
    except SystemExit:
        pytest.fail(f"`{line}` does not parse with facemark's CLI (see the usage message above)")
    for attr in ("config", "configs"):
        value = getattr(args, attr, None)
        for path in value if isinstance(value, list) else [value]:
            if path is not None:
                assert (REPO / path).exists(), f"`{line}` names {path}, which does not exist"
    keys = leaf_fields()
    for override in getattr(args, "overrides", None) or []:
        key = override.partition("=")[0]
        assert key in keys, f"`{line}`: --set {key} is not a config key (configs/base.yaml)"


@pytest.mark.parametrize("line", _cases("make"))
def test_make_targets_exist(line):
    result = subprocess.run(["make", "-n", *shlex.split(line)[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("line", _cases("python"))
def test_benchmark_scripts_exist(line):
    script = re.search(r"(benchmarks/\S+\.py)", line).group(1)
    assert (REPO / script).is_file(), f"`{line}` runs {script}, which does not exist"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug, n = _slug(heading), 1
        while slug in found:  # repeated headings get -1, -2, ...
            slug, n = f"{_slug(heading)}-{n}", n + 1
        found.add(slug)
    return found


def _links() -> list:
    cases = []
    for path in LINKED:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in sorted(set(re.findall(r"\]\(([^)\s]+)\)", text))):
            if not re.match(r"[a-z]+:", target):   # http:, https:, mailto:
                cases.append(pytest.param(path, target, id=f"{_name(path)}: {target}"))
    return cases


@pytest.mark.parametrize(("doc", "target"), _links())
def test_relative_links_resolve(doc, target):
    file_part, _, anchor = target.partition("#")
    linked = (doc.parent / file_part).resolve() if file_part else doc
    assert linked.exists(), f"{_name(doc)} links to {target}: {file_part} does not exist"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{_name(doc)} links to {target}: no such heading in {linked.name}"


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_config_keys_named_exist(doc):
    """`section.key` in backticks (e.g. `quantize.mixed_target`) is a key of configs/base.yaml."""
    keys = leaf_fields()
    sections = "|".join(sorted({key.split(".")[0] for key in keys}))
    named = set(re.findall(rf"`((?:{sections})\.[a-z_0-9]+)", doc.read_text()))
    assert not named - set(keys), f"{_name(doc)} names config keys that do not exist: {sorted(named - set(keys))}"


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_no_machine_paths(doc):
    text = doc.read_text()
    for pattern in (r"/work/", r"\.\./shared/", r"/home/\w+", r"/Users/\w+", r"/tmp/"):
        assert not re.search(pattern, text), f"{_name(doc)} names a path of one machine ({pattern}): write ROOT"


def test_the_demo_figures_are_the_recorded_run():
    """README's and docs/results.md's demo figures quote docs/demo.json, the record a `make demo` run
    wrote (benchmarks/demo_record.py), not a hand-typed figure."""
    import json
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    from demo_record import RECORD, readme_row, wall_text

    record = json.loads(RECORD.read_text())
    readme, results = README.read_text(), (REPO / "docs" / "results.md").read_text()
    assert readme_row(record) in readme.splitlines()
    assert f"`runs/demo/` ({wall_text(record)} on 2 cores, measured {record['measured']}" in readme
    demo = results.split("## The demo", 1)[1].split("\n## ", 1)[0]
    assert f"Measured {record['measured']}: `make demo`" in demo and f"**{wall_text(record)}** wall" in demo
    assert f"PyTorch test NME {record['pytorch']['nme_pupil']:.4f}, FR@0.1 {record['pytorch']['fr@0.1']:.2f}" in demo
