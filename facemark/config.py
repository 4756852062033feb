"""Typed run configuration: YAML files merged over configs/base.yaml, plus `--set a.b=v` overrides.

Defaults live only in configs/base.yaml; the dataclasses of facemark/config_schema.py declare
names, types and, next to each field, its value rule (`spec(rule)`, facemark/config_rules.py: a range, a set of choices, a
probability, ...). So an
unknown key, a wrong type or an out-of-range value is a one-line ConfigError naming the key, the
value, what is allowed and where the value came from (the file or the --set override), raised by
load_config before any verb reads data; a new key cannot be added without a rule (a test checks
that every field declares one). Rules that tie two keys together live in CROSS_RULES.
Adding a key: its default in base.yaml, `name: type = spec(rule)` here, and at least one refused
value in BAD_VALUES of tests/test_bad_config_values.py (a test fails until all three agree).
Config files are plain data (yaml.safe_load): nothing in them executes.
An experiment file may start with `_base_: other.yaml` to inherit from another: a path relative to
the file, which must stay inside the config tree (the nearest folder named `configs` above the file
given on the command line, else that file's folder; facemark.io.file_inside), or `facemark:NAME`
for a config shipped with facemark (`_base_: facemark:real/300w_cpu.yaml`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

# the schema, read by every module through this one (facemark.config is the config's API)
from facemark.config_schema import (CALIBRATION_METHODS, DEVICES, HEADS, LOSSES, LR_UPDATES,
                                    ONNX_ACTIVATIONS, ON_MISS, OPSETS, SCHEDULERS,
                                    SEED_MAX, TFLITE_IO, AugmentConfig, Config, DataConfig, ExportConfig,
                                    ExtraSet, InferConfig, ModelConfig, PredictConfig, QuantizeConfig, RunsConfig, SynthConfig,
                                    TrainConfig, ValidateConfig)
from facemark.errors import ConfigError
from facemark.io import file_inside

__all__ = ["CALIBRATION_METHODS", "DEVICES", "HEADS", "LOSSES", "LR_UPDATES", "ONNX_ACTIVATIONS",
           "ON_MISS", "OPSETS", "SCHEDULERS", "SEED_MAX", "TFLITE_IO",
           "AugmentConfig", "Config", "DataConfig", "ExportConfig", "ExtraSet", "InferConfig", "ModelConfig", "PredictConfig",
           "QuantizeConfig", "RunsConfig", "SynthConfig", "TrainConfig", "ValidateConfig", "CROSS_RULES",
           "base_config_path", "base_value", "section_from_saved", "check_cross_rules", "check_value", "config_from_dict",
           "config_from_saved", "leaf_fields", "load_config", "override_section", "resolve_choices", "save_config"]


def _warmup_shorter_than_training(cfg: Config) -> tuple[str, str, tuple[str, ...]] | None:
    """A warm-up as long as the run never reaches train.lr."""
    warmup, epochs = cfg.train.warmup_epochs, cfg.train.epochs
    if warmup and warmup >= epochs:
        return "train.warmup_epochs", (f"must be less than train.epochs ({epochs}) or 0, got {warmup} "
                                       f"(short runs: --set train.warmup_epochs=0)"), ("train.epochs",)
    return None


# Rules that tie keys together: cfg -> (key, "must be ..., got ...", the other keys involved) or None.
CrossRule = Callable[[Config], "tuple[str, str, tuple[str, ...]] | None"]
def _sets_need_the_integral_head(cfg: Config) -> tuple[str, str, tuple[str, ...]] | None:
    """data.sets trains one head per scheme on one backbone: the grid heads' GridHead, decoded to
    points (the pip head's map loss and RLE's flow are one-scheme only), on another scheme than
    data.scheme's."""
    if not cfg.data.sets:
        return None
    if not HEADS[cfg.model.head].multi_scheme or cfg.train.loss == "rle":
        heads = " or ".join(name for name, spec in HEADS.items() if spec.multi_scheme)
        return "data.sets", (f"needs model.head {heads} and a coordinate loss (one head per scheme), got "
                             f"model.head {cfg.model.head}, train.loss {cfg.train.loss}"), ("model.head", "train.loss")
    if cfg.data.scheme in {item.scheme for item in cfg.data.sets}:
        return "data.sets", f"must not repeat data.scheme ({cfg.data.scheme}): --data trains that head", ("data.scheme",)
    return None


