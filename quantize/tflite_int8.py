"""TFLite int8 through onnx2tf and LiteRT's converter, from the verified onnx_fp32 artifact.

- tflite_int8_full: full-integer, int8 weights and activations, calibrated on the calibration crops
  (our own 0-1 NHWC crops with the model's mean/std, never onnx2tf's MS-COCO sample). Ranges by
  quantize.calibration_method: percentile (the default) quantises onnx2tf's saved model with LiteRT
  (calibrated_ranges, then mlir_quantize as the converter does); min-max is onnx2tf's own -oiqt
  file. I/O float32 by default (a QUANTIZE op in, a DEQUANTIZE op out); quantize.tflite_io
  int8/uint8 makes the graph take and return integers, described by the input/output scale and
  zero point.
- tflite_int8_dynamic: dynamic range, int8 weights, float activations (no calibration needed).

onnx2tf's -oiqt also writes *_integer_quant (identical to full-integer with float I/O) and two
*_with_int16_act files; they are never kept (MobileViT's aborts LiteRT on allocate, the others
ran 25-35x slower). Each kept file runs in LiteRT in a child process (facemark.runtime.harness),
so a kernel that aborts becomes a failed row, and its landmark output step is checked against the
inter-pupil distance (common.check_output_step).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from facemark.artifacts import ARTIFACTS, Artifact, qat_row
from facemark.backends import BACKENDS
from facemark.io import atomic_path
from facemark.manifest import verify_artifact
from facemark.artifact_rows import RowResult, attempt, written
from facemark.quantize.common import (QuantJob, check_output_step, converter_ranges, decode_note, int8_facts,
                                      int8_parity, range_percentile)
from facemark.runtime import TorchRunner
from facemark.weights import Normalisation
from facemark.status import Status

INT8_FROM = BACKENDS["tflite"].int8_from
SAME_SCALE_OPS = {"PAD", "PADV2", "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "TRANSPOSE", "STRIDED_SLICE", "SLICE",
                  "SPACE_TO_DEPTH", "DEPTH_TO_SPACE"}
# the one onnx2tf run every row of this format shares (a row of the summary table when it fails)
ONNX2TF = Artifact("tflite_int8_*", "tflite", "int8", "quantize", "onnx2tf")
# registry row -> the onnx2tf file kind (OUT/*_{kind}.tflite) it comes from
KINDS = {ARTIFACTS["tflite_int8_full"]: "full_integer_quant", ARTIFACTS["tflite_int8_dynamic"]: "dynamic_range_quant"}


def planned(job: QuantJob) -> list[Artifact]:
    return list(KINDS)


def quantize(job: QuantJob) -> list[RowResult]:
    """Entry point: one onnx2tf run (convert), then each kept file checked on its own. With
    quantize.calibration_method percentile, tflite_int8_full is LiteRT's quantisation of the saved
    model onnx2tf wrote, with percentile ranges (TfliteCalibration), instead of onnx2tf's min-max file."""
    io_type = job.cfg.quantize.tflite_io   # one of config.TFLITE_IO
    files: dict[str, Path] = {}
    conversion = attempt(ONNX2TF, lambda: convert(job, io_type, files))
    calibration: dict[str, Any] = {}
    results = []
    for row, kind in KINDS.items():
        if conversion.failed:
            results.append(RowResult(row.name, row.mode, Status.FAILED, error=conversion.error,
                                       seconds=conversion.seconds))
            continue
        result = attempt(row, lambda: _finish(job, row, _produced(job, kind, files, calibration), io_type))
        result.seconds += conversion.seconds / len(KINDS)  # the shared onnx2tf run, split evenly
        results.append(result)
    if not conversion.failed:
        from facemark.quantize.recover import tflite_rows

        full = results[list(KINDS).index(ARTIFACTS["tflite_int8_full"])]
        results += tflite_rows(job, full, files.get("saved_model"), calibration.get("ranges"))
    return results


def _produced(job: QuantJob, kind: str, files: dict[str, Path], calibration: dict[str, Any]) -> Path | None:
    return full_integer(job, files, calibration) if kind == "full_integer_quant" else files.get(kind)


