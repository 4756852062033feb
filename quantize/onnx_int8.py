"""ONNX int8 with onnxruntime's quantisation tools, from the verified onnx_fp32 artifact.

- onnx_int8_qdq_u8s8 (default) / onnx_int8_qdq_s8s8: static QDQ, per-channel int8 weights,
  activations uint8 (u8s8) or int8 (s8s8) with ranges from the calibration crops
  (quantize.calibration_method, percentile by default).
  u8s8 is the default because onnxruntime's x86 kernels run it 2-3x faster than s8s8 (measured;
  x86 VNNI multiplies u8 by s8). Graph: pre-processed with quant_pre_process (shape inference,
  BatchNorm folding) so that every Conv/Gemm is quantised.
- onnx_int8_dynamic (quantize.onnx_dynamic): int8 weights, activation ranges computed per run
  (no calibration).

Input "input" (1, 3, S, S) float32 NCHW normalised, output "landmarks" (1, 2P) float32 normalised
crop units, as the float ONNX. Each file runs in onnxruntime on held-out crops before it is kept.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemark.backends import BACKENDS
from facemark.errors import ConfigError
from facemark.artifacts import ARTIFACTS, Artifact, onnx_static, qat_row
from facemark.console import captured
from facemark.io import atomic_path
from facemark.manifest import verify_artifact
from facemark.artifact_rows import RowResult, attempt, written
from facemark.quantize.common import (QuantJob, check_output_step, converter_ranges, decode_note, int8_facts,
                                      int8_parity, ranges_label)
from facemark.runtime import Feed, TorchRunner, create_runner
from facemark.status import Status

INT8_FROM = BACKENDS["onnx"].int8_from
DYNAMIC = ARTIFACTS["onnx_int8_dynamic"]


def planned(job: QuantJob) -> list[Artifact]:
    """The registry rows this backend writes for the job's config."""
    return [onnx_static(job.cfg.quantize.onnx_activation)] + ([DYNAMIC] if job.cfg.quantize.onnx_dynamic else [])


def quantize(job: QuantJob) -> list[RowResult]:
    """Entry point: the static QDQ model, and the dynamic one when quantize.onnx_dynamic is on."""
    from facemark.quantize.recover import onnx_rows

    activation = job.cfg.quantize.onnx_activation
    row = onnx_static(activation)
    results = [attempt(row, lambda: _static(job, row, activation))]
    results += onnx_rows(job, results[0], activation)
    if job.cfg.quantize.onnx_dynamic:
        results.append(attempt(DYNAMIC, lambda: _dynamic(job)))
    return results


def preprocessed_float(job: QuantJob) -> Path:
    """Verify onnx_fp32 against the manifest, then quant_pre_process it into the work folder."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_onnx = verify_artifact(job.export_dir, INT8_FROM, job.manifest)
    target = job.work_dir / "onnx_int8_pre.onnx"
    if not target.is_file():
        quant_pre_process(str(float_onnx), str(target), skip_symbolic_shape=False)
    return target


class CropReader:
    """onnxruntime CalibrationDataReader over (N, 3, S, S) float32 calibration inputs, one at a time
    (the float ONNX may have a static batch of 1)."""

    def __init__(self, input_name: str, inputs: np.ndarray):
        self.input_name, self.inputs, self.position = input_name, inputs, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.inputs):
            return None
        batch = self.inputs[self.position:self.position + 1]
        self.position += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        self.position = 0


CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def write_qdq(float_onnx: Path, target: Path, inputs: np.ndarray, activation: str, method: str, *,
              float_decode: bool, exclude: list[str] | None = None, percentile: float | None = None) -> None:
    """quantize_static `float_onnx` (pre-processed float) into `target`: QDQ, per-channel int8 weights,
    `activation` ("uint8"/"int8") activations with ranges by `method` (quantize.calibration_method;
    percentile at `percentile`, quantize.calibration_percentile) on (N, 3, S, S) float32
    calibration `inputs`; the nodes named in `exclude`, and with `float_decode` (quantize.float_decode)
    those after the last multiply-add (sensitivity_onnx.onnx_decode_tail), stay in float."""
    from facemark.quantize.sensitivity_onnx import onnx_decode_tail

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"quantize.calibration_method: expected one of {', '.join(CALIBRATION_METHODS)}, "
                          f"got {method!r}")
    decode = onnx_decode_tail(float_onnx) if float_decode else []
    with captured():   # the calibrator print()s its progress ("Collecting tensor data ...", "Percentile")
        quantize_static(str(float_onnx), str(target), CropReader("input", inputs),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
                        nodes_to_exclude=list(dict.fromkeys([*decode, *(exclude or [])])),
                        extra_options={"CalibPercentile": percentile} if method == "percentile" else {})


def int8_macs(float_onnx: Path, quantised: Path) -> float:
    """Share of the float model's multiply-adds that run in int8 in `quantised`."""
    from facemark.quantize.sensitivity import int8_mac_fraction
    from facemark.quantize.sensitivity_onnx import onnx_int8_nodes, onnx_macs

    return round(int8_mac_fraction(onnx_macs(float_onnx), onnx_int8_nodes(quantised)), 4)