def _star_needs_a_distribution(cfg: Config) -> tuple[str, str, tuple[str, ...]] | None:
    """STAR splits each point's error along its predicted distribution: a softmax-decoded grid head's."""
    if cfg.train.loss != "star" or HEADS[cfg.model.head].decode == "softmax":
        return None
    heads = " or ".join(name for name, spec in HEADS.items() if spec.decode == "softmax")
    return "train.loss", f"star needs model.head {heads} (a distribution per point), got model.head {cfg.model.head}", \
        ("model.head",)


def _transfer_needs_sets_and_time(cfg: Config) -> tuple[str, str, tuple[str, ...]] | None:
    """Label transfer maps one set's labels into another's scheme, fitted before the run ends."""
    if cfg.train.transfer_weight == 0:
        return None
    if not cfg.data.sets:
        return "train.transfer_weight", f"needs data.sets (labels to map between schemes), got {cfg.train.transfer_weight}", \
            ("data.sets",)
    if cfg.train.transfer_epoch >= cfg.train.epochs:
        return "train.transfer_epoch", (f"must be less than train.epochs ({cfg.train.epochs}) for label transfer, "
                                        f"got {cfg.train.transfer_epoch}"), ("train.epochs", "train.transfer_weight")
    return None


def _pseudo_needs_sets_a_teacher_and_time(cfg: Config) -> tuple[str, str, tuple[str, ...]] | None:
    """Self-training labels one set's faces in the other sets' schemes with the run's EMA model,
    from an epoch before the run ends; label transfer gives the same heads other targets, so the
    two are measured apart."""
    if cfg.train.pseudo_weight == 0:
        return None
    if not cfg.data.sets:
        return "train.pseudo_weight", f"needs data.sets (faces that lack a scheme), got {cfg.train.pseudo_weight}", \
            ("data.sets",)
    if not cfg.train.ema:
        return "train.pseudo_weight", "needs train.ema true (the EMA model is the teacher), got train.ema false", \
            ("train.ema",)
    if cfg.train.transfer_weight > 0:
        return "train.pseudo_weight", (f"and train.transfer_weight ({cfg.train.transfer_weight}) both give the heads "
                                       f"other sets' targets; use one"), ("train.transfer_weight",)
    if cfg.train.pseudo_epoch >= cfg.train.epochs:
        return "train.pseudo_epoch", (f"must be less than train.epochs ({cfg.train.epochs}) for self-training, "
                                      f"got {cfg.train.pseudo_epoch}"), ("train.epochs", "train.pseudo_weight")
    return None


CROSS_RULES: tuple[CrossRule, ...] = (_warmup_shorter_than_training, _sets_need_the_integral_head,
                                      _star_needs_a_distribution, _transfer_needs_sets_and_time,
                                      _pseudo_needs_sets_a_teacher_and_time)