def full_integer(job: QuantJob, files: dict[str, Path], calibration: dict[str, Any]) -> Path | None:
    """The full-integer file of an onnx2tf run (`files`, from convert): onnx2tf's own (min-max ranges,
    quantize.float_decode off), or LiteRT's quantisation of the saved model onnx2tf wrote, with the
    TfliteCalibration kept in `calibration["ranges"]` (the mixed search reuses it)."""
    if onnx2tf_quantizes(job):
        return files.get("full_integer_quant")
    percentile = range_percentile(job.cfg)
    saved_model = files.get("saved_model")
    if saved_model is None:
        raise RuntimeError("onnx2tf wrote no saved model: percentile ranges and the float decode are set on it")
    from facemark.quantize.sensitivity_tflite import TfliteCalibration

    calibration["ranges"] = TfliteCalibration(saved_model, job.calibration.inputs("NHWC"), job.cfg.quantize.explain_faces,
                                             percentile, float_decode=job.cfg.quantize.float_decode)
    path = saved_model.parent / "model_full_integer_quant_litert.tflite"
    path.write_bytes(calibration["ranges"].quantize([], job.cfg.quantize.tflite_io))
    return path


def onnx2tf_quantizes(job: QuantJob) -> bool:
    """Whether the full-integer file is onnx2tf's own (-oiqt): only with min-max ranges and every op in
    int8; percentile ranges and the float decode are set on LiteRT's quantisation of its saved model."""
    return range_percentile(job.cfg) is None and not job.cfg.quantize.float_decode


