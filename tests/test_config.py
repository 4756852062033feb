"""Config loading: defaults from base.yaml only, overrides, _base_ chains, and precise errors."""

from pathlib import Path

import pytest

from facemark.config import base_config_path, load_config
from facemark.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_base_defaults_and_override():
    cfg = load_config(overrides=["train.epochs=5", "data.limit=10", "export.formats=[onnx]"])
    assert cfg.train.epochs == 5
    assert cfg.data.limit == 10
    assert cfg.export.formats == ["onnx"]
    assert cfg.data.input_size == 224  # untouched default


def test_int_accepted_for_float():
    assert load_config(overrides=["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize("override, fragment", [
    ("train.epoch=3", "unknown config key 'train.epoch' (did you mean 'train.epochs'?)"),
    ("trian.epochs=3", "unknown config key 'trian'"),
    ("train.epochs=three", "'train.epochs' expects int"),
    ("train.amp=1", "'train.amp' expects bool"),
    ("model=3", "'model' is a section"),
    ("noequals", "expected KEY=VALUE"),
])
def test_override_errors(override, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(overrides=[override])
    assert fragment in str(info.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epohcs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "did you mean 'train.epochs'" in str(info.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_base_chain(tmp_path):
    (tmp_path / "parent.yaml").write_text("train:\n  epochs: 7\n  lr: 0.5\n")
    (tmp_path / "child.yaml").write_text("_base_: parent.yaml\ntrain:\n  lr: 0.25\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.train.epochs, cfg.train.lr) == (7, 0.25)
    (tmp_path / "loop.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")


def test_every_shipped_config_loads():
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert base_config_path().name == "base.yaml"
    for path in files:
        load_config(path)
