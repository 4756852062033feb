"""The per-format half of sensitivity and recovery: rank an int8 artifact's layers, then (with
quantize.mixed) search for the fewest float layers that bring it within quantize.mixed_target.

ONNX: layers are node names, candidates are written with quantize_static(nodes_to_exclude=...).
TFLite: layers are output tensor names, candidates come from one LiteRT calibration with
denylisted_nodes. Each recovered artifact is named for what it is (`*_mixed`), lists its float
layers and its share of int8 multiply-adds in the manifest, and goes through the same contract,
parity and output-step checks as the plain artifact it recovers; which of them ships is decided
afterwards by quantize.selection, with every other calibrated int8 row of the format.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from facemark.artifacts import Artifact, mixed_of
from facemark.errors import DataError
from facemark.manifest import drop_artifact
from facemark.artifact_rows import RowResult, attempt
from facemark.quantize.common import QuantJob, converter_ranges
from facemark.runtime import Feed, WorkerFailed, create_runner, run_artifact
from facemark.quantize.mixed import EvalFaces, Recovery, affordable, search
from facemark.quantize.sensitivity import recovery_order
from facemark.quantize.sensitivity_onnx import onnx_layer_errors, onnx_macs
from facemark.quantize.sensitivity_tflite import TfliteCalibration, tflite_macs

def wanted(job: QuantJob) -> bool:
    """Whether the layers need ranking: for the --explain report or for recovery."""
    return job.explain or job.cfg.quantize.mixed


def recovered(job: QuantJob, plain: RowResult, fmt: str, ranking: list[list[str]], row: Artifact,
              recover: Callable[[Recovery], RowResult], searcher: Callable[[EvalFaces], Recovery]) -> list[RowResult]:
    """Run the search for `plain` and, when it chose a candidate, write it with `recover` -> the
    mixed row `row` (none when plain int8 met the target, or nothing kept enough MACs in int8). The
    plain row's manifest entry records the search."""
    if not job.cfg.quantize.mixed or plain.failed or not ranking:
        return []
    try:
        faces = EvalFaces(job, job.data_root)
    except DataError as exc:   # no val split: candidates are never judged on test faces, so no search
        print(f"facemark quantize: note: no {fmt} mixed-precision search (it judges candidates on val "
              f"faces): {exc}", file=sys.stderr)
        return []
    print(f"facemark quantize: {fmt} mixed-precision search over {len(ranking)} ranked activations "
          f"(target {job.cfg.quantize.mixed_target:+.2%} NME vs float on val)")
    outcome: dict[str, Recovery] = {}

    def work() -> RowResult:
        outcome["recovery"] = searcher(faces)
        if outcome["recovery"].chosen is None:
            return RowResult(row.name, row.mode, "not needed")
        return recover(outcome["recovery"])

    result = attempt(row, work)
    if "recovery" in outcome:
        plain.facts["recovery"] = outcome["recovery"].record()
    if result.status == "not needed":
        verdict = "plain int8 met the target" if outcome["recovery"].met else "no candidate beat plain int8"
        print(f"facemark quantize: {row.name}: not written ({verdict})")
        return []
    return [result]


# ---------------------------------------------------------------- ONNX

def guarded(row: Artifact, work: Callable[[], list[RowResult]]) -> list[RowResult]:
    """`work`'s rows. An error while ranking or searching is reported on stderr and writes no row:
    the plain artifacts already written stand, and the gate judges them (a converter or debugger
    that cannot analyse some architecture must not fail a quantisation that succeeded)."""
    try:
        return work()
    except Exception as exc:
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(f"facemark quantize: warning: {row.name} ({row.mode}) not written: sensitivity/recovery failed: "
              f"{type(exc).__name__}: {message}", file=sys.stderr)
        return []


def onnx_rows(job: QuantJob, plain: RowResult, activation: str) -> list[RowResult]:
    """Rank the layers of the plain QDQ model (job.sensitivity["onnx"]) and recover it."""
    row = mixed_of(plain.name)
    drop_artifact(job.export_dir, row.name)   # made from the plain row this run replaces
    if plain.failed or not wanted(job):
        return []
    return guarded(row, lambda: _onnx_rows(job, plain, activation, row))