def calibrated_ranges(calibrated: bytes, inputs: np.ndarray, percentile: float | None) -> bytes:
    """LiteRT's calibrated (still float) model with int8-ready activation ranges.

    - Ops whose int8 output keeps its input's scale (SAME_SCALE_OPS: pads, max pooling, reshapes)
      take their input's range. LiteRT's quantizer otherwise unifies the two, and a PADV2 that
      onnx2tf fills with -FLT_MAX before MAX_POOL_2D made the range of that pad value the scale of
      the stem (1e36: XNNPACK refuses the model). Padding with the range's minimum is exact for
      max pooling in int8 (every quantised value is at least that).
    - With `percentile`, every other measured tensor gets its percentile range over `inputs`
      ((N, S, S, 3) float32 normalised NHWC, the crops it was calibrated on;
      calibration.PercentileRanges), read back from the float model run without delegates, so
      that every intermediate stays readable. Without, the converter's min-max stays."""
    import flatbuffers

    from facemark.quantize.sensitivity_tflite import op_kinds, tflite_graph

    schema, model, graph = tflite_graph(calibrated)
    tensors = graph.tensors
    ranges = {index: (float(tensor.quantization.min[0]), float(tensor.quantization.max[0]))
              for index, tensor in enumerate(tensors) if tensor.quantization is not None
              and tensor.quantization.min is not None and len(tensor.quantization.min) == 1}
    follows = {op.outputs[0]: op.inputs[0] for kind, op in op_kinds(schema, model, graph)
               if kind in SAME_SCALE_OPS and len(op.outputs) and op.outputs[0] in ranges and op.inputs[0] in ranges}
    new = {index: bounds for index, bounds in ranges.items() if index not in follows}
    if percentile is not None:
        new = _percentile_ranges(calibrated, inputs, new, percentile)
    for index, source in follows.items():   # graph order: a chain (PADV2 -> MAX_POOL_2D) follows its first input
        new[index] = new[source]
    for index, (low, high) in new.items():
        tensors[index].quantization.min, tensors[index].quantization.max = [low], [high]
    builder = flatbuffers.Builder(len(calibrated))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _percentile_ranges(calibrated: bytes, inputs: np.ndarray, bounds: dict[int, tuple[float, float]],
                       percentile: float) -> dict[int, tuple[float, float]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from facemark.quantize.calibration import PercentileRanges

    stats = PercentileRanges(bounds)
    interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    for i in range(len(inputs)):
        interpreter.set_tensor(input_index, inputs[i:i + 1].astype(np.float32))
        interpreter.invoke()
        for index in bounds:
            stats.add(index, interpreter.get_tensor(index))
    return stats.ranges(percentile)


def onnx2tf_arguments(calibration_npy: Path, io_type: str, norm: Normalisation) -> list[str]:
    """-oiqt with our calibration crops: -cind INPUT FILE MEAN STD (onnx2tf computes (x - mean) / std
    on the 0-1 NHWC images, with the model's `norm`), and the full-integer I/O types."""
    from facemark.convert.onnx import INPUT_NAME

    mean = "[[[[" + ",".join(f"{v:g}" for v in norm.mean) + "]]]]"
    std = "[[[[" + ",".join(f"{v:g}" for v in norm.std) + "]]]]"
    return ["-oiqt", "-cind", INPUT_NAME, str(calibration_npy), mean, std, "-iqd", io_type, "-oqd", io_type]


def convert(job: QuantJob, io_type: str, files: dict[str, Path], onnx_path: Path | None = None) -> RowResult:
    """onnx2tf of `onnx_path` (default: the verified onnx_fp32) into the work folder: -oiqt when it
    quantizes (onnx2tf_quantizes), else -odrqt (dynamic range only: full_integer quantises its saved
    model, and onnx2tf's own calibration, about a minute on the demo model, would go unused); `files`
    gets {file kind: path} of what it wrote."""
    from facemark.convert.tflite import run_onnx2tf

    onnx_path = onnx_path or verify_artifact(job.export_dir, INT8_FROM, job.manifest)
    if onnx2tf_quantizes(job):
        calibration_npy = job.work_dir / "tflite_calibration.npy"
        np.save(calibration_npy, job.calibration.unit_images())
        arguments = onnx2tf_arguments(calibration_npy, io_type, job.norm)
    else:
        arguments = ["-odrqt"]
    files.update(run_onnx2tf(onnx_path, job.work_dir / "tflite_int8", arguments, calibration=job.calibration.crops.crops))
    return RowResult(ONNX2TF.name, ONNX2TF.mode, "converted")


def _finish(job: QuantJob, row: Artifact, produced: Path | None, io_type: str) -> RowResult:
    if produced is None:
        raise RuntimeError(f"onnx2tf wrote no *_{KINDS[row]}.tflite (see "
                           f"{job.work_dir / 'tflite_int8' / 'onnx2tf.log'})")
    full = row.name == "tflite_int8_full"
    dtype = io_type if full else "float32"
    extra = {"int8_macs": int8_macs(produced)} if full else {}
    return write_tflite(job, row, produced, description(full, io_type, job), dtype, calibrated=full, extra=extra)


def int8_macs(tflite_path: Path) -> float:
    """Share of the multiply-adds of a .tflite file that its int8 kernels compute."""
    from facemark.quantize.sensitivity import int8_mac_fraction
    from facemark.quantize.sensitivity_tflite import tflite_macs

    ops = tflite_macs(Path(tflite_path).read_bytes())
    return round(int8_mac_fraction({k: v["macs"] for k, v in ops.items()}, {k for k, v in ops.items() if v["int8"]}), 4)


def write_tflite(job: QuantJob, row: Artifact, produced: Path, description: str, dtype: str,
                 calibrated: bool, extra: dict[str, Any], made_from: str = INT8_FROM) -> RowResult:
    """Copy `produced` to export/(row's file) with the contract embedded, run it in LiteRT on the parity crops,
    check its output step, and return the verified row (`extra`: further manifest facts; `made_from`:
    what it was made from)."""
    from facemark.convert.parity import contract_payload
    from facemark.convert.tflite import embed_tflite_metadata

    facts = int8_facts(row, description, "NHWC", dtype, dtype, job, made_from)
    if calibrated:   # LiteRT's converter measures min-max; percentile ranges are set on its calibrated model
        facts["calibration"]["method"] = "percentile" if range_percentile(job.cfg) else "minmax"
    else:
        facts.pop("calibration")  # dynamic range: weights only, no activation ranges measured
    facts.update(extra)
    with atomic_path(job.export_dir / row.file) as tmp:
        shutil.copyfile(produced, tmp)
        embed_tflite_metadata(tmp, contract_payload(job.contract, facts))
        actual, io = run_litert(tmp, facts, job)
        facts["input"].update(name=io["input"]["name"], quantization=_quant(io["input"]))
        facts["output"].update(name=io["output"]["name"], quantization=_quant(io["output"]))
        if io["output_step_scale"] is not None:
            facts["output_step"] = check_output_step(io["output_step_scale"], job.size,
                                                     job.calibration.median_ipd_px, job.cfg.quantize.max_output_step)
        expected = TorchRunner(job.model, job.size, job.norm).predict(job.parity.crops)
        facts["parity"] = int8_parity(actual, expected, job)
        facts["status"] = Status.VERIFIED
    return written(row, facts)


def description(full: bool, io_type: str, job: QuantJob) -> str:
    if not full:
        return "dynamic range: int8 weights, float32 activations (quantised on the fly per op); float32 I/O"
    io = ("float32 I/O (QUANTIZE in, DEQUANTIZE out)" if io_type == "float32"
          else f"{io_type} I/O (scale/zero point in the manifest)")
    return (f"full integer: int8 per-channel weights, int8 activations with {converter_ranges(job.cfg)} ranges from "
            f"{len(job.calibration.crops)} calibration crops{decode_note(job.cfg)}; {io}")



def _quant(detail: dict[str, Any]) -> dict[str, Any] | None:
    """Scale/zero point of an integer I/O tensor; None for float I/O."""
    if detail["dtype"] == "float32":
        return None
    return {"dtype": detail["dtype"], "scale": detail["scale"], "zero_point": detail["zero_point"],
            "formula": "real = (q - zero_point) * scale"}


def run_litert(tflite_path: Path, facts: dict[str, Any], job: QuantJob) -> tuple[np.ndarray, dict[str, Any]]:
    """The .tflite on the parity crops in a child process (facemark.runtime.harness) -> ((N, 2P)
    float64 normalised outputs, LiteRTRunner.io()). A crash (abort, segfault) or a timeout raises
    RuntimeError naming the file and the status."""
    from facemark.runtime import Feed, WorkerFailed, run_artifact

    crops = job.parity.crops
    try:
        predictions, result = run_artifact("tflite", tflite_path, Feed("NHWC"), job.size, job.norm, crops,
                                           job.work_dir / "litert")
    except WorkerFailed as exc:
        raise RuntimeError(f"{tflite_path.name}: LiteRT {exc.status}") from None
    return predictions.reshape(len(crops), -1).astype(np.float64), result["io"]


def write_qat(job: QuantJob, tuner: Any) -> RowResult:
    """tflite_int8_full_qat: `tuner`'s fine-tuned float weights (quantize.qat.FineTuner) -> ONNX ->
    onnx2tf full integer, calibrated like tflite_int8_full."""
    from facemark.convert.onnx import export_onnx
    from facemark.quantize.qat import QAT_CHECKPOINT

    onnx_path = export_onnx(tuner.float_model(), job.work_dir / "qat_fp32.onnx", job.size, job.cfg.export.opset)
    files: dict[str, Path] = {}
    convert(job, job.cfg.quantize.tflite_io, files, onnx_path=onnx_path)
    produced = full_integer(job, files, {})
    if produced is None:
        raise RuntimeError(f"onnx2tf wrote no *_full_integer_quant.tflite (see {job.work_dir / 'tflite_int8'})")
    text = "quantisation-aware fine-tuned weights; " + description(True, job.cfg.quantize.tflite_io, job)
    extra = {"int8_macs": int8_macs(produced), "qat": tuner.record()}
    return write_tflite(job, qat_row("tflite"), produced, text, job.cfg.quantize.tflite_io,
                        calibrated=True, extra=extra, made_from=QAT_CHECKPOINT)
