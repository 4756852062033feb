"""What every int8 backend shares: the job it is given, the output-step check and the parity
figures against PyTorch (the row it returns: facemark.artifact_rows.RowResult).

Coordinate spaces: network outputs are (N, 2P) normalised crop units, (P - S/2) / (S/2); every
figure reported here is converted to crop pixels (x S/2) so that it can be compared with the
inter-pupil distance of the faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from facemark.artifacts import Artifact
from facemark.config import Config
from facemark.convert.parity import ParityError, parity_figures
from facemark.data.crops import CropSet
from facemark.errors import ArtifactError
from facemark.quantize.calibration import Calibration
from facemark.contract import Manifest, RunContract
from facemark.manifest import manifest_normalisation
from facemark.schemes import load_scheme
from facemark.weights import Normalisation

# A quantised artifact whose mean landmark error against PyTorch exceeds this fraction of the
# inter-pupil distance is broken (wrong ranges, wrong layout), not merely less accurate; the
# accuracy gate proper is `facemark validate` on the test split.
PARITY_SANITY_IPD = 0.5


@dataclass
class QuantJob:
    """Everything an int8 backend needs. model: the float PyTorch model (eval); manifest: the loaded
    RUN/export/manifest.json; parity: held-out crops (val split) compared against PyTorch."""

    model: nn.Module
    cfg: Config
    export_dir: Path
    work_dir: Path
    manifest: Manifest
    calibration: Calibration
    parity: CropSet
    data_root: Path | None = None   # the dataset (mixed-precision recovery reads its val split)
    explain: bool = False           # rank the layers for the sensitivity report (quantize --explain)
    # {format: {"artifact", "inputs", "layers": [...]}}: per-layer errors, filled by the backends
    sensitivity: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.cfg.data.input_size

    @property
    def norm(self) -> Normalisation:
        """The input normalisation of the manifest (checked against the checkpoint's by quantize_run)."""
        return manifest_normalisation(self.contract, "export manifest")

    @property
    def contract(self) -> RunContract:
        """The run-level half of the contract (everything but the artifacts table)."""
        return self.manifest.contract

    def parity_ipd_px(self) -> np.ndarray:
        """(N,) ground-truth inter-pupil distance of each parity face, in crop pixels."""
        return load_scheme(self.cfg.data.scheme).interpupil(self.parity.crop_points)


def check_output_step(scale: float, size: int, median_ipd_px: float, max_step: float) -> dict[str, Any]:
    """Judge the quantisation step of the int8 tensor that becomes the landmark output.

    `scale` is that tensor's quantisation scale in normalised crop units (one integer step; an
    8-bit tensor spans 255 steps, so scale = output range / 255); x S/2 gives crop pixels. A step
    coarser than `max_step` x the median inter-pupil distance of the calibration faces would
    quantise every landmark to a visible grid: ArtifactError. Returns the figures for the manifest.
    """
    step_px = float(scale) * size / 2.0
    ratio = step_px / median_ipd_px if median_ipd_px > 0 else float("inf")
    figures = {"scale": float(scale), "step_px": round(step_px, 4), "median_ipd_px": round(median_ipd_px, 3),
               "step_ipd": round(ratio, 5), "max_step_ipd": max_step}
    if not ratio <= max_step:
        raise ArtifactError(f"int8 output step {step_px:.3f} crop px is {ratio:.2%} of the median inter-pupil "
                            f"distance ({median_ipd_px:.1f} px) > quantize.max_output_step={max_step:g}; "
                            f"keep the output in float (quantize.tflite_io: float32) or retrain with a "
                            f"tighter output range")
    return figures


def int8_parity(actual: np.ndarray, expected: np.ndarray, job: QuantJob,
                reference: str = "pytorch float32") -> dict[str, Any]:
    """The parity figures (convert.parity.parity_figures) of an int8 artifact's (N, 2P) outputs on the
    job's parity crops; a mean distance above PARITY_SANITY_IPD inter-pupil distances, or non-finite
    landmarks, raise ArtifactError."""
    try:
        figures = parity_figures(actual, expected, job.size, job.parity_ipd_px(), job.parity.split, reference)
    except ParityError as exc:
        raise ArtifactError(str(exc)) from None
    if figures["nme_ipd"] > PARITY_SANITY_IPD:
        raise ArtifactError(f"int8 landmarks are {figures['nme_ipd']:.2f} inter-pupil distances from PyTorch on "
                            f"average over {figures['images']} {job.parity.split} crops: the quantised model is broken")
    return figures


def int8_facts(row: Artifact, quantization: str, layout: str, input_dtype: str, output_dtype: str,
               job: QuantJob, made_from: str | None) -> dict[str, Any]:
    """The per-artifact contract of the int8 file of registry row `row` (the run-level half is the
    manifest's top level)."""
    size, points = job.size, job.contract.scheme.num_points
    shape = [1, size, size, 3] if layout == "NHWC" else [1, 3, size, size]
    return {"format": row.format, "precision": "int8", "mode": row.mode, "quantization": quantization,
            "layout": layout, "input_dtype": input_dtype, "baked_preprocessing": False, "made_from": made_from,
            "input": {"name": "input", "shape": shape, "dtype": input_dtype, "color": "RGB",
                      "preprocessing": "pixels/255, then (x - mean) / std (manifest input.mean/std)"},
            "output": {"name": "landmarks", "shape": [1, 2 * points], "dtype": output_dtype,
                       "space": "normalised crop", "formula": f"crop px = value * {size / 2:g} + {size / 2:g}",
                       "order": "x0, y0, x1, y1, ..."},
            "calibration": {**job.calibration.record(), "method": job.cfg.quantize.calibration_method,
                            **({"percentile": range_percentile(job.cfg)} if range_percentile(job.cfg) else {})}}


def range_percentile(cfg: Config) -> float | None:
    """quantize.calibration_percentile when quantize.calibration_method is percentile, else None:
    LiteRT's converter and the QAT graph (qat_graph.measure_ranges) then use min-max ranges, for entropy
    too, which only onnxruntime implements."""
    return cfg.quantize.calibration_percentile if cfg.quantize.calibration_method == "percentile" else None


def converter_ranges(cfg: Config) -> str:
    """The activation ranges of LiteRT's rows and of the QAT graph: "min-max" or "percentile 99.99"."""
    return ranges_label(cfg) if range_percentile(cfg) else "min-max"


def ranges_label(cfg: Config) -> str:
    """How the activation ranges are measured, for artifact descriptions ("min-max", "percentile 99.99")."""
    method = cfg.quantize.calibration_method
    return {"minmax": "min-max", "entropy": "entropy"}.get(method, f"{method} {cfg.quantize.calibration_percentile:g}")


def load_torch_before_tensorflow() -> None:
    """Import torch._dynamo (which loads triton) before anything loads TensorFlow.

    triton's C extension segfaults when it is loaded after TensorFlow's libraries, and coremltools
    imports both (measured with torch 2.14 / tensorflow-cpu 2.21: `import torch, coremltools`
    crashes). Call before any TensorFlow, onnx2tf metadata or coremltools import in this process.
    """
    import torch._dynamo  # noqa: F401


def decode_note(cfg: Config) -> str:
    """The artifact description's clause for quantize.float_decode ("" when off)."""
    return "; the ops after the last multiply-add (the decode) in float32" if cfg.quantize.float_decode else ""
