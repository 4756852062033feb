"""TFLite through onnx2tf: float32 and float16 files, each checked in LiteRT against PyTorch.

Artifacts: tflite_fp32, tflite_fp16 (input (1, S, S, 3) float32 NHWC normalised with ImageNet
mean/std; output (1, 2P) normalised crop units; fp16 stores weights as float16 and dequantises
them on load) and, with --bake-preprocessing, tflite_fp32_baked / tflite_fp16_baked (input
(1, S, S, 3) uint8 RGB, output crop pixels).

Metadata: the manifest facts are embedded as JSON in the flatbuffer's standard `metadata` table
(Model.metadata, an entry named "facemark_manifest" pointing at a buffer of UTF-8 JSON: the same
mechanism TFLite Support metadata uses under the name "TFLITE_METADATA"). Interpreters ignore it;
`read_tflite_metadata` reads it back. The sidecar manifest.json stays the authority.

`run_onnx2tf` is the reusable onnx2tf driver (the quantize stage calls it with -oiqt/-cind or -odrqt).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemark.backends import BACKENDS
from facemark.artifact_rows import RowResult, attempt, written
from facemark.convert.formats import ExportJob, float_artifact
from facemark.convert.onnx import export_onnx
from facemark.convert.parity import BakedPreprocessing, check_parity, contract_payload, io_facts
from facemark.interrupt import run_child
from facemark.io import atomic_path
from facemark.runtime import Feed, TorchRunner, create_runner
from facemark.weights import Normalisation
from facemark.status import Status

METADATA_NAME = "facemark_manifest"
# onnx2tf downloads this MS-COCO sample from GitHub for its own output check (even for float32)
# unless a file of this name is in its working directory; we write one made of our real crops.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def run_onnx2tf(onnx_path: Path, out_dir: Path, extra_args: list[str], calibration: np.ndarray,
                timeout: float | None = None) -> dict[str, Path]:
    """Convert a copy of `onnx_path` with onnx2tf in a subprocess -> {kind: out_dir/model_<kind>.tflite}.

    kind is onnx2tf's file suffix: "float32", "float16", and with quantisation arguments
    "dynamic_range_quant", "integer_quant", "full_integer_quant", ... , and "saved_model" (the folder
    onnx2tf converted from, when it wrote one). `calibration`: (N, H, W, 3)
    real RGB images, uint8 0-255 or float 0-1; 20 of them, resized to 128 px, become onnx2tf's
    sample file (it would otherwise fetch one from GitHub). `extra_args` are passed verbatim
    (e.g. ["-oiqt", "-cind", "input", "calib.npy", "[[[[0.485,0.456,0.406]]]]", "[[[[0.229,...]]]]"]);
    relative paths in them resolve against the caller's working directory, not onnx2tf's.
    Raises RuntimeError with the tail of onnx2tf's log when it fails.
    """
    onnx_path, out_dir = Path(onnx_path).resolve(), Path(out_dir)
    extra_args = [str(Path(a).resolve()) if a.endswith(".npy") else a for a in extra_args]
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facemark-onnx2tf-") as work:
        work_dir = Path(work)
        # onnx2tf rewrites its input ONNX in place: it only ever sees a copy
        shutil.copyfile(onnx_path, work_dir / "model.onnx")
        np.save(work_dir / ONNX2TF_SAMPLE, _sample_images(calibration))
        command = [sys.executable, "-m", "onnx2tf", "-i", "model.onnx", "-o", "tf_out", "-n",
                   *_batch_args(work_dir / "model.onnx", extra_args), *extra_args]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        log_path = out_dir / "onnx2tf.log"
        with open(log_path, "w") as log:
            log.write(" ".join(command) + "\n")
            log.flush()
            done = run_child(command, cwd=work_dir, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout)
        written = sorted((work_dir / "tf_out").glob("model_*.tflite"))
        if done.returncode != 0 or not written:
            tail = " | ".join(log_path.read_text().strip().splitlines()[-3:])[-400:]
            raise RuntimeError(f"onnx2tf failed (exit {done.returncode}, log {log_path}): {tail}")
        results = {}
        for path in written:
            results[path.stem.removeprefix("model_")] = Path(shutil.move(str(path), out_dir / path.name))
        if (work_dir / "tf_out" / "saved_model.pb").is_file():
            # kept for LiteRT's QuantizationDebugger (quantize --explain, mixed precision)
            shutil.rmtree(out_dir / "saved_model", ignore_errors=True)
            results["saved_model"] = Path(shutil.move(str(work_dir / "tf_out"), out_dir / "saved_model"))
    return results


def _sample_images(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 or 0-1 float -> (20, 128, 128, 3) float32 0-1, cycling if N < 20."""
    import cv2

    if images is None or len(images) == 0:
        raise ValueError("run_onnx2tf needs real calibration images (N, H, W, 3); got none")
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    picked = [images[i % len(images)].astype(np.float32) / scale for i in range(20)]
    return np.stack([cv2.resize(im, (128, 128), interpolation=cv2.INTER_AREA) for im in picked]).astype(np.float32)


