"""ONNX: TorchScript exporter -> onnxsim -> onnx.checker -> metadata -> onnxruntime parity.

Artifacts: onnx_fp32 (input "input" (1, 3, S, S) float32 NCHW, normalised with ImageNet mean/std;
output "landmarks" (1, 2P) normalised crop units) and, with --bake-preprocessing, onnx_fp32_baked
(input (1, S, S, 3) uint8 RGB NHWC, the layout a decoded camera frame or bitmap already has;
output (1, 2P) crop pixels). The batch axis is dynamic when export.dynamic_batch is true.

`export_onnx` is the reusable primitive (the quantize stage calls it too); `convert` is the
format's entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from facemark.artifact_rows import RowResult, attempt, written
from facemark.convert.formats import ExportJob, float_artifact
from facemark.convert.parity import BakedPreprocessing, check_parity, embedded_metadata, example_input, io_facts
from facemark.runtime import Feed, TorchRunner, create_runner
from facemark.io import atomic_path
from facemark.status import Status

INPUT_NAME = "input"
OUTPUT_NAME = "landmarks"


def export_onnx(model: nn.Module, onnx_path: Path, input_size: int, opset: int, *,
                dynamic_batch: bool = False, metadata: dict[str, str] | None = None,
                input_layout: str = "NCHW", input_dtype: torch.dtype = torch.float32) -> Path:
    """Write `model` as a simplified, checked ONNX file at `onnx_path` (atomically).

    The graph takes "input" of shape (1, 3, S, S) (or (1, S, S, 3) for input_layout "NHWC") and
    `input_dtype`, and returns "landmarks" (1, 2P) in whatever space `model` returns. Batch is
    static 1 unless `dynamic_batch`. `metadata` goes into the model's metadata_props.
    """
    import onnx
    import onnxsim

    example = example_input(input_size, input_layout, input_dtype)
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with atomic_path(Path(onnx_path)) as tmp:
        # dynamo=False: the TorchScript exporter gives flat, onnxsim/onnx2tf-friendly graphs at opset 17
        torch.onnx.export(model.eval(), (example,), str(tmp), opset_version=opset, dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=axes,
                          do_constant_folding=True)
        proto = onnx.load(str(tmp))
        simplified, ok = onnxsim.simplify(proto)
        if not ok:
            raise RuntimeError(f"{onnx_path}: onnxsim could not validate the simplified graph")
        onnx.checker.check_model(simplified, full_check=True)
        for key, value in (metadata or {}).items():
            entry = simplified.metadata_props.add()
            entry.key, entry.value = key, value
        simplified.producer_name = "facemark"
        onnx.save(simplified, str(tmp))
    return Path(onnx_path)


def read_onnx_metadata(onnx_path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}


def convert(job: ExportJob) -> list[RowResult]:
    """Entry point: onnx_fp32 (+ onnx_fp32_baked), each checked in onnxruntime before renaming."""
    return [attempt(float_artifact("onnx", "float32", baked), lambda baked=baked: _write_variant(job, baked))
            for baked in job.variants]


def _write_variant(job: ExportJob, baked: bool) -> RowResult:
    precision = "float32"
    row = float_artifact("onnx", precision, baked)
    name, file = row.name, row.file
    layout = "NHWC" if baked else "NCHW"
    facts: dict[str, Any] = io_facts("onnx", precision, baked, job.size, job.contract.scheme.num_points,
                                     layout, "uint8" if baked else "float32")
    facts["opset"], facts["dynamic_batch"] = job.cfg.export.opset, job.cfg.export.dynamic_batch
    facts["embedded"] = "metadata_props: facemark_manifest (JSON contract) + flat keys"
    module = BakedPreprocessing(job.model, job.size, "NHWC", job.norm).eval() if baked else job.model
    with atomic_path(job.export_dir / file) as tmp:
        export_onnx(module, tmp, job.size, job.cfg.export.opset, dynamic_batch=job.cfg.export.dynamic_batch,
                    metadata=embedded_metadata(job.contract, facts), input_layout=layout,
                    input_dtype=torch.uint8 if baked else torch.float32)
        actual = create_runner("onnx", tmp, Feed(layout, baked), job.size, job.norm).predict(job.crops)
        expected = TorchRunner(job.model, job.size, job.norm).predict(job.crops)
        facts["parity"] = check_parity(name, actual, expected, precision, job.size, job.ipd_px, job.crop_split)
    facts["status"] = Status.VERIFIED
    return written(row, facts)
