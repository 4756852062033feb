"""A regular (non-editable) install carries every stage subpackage, the schemes and the configs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_imports_every_stage(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("facemark-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    code = ("import facemark, facemark.train, facemark.convert, facemark.quantize, facemark.validate;"
            "from facemark.config import load_config; from facemark.schemes import available_schemes;"
            "assert load_config().data.input_size == 224; print(facemark.__file__, available_schemes())")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert str(target) in out and "ibug68" in out and "lapa106" in out
    assert (target / "facemark" / "train" / "__init__.py").is_file()
    configs = sorted(path.relative_to(REPO / "configs") for path in (REPO / "configs").rglob("*.yaml"))
    missing = [str(path) for path in configs if not (target / "facemark" / "configs" / path).is_file()]
    assert len(configs) > 40 and not missing, missing   # a new config folder needs its package-data glob


def test_cli_lists_every_verb_of_its_table(capsys):
    """`facemark --help` names every verb of verbs.VERBS with its description, and each verb's own
    --help runs (exit 0): the verbs are read from the table, so a new one is covered here."""
    import re

    from facemark.cli import main
    from facemark.verbs import VERBS

    out = subprocess.run([sys.executable, "-m", "facemark", "--help"], capture_output=True, text=True,
                         check=True).stdout
    listed = dict(re.findall(r"^ {4}(\S+)\s+(\S.*)$", out, flags=re.M))
    assert {"qat", "predict", "benchmark", "ablate", "pipeline"} <= set(VERBS)
    for verb, entry in VERBS.items():
        assert listed.get(verb, "").startswith(entry.help[:30]), (verb, listed.get(verb))
        with pytest.raises(SystemExit) as done:
            main([verb, "--help"])
        assert done.value.code == 0 and f"usage: facemark {verb}" in capsys.readouterr().out, verb


def test_make_install_pins_dlib_as_the_peers_extra_does():
    """`make install` adds dlib-bin alone (so CI runs tests/test_peer_dlib.py); same pin as `.[peers]`."""
    import re
    import tomllib

    peers = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["peers"]
    runtime = re.search(r"^PEER_RUNTIME := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    assert runtime in peers and runtime.startswith("dlib-bin==")
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any("dlib" in dep or "face-recognition" in dep for dep in core)   # never a core dependency


def test_a_verbs_base_defaults_name_its_own_arguments_and_real_keys():
    """Verb.defaults (facemark/verbs.py) fill arguments the verb's parser has and leaves None, from
    keys base.yaml has: one table entry holds every fact of a verb."""
    from facemark.cli import build_parser, fill_defaults
    from facemark.config import base_value
    from facemark.verbs import VERBS

    parser = build_parser()
    required = {"check-data": ["root"], "boxes": ["root"], "train": ["--data", "d"], "pipeline": ["--data", "d"]}
    for verb, entry in VERBS.items():
        if not entry.defaults:
            continue
        args = parser.parse_args([verb, *required.get(verb, [])])
        assert all(getattr(args, attr) is None for attr in entry.defaults), verb
        fill_defaults(args)
        for attr, key in entry.defaults.items():
            assert str(getattr(args, attr)) == str(base_value(key)), (verb, attr)