def _batch_args(onnx_path: Path, extra_args: list[str]) -> list[str]:
    """`-ois input:1,C,H,W` for a dynamic-batch ONNX (onnx2tf's `-b 1` fails on those)."""
    import onnx

    if "-ois" in extra_args or "--overwrite_input_shape" in extra_args:
        return []
    graph_input = onnx.load(str(onnx_path), load_external_data=False).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    if dims and dims[0].dim_param and all(d.dim_value > 0 for d in dims[1:]):
        return ["-ois", f"{graph_input.name}:1," + ",".join(str(d.dim_value) for d in dims[1:])]
    return []


def tflite_io(tflite_path: Path, size: int, norm: Normalisation) -> dict[str, Any]:
    """Input/output names, shapes and dtypes as LiteRT sees them (through its Runner)."""
    io = create_runner("tflite", tflite_path, Feed("NHWC"), size, norm).io()
    return {"input_name": io["input"]["name"], "input_shape": io["input"]["shape"],
            "input_dtype": io["input"]["dtype"], "output_name": io["output"]["name"],
            "output_shape": io["output"]["shape"]}


def embed_tflite_metadata(tflite_path: Path, payload: dict[str, Any]) -> None:
    """Add (or replace) the `facemark_manifest` entry of the flatbuffer's metadata table, in place."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(payload, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _text(m.name) != METADATA_NAME]
    model.metadata = kept + [entry]
    flatbuffer_utils.write_model(model, str(tflite_path))


def read_tflite_metadata(tflite_path: Path) -> dict[str, Any] | None:
    """The embedded `facemark_manifest` JSON of a .tflite file, or None if it has none."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(tflite_path))
    for entry in model.metadata or []:
        if _text(entry.name) == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    return None


def _text(value: str | bytes | None) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def convert(job: ExportJob) -> list[RowResult]:
    """Entry point: one onnx2tf run per variant (plain, baked) gives both precisions; the runs are
    separate processes, so they overlap."""
    from concurrent.futures import ThreadPoolExecutor

    sources = {}
    for baked in job.variants:
        # onnx2tf turns an NCHW ONNX input into NHWC itself, so the baked ONNX it reads is NCHW uint8
        module = BakedPreprocessing(job.model, job.size, "NCHW", job.norm).eval() if baked else job.model
        tag = "baked" if baked else "plain"
        sources[baked] = export_onnx(module, job.work_dir / f"tflite_{tag}.onnx", job.size, job.cfg.export.opset,
                                     input_dtype=torch.uint8 if baked else torch.float32)
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        runs = {baked: pool.submit(run_onnx2tf, path, path.with_suffix(""), [], job.crops)
                for baked, path in sources.items()}
        files = {baked: run.result() for baked, run in runs.items()}
    return [attempt(float_artifact("tflite", precision, baked),
                    lambda baked=baked, precision=precision: _finish(job, files[baked][precision], precision, baked))
            for baked in job.variants for precision in BACKENDS["tflite"].float_precisions]


def _finish(job: ExportJob, source: Path, precision: str, baked: bool) -> RowResult:
    """Copy onnx2tf's file under a temporary name, embed metadata, check parity, then rename."""
    row = float_artifact("tflite", precision, baked)
    name, file = row.name, row.file
    facts = io_facts("tflite", precision, baked, job.size, job.contract.scheme.num_points, "NHWC",
                     "uint8" if baked else "float32")
    facts["embedded"] = f"Model.metadata entry {METADATA_NAME!r}: buffer of UTF-8 JSON (contract)"
    with atomic_path(job.export_dir / file) as tmp:
        shutil.copyfile(source, tmp)
        seen = tflite_io(tmp, job.size, job.norm)
        expected_shape = facts["input"]["shape"]
        if seen["input_shape"] != expected_shape or seen["input_dtype"] != facts["input_dtype"]:
            raise RuntimeError(f"{name}: onnx2tf produced input {seen['input_shape']} {seen['input_dtype']}, "
                               f"expected {expected_shape} {facts['input_dtype']}")
        facts["input"]["name"], facts["output"]["name"] = seen["input_name"], seen["output_name"]
        embed_tflite_metadata(tmp, contract_payload(job.contract, facts))
        actual = create_runner("tflite", tmp, Feed("NHWC", baked), job.size, job.norm).predict(job.crops)
        expected = TorchRunner(job.model, job.size, job.norm).predict(job.crops)
        facts["parity"] = check_parity(name, actual, expected, precision, job.size, job.ipd_px, job.crop_split)
    facts["status"] = Status.VERIFIED
    return written(row, facts)
