"""CoreML: torch.jit.trace -> coremltools mlprogram (.mlpackage), float32 and float16.

Artifacts: coreml_fp32, coreml_fp16 (input "input" MultiArray (1, 3, S, S) float32 NCHW,
normalised with ImageNet mean/std; output "landmarks" (1, 2P) normalised crop units) and, with
--bake-preprocessing, coreml_fp32_baked / coreml_fp16_baked whose input "input" is an RGB image
(ImageType, S x S: a CVPixelBuffer / CGImage on iOS, feeding 0-255 values) and whose output is in
crop pixels. Minimum deployment target iOS 15 (the first with mlprogram). The manifest facts are
in user_defined_metadata (see parity.embedded_metadata).

Prediction needs macOS: on Linux each package is written, reloaded without compiling, its spec
checked (names, shapes, metadata) and its status is "written, not run on this host"; on macOS the
same path also predicts every parity crop and compares to PyTorch.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facemark.artifact_rows import RowResult, attempt, written
from facemark.convert.formats import ExportJob, float_artifact
from facemark.convert.parity import BakedPreprocessing, check_parity, embedded_metadata, example_input, io_facts
from facemark.console import captured
from facemark.io import atomic_path
from facemark.backends import BACKENDS
from facemark.runtime import Feed, TorchRunner, create_runner
from facemark.status import Status

INPUT_NAME = "input"
OUTPUT_NAME = "landmarks"


def export_coreml(model: nn.Module, package_path: Path, input_size: int, precision: str, *,
                  image_input: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """Trace `model` on a (1, 3, S, S) input and save an mlprogram package at `package_path`.

    precision: "float32" or "float16" (compute_precision). image_input: the input is a CoreML RGB
    ImageType (0-255 values, scale 1) instead of a float MultiArray. `package_path` must end in
    .mlpackage (coremltools requires it); callers wanting atomicity save into a work folder.
    """
    import coremltools as ct

    compute = {"float32": ct.precision.FLOAT32, "float16": ct.precision.FLOAT16}[precision]
    traced = torch.jit.trace(model.eval(), example_input(input_size, "NCHW"))
    shape = (1, 3, input_size, input_size)
    source = (ct.ImageType(name=INPUT_NAME, shape=shape, color_layout=ct.colorlayout.RGB, scale=1.0)
              if image_input else ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32))
    with captured():   # coremltools' pass-by-pass progress bars belong in the log
        mlmodel = ct.convert(traced, inputs=[source], outputs=[ct.TensorType(name=OUTPUT_NAME)],
                             convert_to="mlprogram", compute_precision=compute,
                             minimum_deployment_target=ct.target.iOS15)
    mlmodel.short_description = "facemark landmark regressor"
    mlmodel.user_defined_metadata.update(metadata or {})
    mlmodel.save(str(package_path))
    return Path(package_path)


def check_spec(package_path: Path, input_size: int, image_input: bool, metadata: dict[str, str]) -> dict[str, Any]:
    """Reload a package without compiling it and check names, input shape/type and metadata."""
    import coremltools as ct

    spec = ct.models.MLModel(str(package_path), skip_model_load=True).get_spec()
    inputs, outputs = spec.description.input, spec.description.output
    problems = []
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        problems.append(f"io names {[i.name for i in inputs]} -> {[o.name for o in outputs]}")
    kind = inputs[0].type.WhichOneof("Type") if inputs else None
    if image_input and (kind != "imageType" or (inputs[0].type.imageType.width,
                                                inputs[0].type.imageType.height) != (input_size, input_size)):
        problems.append(f"input is {kind}, expected a {input_size}x{input_size} image")
    if not image_input and (kind != "multiArrayType" or
                            list(inputs[0].type.multiArrayType.shape) != [1, 3, input_size, input_size]):
        problems.append(f"input is {kind}, expected MultiArray (1, 3, {input_size}, {input_size})")
    stored = dict(spec.description.metadata.userDefined)
    if any(stored.get(k) != v for k, v in metadata.items()):
        problems.append("user_defined_metadata differs from the manifest facts")
    if problems:
        raise RuntimeError(f"{package_path.name}: spec check failed: {'; '.join(problems)}")
    return {"spec_version": int(spec.specificationVersion), "input_type": kind}


def can_predict() -> bool:
    """CoreML prediction exists only on macOS (the runtime layer's rule)."""
    return BACKENDS["coreml"].runs_here()


def convert(job: ExportJob) -> list[RowResult]:
    """Entry point: coreml_fp32, coreml_fp16 (+ *_baked)."""
    return [attempt(float_artifact("coreml", precision, baked),
                    lambda baked=baked, precision=precision: _write(job, precision, baked))
            for baked in job.variants for precision in BACKENDS["coreml"].float_precisions]


def _write(job: ExportJob, precision: str, baked: bool) -> RowResult:
    row = float_artifact("coreml", precision, baked)
    name, file = row.name, row.file
    facts = io_facts("coreml", precision, baked, job.size, job.contract.scheme.num_points, "NCHW",
                     "uint8" if baked else "float32")
    if baked:  # an ImageType: the app hands over an RGB pixel buffer, CoreML feeds it as 0-255 floats
        facts["input"].update(shape=[job.size, job.size], dtype="RGB image (CVPixelBuffer)")
        facts["layout"] = "image"
    facts["embedded"] = "user_defined_metadata: facemark_manifest (JSON contract) + flat keys"
    metadata = embedded_metadata(job.contract, facts)
    module = BakedPreprocessing(job.model, job.size, "NCHW", job.norm).eval() if baked else job.model
    staged = export_coreml(module, job.work_dir / file, job.size, precision, image_input=baked, metadata=metadata)
    with atomic_path(job.export_dir / file) as tmp:
        shutil.copytree(staged, tmp)
        facts["spec"] = check_spec(tmp, job.size, baked, metadata)
        if can_predict():
            actual = create_runner("coreml", tmp, Feed(facts["layout"], baked), job.size, job.norm).predict(job.crops)
            expected = TorchRunner(job.model, job.size, job.norm).predict(job.crops)
            facts["parity"] = check_parity(name, actual, expected, precision, job.size, job.ipd_px, job.crop_split)
    facts["status"] = Status.VERIFIED if can_predict() else Status.WRITTEN
    return written(row, facts)
