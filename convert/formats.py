"""What a format's converter and the export driver exchange.

A format's converter (its facemark.backends row names the module) has one entry function
`convert(job: ExportJob) -> list[RowResult]` that writes every artifact of that format (each
precision, plain and baked), checks each against PyTorch on real crops before it takes its final
name, and returns what the manifest should say (facemark.artifact_rows: one row per artifact). The driver (export.py) validates the requested
names against facemark.backends up front, imports each converter lazily, and records the results
in `RUN/export/manifest.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from facemark.artifacts import ARTIFACTS, Artifact, float_name
from facemark.backends import BACKENDS, Backend
from facemark.config import Config, resolve_choices
from facemark.contract import RunContract
from facemark.manifest import manifest_normalisation
from facemark.weights import Normalisation

# Parity bounds in normalised crop units (1.0 = half the crop, so 1e-4 = 0.011 px at 224 px).
# float32 must reproduce PyTorch (measured <= 1.8e-5 over 5 backbones at 224 on 16 real crops).
# float16 rounds the weights to 11 significant bits: measured max 2.0e-2 (mobilenetv2_100 with
# random, BatchNorm-recalibrated weights; 1.4e-2 mobilenetv3, 1.1e-2 efficientnet_b0, 2.5e-3
# mobilevit_s, 1.0e-3 resnet18), and 4.3e-3 for mobilenetv2 with ImageNet weights (trained nets
# are better conditioned). The fp16 bound catches a broken conversion (errors ~0.3, the spread of
# the outputs); accuracy is judged by the NME gate of `facemark validate`.
PARITY_BOUND = {"float32": 1e-4, "float16": 5e-2}


def resolve_formats(names: list[str] | None, default: list[str]) -> list[Backend]:
    """Requested names ("all" = every format; None = `default`) -> backends, in table order.

    An unknown name raises ConfigError listing the valid ones (with a close match if any).
    """
    requested = resolve_choices(names, default, list(BACKENDS), "export format")
    return [BACKENDS[name] for name in requested]


def float_artifact(fmt: str, precision: str, baked: bool) -> Artifact:
    """The registry row (facemark.artifacts) of one float artifact, e.g. onnx_fp32 in model_fp32.onnx."""
    return ARTIFACTS[float_name(fmt, precision, baked)]


@dataclass
class ExportJob:
    """Everything a format module needs; built once per `facemark export` by the driver.

    crops: (N, S, S, 3) uint8 RGB real faces (the parity set); ipd_px: (N,) their inter-pupil
    distances in crop pixels (parity in % IPD); contract: the run-level manifest (scheme, input,
    output, crop, checkpoint) that every artifact embeds.
    """

    model: nn.Module
    cfg: Config
    export_dir: Path
    work_dir: Path
    crops: np.ndarray
    ipd_px: np.ndarray
    crop_split: str
    bake: bool
    contract: RunContract

    @property
    def size(self) -> int:
        return self.cfg.data.input_size

    @property
    def norm(self) -> Normalisation:
        """The input normalisation of the contract (the checkpoint's, see facemark.weights)."""
        return manifest_normalisation(self.contract, "export manifest")

    @property
    def variants(self) -> list[bool]:
        """Baked-preprocessing variants to write: plain always, baked too when asked."""
        return [False, True] if self.bake else [False]
