"""Config loading: defaults from base.yaml only, overrides, _base_ chains, and precise errors."""

import re
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


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "shipped dotdot"])
def test_a_base_outside_the_config_tree_is_refused(tmp_path, kind):
    """`_base_` is resolved inside the config tree (the nearest `configs` folder, else the file's
    own folder) or the shipped tree (facemark:NAME); a path out of it is one line, nothing read."""
    tree, outside = tmp_path / "configs" / "exp", tmp_path / "elsewhere.yaml"
    tree.mkdir(parents=True)
    outside.write_text("train:\n  epochs: 7\n")
    (tree / "link.yaml").symlink_to(outside)
    name = {"dotdot": "../../elsewhere.yaml", "absolute": str(outside), "symlink": "link.yaml",
            "shipped dotdot": "facemark:../../elsewhere.yaml"}[kind]
    (tree / "child.yaml").write_text(f"_base_: {name}\n")
    expected = ("must be a file name relative to" if kind == "absolute" else "leads outside")
    with pytest.raises(ConfigError, match=re.escape(f"child.yaml: _base_ {name.removeprefix('facemark:')!r} "
                                                    f"{expected}")):
        load_config(tree / "child.yaml")


def test_a_base_inside_the_tree_or_shipped_is_read(tmp_path):
    tree = tmp_path / "configs"
    (tree / "exp").mkdir(parents=True)
    (tree / "parent.yaml").write_text("train:\n  epochs: 7\n")
    (tree / "exp" / "child.yaml").write_text("_base_: ../parent.yaml\n")   # up, but inside configs/
    assert load_config(tree / "exp" / "child.yaml").train.epochs == 7
    (tmp_path / "mine.yaml").write_text("_base_: facemark:real/300w_cpu.yaml\ntrain:\n  epochs: 9\n")
    cfg = load_config(tmp_path / "mine.yaml")
    assert (cfg.train.epochs, cfg.data.input_size, cfg.model.head) == (9, 144, "integral")


def test_every_shipped_config_loads():
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert base_config_path().name == "base.yaml"
    for path in files:
        load_config(path)


def test_config_saved_before_a_key_existed_loads_with_its_default():
    """A checkpoint written before augment.flip / train.smooth_l1_beta existed still loads: the new
    keys take base.yaml's defaults (which keep the old behaviour); an unknown key is still refused."""
    from facemark.config import config_from_saved

    saved = load_config(overrides=["train.epochs=7"]).to_dict()
    del saved["augment"]["flip"], saved["train"]["smooth_l1_beta"]
    cfg = config_from_saved(saved, origin="old.pt")
    assert (cfg.augment.flip, cfg.train.smooth_l1_beta, cfg.train.epochs) == (0.0, 0.02, 7)
    saved["augment"]["mirror"] = 0.5
    with pytest.raises(ConfigError, match="old.pt: unknown config key 'augment.mirror'"):
        config_from_saved(saved, origin="old.pt")


def test_resume_check_does_not_report_keys_added_since_the_checkpoint(tmp_path):
    from facemark.train.checkpoint import check_resume_config

    saved = load_config().to_dict()
    del saved["augment"]["scale"], saved["augment"]["translate"]
    assert check_resume_config(saved, load_config(), tmp_path / "last.pt") == []
    assert check_resume_config(saved, load_config(overrides=["augment.scale=0.1"]), tmp_path / "last.pt") == [
        "augment.scale"]


def test_every_leaf_field_declares_a_rule():
    """A key added to a config dataclass without `spec(rule)` fails here (and load_config would
    refuse it), so each new key comes with its range or choices."""
    from facemark.config import leaf_fields
    from facemark.config_rules import Rule

    missing = [key for key, item in leaf_fields().items() if not isinstance(item.metadata.get("rule"), Rule)]
    assert not missing, f"config keys without a rule: {missing}"


def test_stage_tables_agree_with_the_config_choices():
    from facemark import config
    from facemark.artifacts import ONNX_ACTIVATIONS
    from facemark.train.losses import LOSSES

    assert set(LOSSES) == set(config.LOSSES)
    assert set(ONNX_ACTIVATIONS) == set(config.ONNX_ACTIVATIONS)


def test_every_scheduler_choice_builds():
    import torch
    from timm.scheduler import create_scheduler_v2

    from facemark.config import SCHEDULERS

    for name in SCHEDULERS:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, _ = create_scheduler_v2(optimizer, sched=name, num_epochs=5, warmup_epochs=1)
        rates = []
        for epoch in range(5):
            scheduler.step(epoch)
            rates.append(optimizer.param_groups[0]["lr"])
        # one warm-up epoch from timm's 1e-5, then at most the base rate and never rising again
        assert rates[0] == pytest.approx(1e-5) and 0.05 < rates[1] <= 0.1, (name, rates)
        assert all(later <= earlier + 1e-12 for earlier, later in zip(rates[1:], rates[2:])), (name, rates)
    # the decaying schedules do decay within the 5 epochs
    decayed = {}
    for name in ("cosine", "tanh", "poly"):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, _ = create_scheduler_v2(optimizer, sched=name, num_epochs=5, warmup_epochs=1)
        scheduler.step(4)
        decayed[name] = optimizer.param_groups[0]["lr"]
    assert all(rate < 0.09 for rate in decayed.values()), decayed


