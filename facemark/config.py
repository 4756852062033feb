"""Typed run configuration: YAML files merged over configs/base.yaml, plus `--set a.b=v` overrides.

Defaults live only in configs/base.yaml; the dataclasses below declare names and types, so an
unknown key or a wrong type is an error naming the key (with a close-match suggestion), never a
silently ignored setting. Config files are plain data (yaml.safe_load): nothing in them executes.
An experiment file may start with `_base_: other.yaml` (relative path) to inherit from another.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from facemark.errors import ConfigError


@dataclass
class ModelConfig:
    arch: str                      # any timm model name
    pretrained: bool               # ImageNet initialisation (hub when online, else pretrained_file)
    pretrained_file: str | None    # local .pth/.safetensors (timm or torchvision names)
    freeze_blocks: int             # freeze stem + the first K backbone blocks (see model.py)
    drop_rate: float


@dataclass
class AugmentConfig:
    rotate: float                  # degrees, U[-rotate, rotate]; 0 disables
    box_shift: float               # each box border moved by U[-s, s] * box size; 0 disables
    brightness: float              # colour jitter strengths; all 0 disables colour jitter
    contrast: float
    saturation: float
    hue: float
    flip: float                    # P(horizontal flip with the scheme's flip permutation); 0 disables
    scale: float                   # crop side times U[1-s, 1+s] (zoom jitter); 0 disables
    translate: float               # crop centre moved by U[-t, t] * box width/height; 0 disables


@dataclass
class DataConfig:
    scheme: str                    # landmark scheme name (facemark/schemes/*.yaml)
    input_size: int                # S: crops are S x S; landmark P maps to (P - S/2) / (S/2)
    margin: float                  # the square crop is the box's longer side * (1 + margin)
    detector: str                  # box cache name under ROOT/<split>/boxes/<detector>/
    landmark_box_prob: float       # training only: P(use the landmark box instead of the detector's)
    on_miss: str                   # detector miss: "landmarks" (fall back, counted) or "skip" (counted)
    skip_bad_samples: bool         # train on a dataset that fails check-data, skipping bad samples
    limit: int | None              # use only the first N samples of each split (reduced budgets)
    workers: int                   # DataLoader workers


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str                 # timm optimizer name
    scheduler: str                 # timm scheduler name
    warmup_epochs: int             # linear warm-up epochs; 0 disables
    loss: str                      # "mse", "wing", "smooth_l1" or "l1"
    wing_w: float                  # Wing width, in normalised crop units (1.0 = half the crop)
    wing_epsilon: float            # Wing curvature, same units
    smooth_l1_beta: float          # smooth L1's quadratic-to-linear switch, same units
    ema: bool
    ema_decay: float
    amp: bool                      # mixed precision; only ever used on CUDA
    seed: int
    device: str                    # "auto", "cpu" or "cuda"


@dataclass
class ExportConfig:
    formats: list[str]             # subset of: onnx, tflite, coreml
    opset: int
    dynamic_batch: bool
    bake_preprocessing: bool       # graph takes uint8 RGB and returns crop pixels
    parity_images: int             # real crops used for the PyTorch parity check


@dataclass
class QuantizeConfig:
    formats: list[str]
    calibration_count: int
    calibration_seed: int
    tflite_io: str                 # "float32", "int8" or "uint8" for full-integer TFLite I/O
    onnx_activation: str           # "uint8" (u8s8, faster on x86) or "int8" (s8s8)
    onnx_dynamic: bool             # also write an ONNX dynamic-quantised model
    max_output_step: float         # refuse an int8 output step coarser than this * inter-pupil distance


@dataclass
class ValidateConfig:
    threads: int
    warmup: int
    runs: int
    max_nme_increase: float | None  # relative to the baseline, e.g. 0.01 = +1 %
    max_nme: float | None           # absolute inter-pupil NME


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig
    augment: AugmentConfig
    train: TrainConfig
    export: ExportConfig
    quantize: QuantizeConfig
    validate: ValidateConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def base_config_path() -> Path:
    return Path(str(resources.files("facemark.configs") / "base.yaml"))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Merge base.yaml, the `_base_` chain of `path`, `path` itself and `key=value` overrides."""
    merged = _read_yaml(base_config_path())
    if path is not None:
        for layer in _chain(Path(path)):
            _merge(merged, layer[1], source=str(layer[0]))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        nested: dict[str, Any] = {}
        cursor = nested
        *parents, leaf = key.strip().split(".")
        for part in parents:
            cursor = cursor.setdefault(part, {})
        cursor[leaf] = yaml.safe_load(raw)
        _merge(merged, nested, source=f"--set {item}")
    return config_from_dict(merged, source=str(path or base_config_path()))


def config_from_dict(values: dict[str, Any], source: str = "config") -> Config:
    """Build a Config from a complete nested dict (e.g. one saved in a checkpoint)."""
    return _build(Config, values, prefix="", source=source)


def config_from_saved(values: dict[str, Any], source: str = "checkpoint") -> Config:
    """A config saved by an earlier facemark (a checkpoint's) merged over base.yaml: a key added
    since then takes its base.yaml default, which by rule reproduces the behaviour from before the
    key existed (e.g. augment.flip: 0.0). A key base.yaml does not know is still an error."""
    merged = _read_yaml(base_config_path())
    _merge(merged, values, source=source)
    return config_from_dict(merged, source=source)


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


def _chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, values)] from the furthest `_base_` ancestor down to `path`."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    data = _read_yaml(path)
    parent = data.pop("_base_", None)
    if parent is None:
        return [(path, data)]
    return _chain(path.parent / str(parent), seen + (path,)) + [(path, data)]


def _merge(into: dict[str, Any], layer: dict[str, Any], source: str, prefix: str = "") -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if key not in into:
            hint = difflib.get_close_matches(str(key), [str(k) for k in into], n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{source}: unknown config key {dotted!r}{suggestion}")
        if isinstance(into[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted!r} is a section; expected a mapping, got {value!r}")
            _merge(into[key], value, source, prefix=f"{dotted}.")
        else:
            into[key] = value


def _build(cls: type, values: Any, prefix: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    for key in values:
        if key not in names:
            hint = difflib.get_close_matches(str(key), sorted(names), n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{source}: unknown config key {prefix}{key!r}{suggestion}")
    kwargs = {}
    for name in sorted(names):
        dotted = f"{prefix}{name}"
        if name not in values:
            raise ConfigError(f"{source}: missing config key {dotted!r}")
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, values[name], f"{dotted}.", source)
        else:
            kwargs[name] = _check_type(values[name], kind, dotted, source)
    return cls(**kwargs)


def _check_type(value: Any, kind: Any, key: str, source: str) -> Any:
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    for option in options:
        if option is type(None) and value is None:
            return None
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option in (int, str, bool) and type(value) is option:
            return value
        if typing.get_origin(option) is list and isinstance(value, list):
            item_type = typing.get_args(option)[0]
            return [_check_type(v, item_type, f"{key}[{i}]", source) for i, v in enumerate(value)]
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{source}: {key!r} expects {expected}, got {value!r} ({type(value).__name__})")


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