# ---------------------------------------------------------------- loading
def base_config_path() -> Path:
    return Path(str(resources.files("facemark.configs") / "base.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Merge base.yaml, the `_base_` chain of `path`, `path` itself and `key=value` overrides,
    then check every value's type and rule and the CROSS_RULES (ConfigError naming the key)."""
    base = base_config_path()
    merged = _read_yaml(base)
    origins: dict[str, str] = {}   # dotted key -> the file or override its value came from
    if path is not None:
        for layer in _chain(Path(path), config_root(Path(path))):
            _merge(merged, layer[1], origin=str(layer[0]), origins=origins)
    _apply_overrides(merged, overrides or [], origins)
    cfg = config_from_dict(merged, origin=str(base), origins=origins)
    check_cross_rules(cfg, str(base), origins)
    return cfg


def _apply_overrides(merged: dict[str, Any], overrides: list[str], origins: dict[str, str]) -> None:
    for item in overrides:
        dotted, sep, raw = item.partition("=")
        if not sep or not dotted:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        nested: dict[str, Any] = {}
        cursor = nested
        *parents, leaf = dotted.strip().split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[leaf] = yaml.safe_load(raw)
        _merge(merged, nested, origin=f"--set {item}", origins=origins)


def override_section(cfg: Config, overrides: list[str], section: str, verb: str) -> Config:
    """A trained run's `cfg` with `--set` overrides of one section only (e.g. quantize.* for
    `facemark quantize`: the other sections describe the trained model and its data)."""
    _only_section(overrides, section, verb)
    if not overrides:
        return cfg
    merged, origins = cfg.to_dict(), {}
    _apply_overrides(merged, overrides, origins)
    return config_from_dict(merged, origin=f"facemark {verb}", origins=origins)


def _only_section(overrides: list[str], section: str, verb: str) -> None:
    for item in overrides:
        if not item.strip().startswith(f"{section}."):
            raise ConfigError(f"facemark {verb} --set {item!r}: only {section}.* keys can change after training")


def section_from_saved(section: str, values: dict[str, Any], overrides: list[str], verb: str, origin: str) -> Any:
    """One section's dataclass (e.g. InferConfig): base.yaml's values, `values` (a saved section,
    e.g. a manifest's) over them, then `--set SECTION.KEY=VALUE` overrides, each checked by its
    key's rule. Only that section is built: the whole config's check imports timm and torch
    (model.arch), which an artifact's reader must not need."""
    _only_section(overrides, section, verb)
    merged = {section: _read_yaml(base_config_path())[section]}
    origins: dict[str, str] = {}
    _merge(merged, {section: values}, origin=origin, origins=origins)
    _apply_overrides(merged, overrides, origins)
    cls = typing.get_type_hints(Config)[section]
    return _build(cls, merged[section], prefix=f"{section}.", origin=origin, origins=origins)


def config_from_dict(values: dict[str, Any], origin: str = "config", origins: dict[str, str] | None = None
                     ) -> Config:
    """Build a Config from a complete nested dict (e.g. one saved in a checkpoint), checking every
    value's type and rule; `origins` names where individual keys came from (default: `origin`).
    The CROSS_RULES are left to load_config: they guard a new run, and a finished run's checkpoint
    must stay loadable (a 2-epoch test run with the default 3 warm-up epochs, say)."""
    return _build(Config, values, prefix="", origin=origin, origins=origins or {})


def check_cross_rules(cfg: Config, origin: str, origins: dict[str, str]) -> None:
    """Raise ConfigError for the first broken rule of CROSS_RULES, naming the file or override
    that set one of its keys."""
    for rule in CROSS_RULES:
        broken = rule(cfg)
        if broken is not None:
            dotted, message, others = broken
            # name the file or override that set one of the keys (base.yaml's values have no origin)
            where = next((origins[k] for k in (dotted, *others) if k in origins), origin)
            raise ConfigError(f"{where}: {dotted!r} {message}")


def leaf_fields(cls: type = Config, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf key of the config, dotted ("train.epochs"), with its dataclass field."""
    hints = typing.get_type_hints(cls)
    leaves: dict[str, dataclasses.Field] = {}
    for item in fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            leaves.update(leaf_fields(hints[item.name], f"{prefix}{item.name}."))
        else:
            leaves[f"{prefix}{item.name}"] = item
    return leaves


def check_value(dotted: str, value: Any, origin: str) -> Any:
    """Check one value (e.g. a command-line flag standing in for a config key) against the type
    and rule of config key `dotted` -> the value (ints become floats for float keys)."""
    section, _, name = dotted.partition(".")
    cls = typing.get_type_hints(Config)[section]
    item = next(f for f in fields(cls) if f.name == name)
    return _check_field(value, typing.get_type_hints(cls)[name], item, dotted, origin)


def base_value(dotted: str) -> Any:
    """One value of configs/base.yaml, checked by its key's rule: for readers that have no config
    at hand (check-data, boxes, predict), without load_config's whole check (model.arch's imports
    timm and torch)."""
    section, _, name = dotted.partition(".")
    path = base_config_path()
    return check_value(dotted, _read_yaml(path)[section][name], origin=str(path))


def config_from_saved(values: dict[str, Any], origin: str = "checkpoint") -> Config:
    """A config saved by an earlier facemark (a checkpoint's) merged over base.yaml: a key added
    since then takes its base.yaml default, which by rule reproduces the behaviour from before the
    key existed (e.g. augment.flip: 0.0). A key base.yaml does not know is still an error."""
    merged = _read_yaml(base_config_path())
    _merge(merged, values, origin=origin, origins={})
    return config_from_dict(merged, origin=origin)


def save_config(cfg: Config, path: Path) -> None:
    from facemark.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


SHIPPED = "facemark:"   # `_base_: facemark:NAME` names a config shipped in facemark.configs


def config_root(path: Path) -> Path:
    """The config tree of the file given on the command line: the nearest folder named `configs`
    above it (facemark's own tree, installed or cloned, and a project's), else its own folder."""
    folder = path.resolve().parent
    return next((above for above in (folder, *folder.parents) if above.name == "configs"), folder)


def _chain(path: Path, root: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, values)] from the furthest `_base_` ancestor down to `path`; each `_base_` stays in
    `root` (or in the shipped tree, for facemark:NAME), never read from outside it."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    data = _read_yaml(path)
    parent = data.pop("_base_", None)
    if parent is None:
        return [(path, data)]
    if isinstance(parent, str) and parent.startswith(SHIPPED):
        shipped = base_config_path().parent
        found = file_inside(shipped, parent[len(SHIPPED):], path, "_base_", error=ConfigError)
        return _chain(found, shipped, seen + (path,)) + [(path, data)]
    found = file_inside(path.parent, parent, path, "_base_", root=root, error=ConfigError)
    return _chain(found, root, seen + (path,)) + [(path, data)]


def _merge(into: dict[str, Any], layer: dict[str, Any], origin: str, origins: dict[str, str],
           prefix: str = "") -> None:
    for name, value in layer.items():
        dotted = f"{prefix}{name}"
        if name not in into:
            hint = difflib.get_close_matches(str(name), [str(k) for k in into], n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{origin}: unknown config key {dotted!r}{suggestion}")
        if isinstance(into[name], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {dotted!r} is a section; expected a mapping, got {value!r}")
            _merge(into[name], value, origin, origins, prefix=f"{dotted}.")
        else:
            into[name] = value
            origins[dotted] = origin


def _build(cls: type, values: Any, prefix: str, origin: str, origins: dict[str, str]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{origin}: {prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    for name in values:
        if name not in by_name:
            hint = difflib.get_close_matches(str(name), sorted(by_name), n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{origin}: unknown config key {prefix}{name!r}{suggestion}")
    kwargs = {}
    for name, item in by_name.items():   # declaration order, so the first bad key is reported
        dotted = f"{prefix}{name}"
        if name not in values:
            raise ConfigError(f"{origin}: missing config key {dotted!r}")
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], values[name], f"{dotted}.", origin, origins)
        else:
            kwargs[name] = _check_field(values[name], hints[name], item, dotted, origins.get(dotted, origin))
    return cls(**kwargs)


def _check_field(value: Any, kind: Any, item: dataclasses.Field, dotted: str, origin: str) -> Any:
    """The value's type, then the field's rule -> the value (ints become floats for float keys)."""
    value = _check_type(value, kind, dotted, origin)
    rule = item.metadata.get("rule")
    if rule is None:
        raise AssertionError(f"config key {dotted!r} declares no rule (use spec(...))")
    if not rule.accepts(value):
        raise ConfigError(f"{origin}: {dotted!r} must be {rule.allowed}, got {value!r}{rule.hint(value)}")
    return value


def _float_text(text: str) -> float | None:
    """`text` as a float when it spells one in exponent form (1e-4, 2E+3), else None."""
    return float(text) if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", text.strip()) else None


def _check_type(value: Any, kind: Any, dotted: str, origin: str) -> Any:
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is float and isinstance(value, str) and _float_text(value) is not None:
            return _float_text(value)   # YAML 1.1 reads 1e-4 (no dot) as a string
        if option in (int, str, bool) and type(value) is option:
            return value
        if dataclasses.is_dataclass(option) and isinstance(value, dict):   # a record in a list (data.sets)
            return _build(option, value, f"{dotted}.", origin, {})
        if dataclasses.is_dataclass(option) and isinstance(value, option):
            return value
        if typing.get_origin(option) is list and isinstance(value, list):
            item_type = typing.get_args(option)[0]
            return [_check_type(v, item_type, f"{dotted}[{i}]", origin) for i, v in enumerate(value)]
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{origin}: {dotted!r} expects {expected}, got {value!r} ({type(value).__name__})")


def resolve_choices(requested: list[str] | None, default: list[str], valid: list[str], what: str) -> list[str]:
    """Requested names ("all" = every valid one; None or empty = `default`) -> valid names in `valid`'s
    order. An unknown name raises ConfigError naming `what`, the valid names and a close match."""
    names = list(default if not requested else requested)
    if "all" in names:
        names = list(valid)
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{what}: unknown format {name!r}{hint}; valid: {', '.join(valid)}, all")
    return [name for name in valid if name in names]