def _onnx_rows(job: QuantJob, plain: RowResult, activation: str, row: Artifact) -> list[RowResult]:
    from facemark.quantize import onnx_int8

    source = onnx_int8.preprocessed_float(job)
    plain_path = job.export_dir / plain.file
    faces = job.cfg.quantize.explain_faces
    layers = onnx_layer_errors(source, plain_path, job.calibration.inputs("NCHW")[:faces])
    job.sensitivity["onnx"] = {"artifact": plain.name, "inputs": min(faces, len(job.calibration.crops)),
                               "layers": layers}

    def build(excluded: list[str], stem: Path) -> Path:
        path = stem.with_suffix(".onnx")
        onnx_int8.write_qdq(source, path, job.calibration.inputs("NCHW"), activation,
                            job.cfg.quantize.calibration_method, float_decode=job.cfg.quantize.float_decode,
                            exclude=excluded, percentile=job.cfg.quantize.calibration_percentile)
        return path

    ranking = affordable(recovery_order(layers), onnx_macs(source), job.cfg.quantize.mixed_min_int8_macs)

    def searcher(faces: EvalFaces) -> Recovery:
        def score(path: Path) -> float:   # in-process: onnxruntime does not abort on int8 graphs
            runner = create_runner("onnx", path, Feed("NCHW"), job.size, job.norm)
            return faces.nme(runner.raw_outputs(faces.crops.crops))

        return search(ranking, build, score,
                      lambda path: onnx_int8.int8_macs(source, path), faces.float_nme, len(faces.crops),
                      job.work_dir, job.cfg.quantize.mixed_target, job.cfg.quantize.mixed_min_int8_macs, log=print)

    def recover(recovery: Recovery) -> RowResult:
        return onnx_int8.write_mixed(job, row, recovery, source, activation)

    return recovered(job, plain, "onnx", ranking, row, recover, searcher)


# ---------------------------------------------------------------- TFLite

def tflite_rows(job: QuantJob, plain: RowResult, saved_model: Path | None,
                calibration: TfliteCalibration | None = None) -> list[RowResult]:
    """Rank the ops of the full-int8 TFLite model with LiteRT's debugger (job.sensitivity["tflite"])
    and recover it as tflite_int8_full_mixed (float I/O). `calibration`: the one the plain row was
    quantised from (percentile ranges), else a min-max one is made from `saved_model`."""
    row = mixed_of(plain.name)
    drop_artifact(job.export_dir, row.name)   # made from the plain row this run replaces
    if plain.failed or not wanted(job):
        return []
    return guarded(row, lambda: _tflite_rows(job, plain, saved_model, calibration, row))


def _tflite_rows(job: QuantJob, plain: RowResult, saved_model: Path | None, calibration: TfliteCalibration | None,
                 row: Artifact) -> list[RowResult]:
    from facemark.quantize import tflite_int8

    inputs = job.calibration.inputs("NHWC")
    if calibration is None:
        if saved_model is None:
            raise RuntimeError("onnx2tf wrote no saved model: the TFLite sensitivity needs it")
        calibration = TfliteCalibration(saved_model, inputs, job.cfg.quantize.explain_faces,
                                        float_decode=job.cfg.quantize.float_decode)
    layers = calibration.layer_errors()
    job.sensitivity["tflite"] = {"artifact": plain.name, "inputs": min(job.cfg.quantize.explain_faces, len(inputs)),
                                 "layers": layers}

    def build(excluded: list[str], stem: Path) -> Path:
        path = stem.with_suffix(".tflite")
        path.write_bytes(calibration.quantize(excluded))
        return path

    macs = {layer: op["macs"] for layer, op in tflite_macs(calibration.quantize([])).items()}
    ranking = affordable(layers, macs, job.cfg.quantize.mixed_min_int8_macs)

    def searcher(faces: EvalFaces) -> Recovery:
        def score(path: Path) -> float:   # LiteRT in the runtime layer's child harness (int8 kernels may abort)
            try:
                points, _ = run_artifact("tflite", path, Feed("NHWC"), job.size, job.norm, faces.crops.crops,
                                         job.work_dir / "litert-search")
            except WorkerFailed as exc:
                raise RuntimeError(f"{path.name}: LiteRT {exc.status}") from None
            return faces.nme(points.reshape(len(points), -1))

        return search(ranking, build, score,
                      tflite_int8.int8_macs, faces.float_nme, len(faces.crops), job.work_dir,
                      job.cfg.quantize.mixed_target, job.cfg.quantize.mixed_min_int8_macs, log=print)

    def recover(recovery: Recovery) -> RowResult:
        chosen = recovery.chosen
        description = (f"int8 per-channel weights and int8 activations ({converter_ranges(job.cfg)} ranges from "
                       f"{len(job.calibration.crops)} calibration crops) except {len(chosen.excluded)} sensitive "
                       f"ops kept in float32 (listed in float_layers); float32 I/O")
        extra = {"float_layers": chosen.excluded, "int8_macs": round(chosen.int8_macs, 4),
                 "recovery": recovery.record(), "recovers": plain.name}
        return tflite_int8.write_tflite(job, row, chosen.path, description, "float32", calibrated=True, extra=extra)

    return recovered(job, plain, "tflite", ranking, row, recover, searcher)

