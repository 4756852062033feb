"""PyTorch references, the baked-preprocessing wrapper, and the parity figures every artifact gets.

Outputs compared here are in normalised crop units, (P - S/2) / (S/2), whatever the artifact
outputs (the runtime layer returns a baked artifact's crop pixels normalised). The figures the user
reads are one unit for every verb: each landmark's distance to PyTorch's in crop pixels (mean and
max) and their mean over the inter-pupil distance (`parity_figures`); a float artifact must also
stay within its precision's bound in normalised units (`check_parity`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import nn

from facemark.contract import MANIFEST_SCHEMA, RunContract
from facemark.convert.formats import PARITY_BOUND
from facemark.weights import Normalisation


class ParityError(RuntimeError):
    """An artifact disagrees with PyTorch beyond the bound of its precision."""


class BakedPreprocessing(nn.Module):
    """uint8 RGB image -> landmarks in crop pixels, so a mobile app does no arithmetic.

    Input (1, S, S, 3) when layout is "NHWC" (ONNX, TFLite), (1, 3, S, S) when "NCHW" (the ONNX
    handed to onnx2tf, which itself turns it into NHWC; CoreML ImageType, which feeds 0-255
    floats). Computes model((x / 255 - mean) / std) * S/2 + S/2 -> (1, 2P) crop pixels
    x0, y0, x1, y1, ..., with the mean/std of `norm` (the contract's).
    """

    def __init__(self, model: nn.Module, size: int, layout: str, norm: Normalisation):
        super().__init__()
        if layout not in ("NHWC", "NCHW"):
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        self.model, self.size, self.layout = model, size, layout
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32)
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        x = (x / 255.0 - self.mean) / self.std
        half = self.size / 2.0
        return self.model(x) * half + half


def example_input(size: int, layout: str = "NCHW", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (1, 3, S, S) or (1, S, S, 3) tracing input of `dtype` (values do not matter)."""
    shape = (1, 3, size, size) if layout == "NCHW" else (1, size, size, 3)
    if dtype == torch.uint8:
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)


def parity_figures(actual: np.ndarray, expected: np.ndarray, size: int, ipd_px: np.ndarray, split: str,
                   reference: str = "pytorch float32") -> dict[str, Any]:
    """Compare (N, 2P) normalised outputs of an artifact with the reference's -> manifest figures:
    point distances in crop pixels (mean_px, max_px) and nme_ipd, the mean distance over each
    face's inter-pupil distance `ipd_px` (N,) in crop pixels: the landmark error the conversion
    alone adds. Non-finite outputs raise ParityError."""
    actual = np.asarray(actual, dtype=np.float64).reshape(expected.shape)
    if not np.all(np.isfinite(actual)):
        raise ParityError(f"artifact returned non-finite landmarks on {split} crops")
    dist = np.linalg.norm((actual - expected).reshape(len(expected), -1, 2), axis=-1) * size / 2.0
    return {"reference": reference, "split": split, "images": int(len(expected)),
            "units": "crop pixels (point distance)", "mean_px": round(float(dist.mean()), 4),
            "max_px": round(float(dist.max()), 4), "nme_ipd": round(float(np.mean(dist.mean(axis=1) / ipd_px)), 6)}


def check_parity(name: str, actual: np.ndarray, expected: np.ndarray, precision: str, size: int,
                 ipd_px: np.ndarray, split: str) -> dict[str, Any]:
    """A float artifact's parity figures (parity_figures) plus max_abs, its largest coordinate
    difference in normalised crop units, and the `bound` of its precision; beyond it: ParityError."""
    figures = parity_figures(actual, expected, size, ipd_px, split, reference="pytorch")
    max_abs = float(np.abs(np.asarray(actual, dtype=np.float64).reshape(expected.shape) - expected).max())
    figures.update(max_abs=max_abs, bound=PARITY_BOUND[precision])
    if max_abs > figures["bound"]:
        raise ParityError(f"{name}: max |artifact - pytorch| = {max_abs:.3g} normalised units "
                          f"({figures['max_px']:.3f} crop px) over {figures['images']} {split} crops exceeds the "
                          f"{precision} bound {figures['bound']:g}")
    return figures


def io_facts(fmt: str, precision: str, baked: bool, size: int, num_points: int, layout: str,
             input_dtype: str) -> dict[str, Any]:
    """The per-artifact half of the contract (the run-level half is the manifest's top level)."""
    shape = [1, size, size, 3] if layout == "NHWC" else [1, 3, size, size]
    preprocessing = ("none: raw RGB 0-255 (baked into the graph)" if baked
                     else "pixels/255, then (x - mean) / std (manifest input.mean/std)")
    return {"format": fmt, "precision": precision, "quantization": "none", "layout": layout,
            "input_dtype": input_dtype, "baked_preprocessing": baked,
            "input": {"name": "input", "shape": shape, "dtype": input_dtype, "color": "RGB",
                      "preprocessing": preprocessing},
            "output": {"name": "landmarks", "shape": [1, 2 * num_points],
                       "space": "crop pixels" if baked else "normalised crop",
                       "formula": f"crop px = value * {size / 2:g} + {size / 2:g}" if not baked else
                       "crop px = value", "order": "x0, y0, x1, y1, ..."}}


def contract_payload(contract: RunContract, facts: dict[str, Any]) -> dict[str, Any]:
    """What an artifact embeds: the run-level contract plus its own facts (no sha256 of itself)."""
    return {"schema": MANIFEST_SCHEMA, **contract.to_json(), "artifact": facts}


def embedded_metadata(contract: RunContract, facts: dict[str, Any]) -> dict[str, str]:
    """String key/values embedded in ONNX metadata_props and CoreML user_defined_metadata:
    the full contract as JSON under `facemark_manifest`, plus flat keys for quick inspection."""
    return {"facemark_manifest": json.dumps(contract_payload(contract, facts), sort_keys=True),
            "scheme": contract.scheme.name, "num_points": str(contract.scheme.num_points),
            "input_size": str(contract.size), "input_layout": facts["layout"],
            "input_dtype": facts["input_dtype"], "output_space": facts["output"]["space"],
            "precision": facts["precision"], "checkpoint_sha256": contract.checkpoint.sha256}