@pytest.mark.parametrize("override, message", [
    ("data.input_size=0", "--set data.input_size=0: 'data.input_size' must be an integer from 32 to 1024 (pixels), got 0"),
    ("train.batch_size=0", "--set train.batch_size=0: 'train.batch_size' must be an integer >= 2, got 0"),
    ("data.landmark_box_prob=1.5",
     "--set data.landmark_box_prob=1.5: 'data.landmark_box_prob' must be a probability in [0, 1], got 1.5"),
    ("train.loss=wign", "--set train.loss=wign: 'train.loss' must be one of mse, wing, smooth_l1, l1, rle, star, got 'wign' (did you mean 'wing'?)"),
    ("train.ema_decay=1", "--set train.ema_decay=1: 'train.ema_decay' must be a number in (0, 1), got 1.0"),
    ("train.lr=.nan", "--set train.lr=.nan: 'train.lr' must be a number in (0, 10], got nan"),
    ("data.scheme=lapa107", "'data.scheme' must be a shipped landmark scheme (facemark/schemes/*.yaml), got 'lapa107' "
                            "(did you mean 'lapa106'?)"),
    ("data.limit=0", "'data.limit' must be null or an integer >= 1, got 0"),
    ("train.epochs=2", "--set train.epochs=2: 'train.warmup_epochs' must be less than train.epochs (2) or 0, got 3"),
])
def test_value_errors_say_key_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_value_errors_name_the_layer_that_set_the_value(tmp_path):
    (tmp_path / "parent.yaml").write_text("augment:\n  hue: 0.9\n")
    (tmp_path / "child.yaml").write_text("_base_: parent.yaml\ntrain:\n  lr: 0.5\n")
    with pytest.raises(ConfigError, match=r"parent\.yaml: 'augment\.hue' must be a number in \[0, 0\.5\], got 0\.9"):
        load_config(tmp_path / "child.yaml")
    assert load_config(tmp_path / "child.yaml", ["augment.hue=0.1"]).augment.hue == 0.1


def test_check_value_applies_a_key_rule_to_a_flag():
    from facemark.config import check_value

    assert check_value("validate.max_nme", 1, "--max-nme 1") == 1.0
    with pytest.raises(ConfigError, match=r"^--threads 0: 'validate.threads' must be an integer >= 1, got 0$"):
        check_value("validate.threads", 0, "--threads 0")


def test_rule_vocabulary():
    from facemark.config_rules import folder_name, number, one_of, optional, sequence, subset_of

    channel_std = sequence(number(0.0, 1.0, low_open=True), 3)
    assert channel_std.accepts([0.229, 0.224, 0.225]) and not channel_std.accepts([0.2, 0.2])
    assert not channel_std.accepts([0.2, 0.0, 0.2])
    assert channel_std.allowed == "a list of 3 values, each a number in (0, 1]"
    assert optional(one_of("a", "b")).accepts(None) and not optional(one_of("a", "b")).accepts("c")
    formats = subset_of(("onnx", "tflite"), min_items=1)
    assert formats.accepts(["all"]) and not formats.accepts([]) and not formats.accepts(["onnx", "onnx"])
    assert formats.hint(["tflte"]) == " (did you mean 'tflite'?)"
    assert [folder_name().accepts(v) for v in ("synth", "mtcnn_v2", "../x", ".hidden", "a/b")] == \
        [True, True, False, False, False]


def test_quantize_and_qat_overrides_change_only_the_quantize_section():
    from facemark.config import override_section

    cfg = load_config()
    changed = override_section(cfg, ["quantize.calibration_method=minmax", "quantize.calibration_percentile=99.9"],
                               "quantize", "quantize")
    assert (changed.quantize.calibration_method, changed.quantize.calibration_percentile) == ("minmax", 99.9)
    assert changed.train == cfg.train and changed.model == cfg.model and override_section(cfg, [], "quantize", "qat") is cfg
    with pytest.raises(ConfigError, match="only quantize.* keys can change after training"):
        override_section(cfg, ["train.lr=1"], "quantize", "quantize")
    with pytest.raises(ConfigError, match="calibration_percentile"):
        override_section(cfg, ["quantize.calibration_percentile=100"], "quantize", "qat")