def output_step(job: QuantJob, onnx_path: Path) -> dict[str, Any] | None:
    """The int8 output step check, or None when the output layer was kept in float."""
    try:
        scale = output_scale(onnx_path)
    except RuntimeError:   # no DequantizeLinear before the output: the head runs in float
        return None
    return check_output_step(scale, job.size, job.calibration.median_ipd_px, job.cfg.quantize.max_output_step)


def _static(job: QuantJob, row: Artifact, activation: str) -> RowResult:
    float_onnx = preprocessed_float(job)
    method = job.cfg.quantize.calibration_method
    description = (f"int8 per-channel weights, {activation} activations (static, {ranges_label(job.cfg)} ranges "
                   f"from {len(job.calibration.crops)} calibration crops), QDQ format{decode_note(job.cfg)}; float32 I/O")
    facts = int8_facts(row, description, "NCHW", "float32", "float32", job, INT8_FROM)
    with atomic_path(job.export_dir / row.file) as tmp:
        write_qdq(float_onnx, tmp, job.calibration.inputs("NCHW"), activation, method,
                  float_decode=job.cfg.quantize.float_decode, percentile=job.cfg.quantize.calibration_percentile)
        facts["output_step"] = output_step(job, tmp)
        facts["int8_macs"] = int8_macs(float_onnx, tmp)
        finish(job, tmp, facts)
    return written(row, facts)


def write_mixed(job: QuantJob, row: Artifact, recovery: Any, float_onnx: Path, activation: str) -> RowResult:
    """The chosen recovery candidate as an artifact: the QDQ model with recovery.chosen.excluded
    nodes in float, its contract, float layers, int8 share and search in the manifest."""
    chosen = recovery.chosen
    description = (f"int8 per-channel weights, {activation} activations (static, {ranges_label(job.cfg)} "
                   f"ranges from "
                   f"{len(job.calibration.crops)} calibration crops), QDQ format, except {len(chosen.excluded)} "
                   f"sensitive nodes kept in float32 (listed in float_layers); float32 I/O")
    facts = int8_facts(row, description, "NCHW", "float32", "float32", job, INT8_FROM)
    facts.update(float_layers=chosen.excluded, int8_macs=round(chosen.int8_macs, 4), recovery=recovery.record(),
                 recovers=row.recovers)
    with atomic_path(job.export_dir / row.file) as tmp:
        shutil.copyfile(chosen.path, tmp)
        facts["output_step"] = output_step(job, tmp)
        finish(job, tmp, facts)
    return written(row, facts)


def _dynamic(job: QuantJob) -> RowResult:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_onnx = preprocessed_float(job)
    description = ("int8 per-channel weights; activations quantised per run with ranges computed on the fly "
                   "(dynamic, no calibration); float32 I/O")
    facts = int8_facts(DYNAMIC, description, "NCHW", "float32", "float32", job, INT8_FROM)
    facts.pop("calibration")  # dynamic quantisation measures no ranges in advance
    with atomic_path(job.export_dir / DYNAMIC.file) as tmp:
        quantize_dynamic(str(float_onnx), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        finish(job, tmp, facts)
    return written(DYNAMIC, facts)


def output_scale(onnx_path: Path) -> float:
    """Scale of the DequantizeLinear that produces the graph output (one int8 step of the landmark
    output, normalised units)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    output = model.graph.output[0].name
    consts = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and output in node.output:
            return float(numpy_helper.to_array(consts[node.input[1]]).max())
    raise RuntimeError(f"{onnx_path}: the output {output!r} is not produced by a DequantizeLinear node")


def finish(job: QuantJob, onnx_path: Path, facts: dict[str, Any]) -> None:
    """Embed the contract, run onnxruntime on the parity crops, compare with PyTorch."""
    from facemark.convert.parity import embedded_metadata

    _embed(onnx_path, embedded_metadata(job.contract, facts))
    actual = create_runner("onnx", onnx_path, Feed(facts["layout"]), job.size, job.norm).predict(job.parity.crops)
    facts["parity"] = int8_parity(actual, TorchRunner(job.model, job.size, job.norm).predict(job.parity.crops), job)
    facts["status"] = Status.VERIFIED


def _embed(onnx_path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(onnx_path))
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for key, value in kept + list(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = onnx_path.with_name(onnx_path.name + ".meta")
    onnx.save(model, str(tmp))
    shutil.move(str(tmp), onnx_path)


def write_qat(job: QuantJob, tuner: Any) -> RowResult:
    """onnx_int8_qdq_u8s8_qat: convert_pt2e of `tuner`'s fine-tuned graph (quantize.qat.FineTuner),
    exported as QDQ ONNX."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from facemark.convert.onnx import INPUT_NAME, OUTPUT_NAME
    from facemark.quantize.qat import QAT_CHECKPOINT
    from facemark.quantize.sensitivity import int8_mac_fraction
    from facemark.quantize.sensitivity_onnx import onnx_int8_nodes, onnx_macs

    row = qat_row("onnx")
    converted = convert_pt2e(copy.deepcopy(tuner.graph))
    move_exported_model_to_eval(converted)
    description = ("quantisation-aware fine-tuned: int8 per-channel weights, uint8 activations with the "
                   f"{converter_ranges(job.cfg)} ranges it was fine-tuned against, QDQ format; float32 I/O")
    facts = int8_facts(row, description, "NCHW", "float32", "float32", job, QAT_CHECKPOINT)
    facts["calibration"].update(method="qat", detail=tuner.settings["ranges"])
    facts["qat"] = tuner.record()
    with atomic_path(job.export_dir / row.file) as tmp:
        _export_dynamo(converted, tmp, job.size, INPUT_NAME, OUTPUT_NAME)
        facts["output_step"] = output_step(job, tmp)
        facts["int8_macs"] = round(int8_mac_fraction(onnx_macs(tmp), onnx_int8_nodes(tmp)), 4)
        finish(job, tmp, facts)
    return written(row, facts)


def _export_dynamo(graph: torch.nn.Module, path: Path, size: int, input_name: str, output_name: str) -> None:
    """torch.onnx's dynamo exporter (it translates the quantize/dequantize ops of a converted PT2E
    graph into QuantizeLinear/DequantizeLinear; the TorchScript one does not), batch 1, checked."""
    import onnx

    program = torch.onnx.export(graph, (torch.zeros(1, 3, size, size),), dynamo=True, input_names=[input_name],
                                output_names=[output_name], verbose=False)
    program.save(str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    proto.producer_name = "facemark"
    onnx.save(proto, str(path))
