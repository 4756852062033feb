"""The runtime layer: one Runner per backend (PyTorch eager, onnxruntime, LiteRT, CoreML), the only
code in facemark that invokes a model or an artifact. Convert's parity checks, quantize's checks,
`facemark validate` and `facemark predict` all go through these classes (in-process, or in a child
process through facemark.runtime.harness).

Every runner takes the same evaluation crops, (N, S, S, 3) uint8 RGB, and returns landmarks as
(N, P, 2) normalised crop coordinates (codec.py), whatever the artifact's own contract is:
- float artifacts take float32 normalised with the manifest's input.mean/std (crops.to_input) in their layout
  (NCHW for ONNX/CoreML from PyTorch, NHWC for TFLite from onnx2tf);
- integer-I/O artifacts (TFLite full-integer) take that input quantised with the input tensor's
  own (scale, zero_point), and their output is dequantised with the output tensor's;
- baked-preprocessing artifacts take the uint8 NHWC crop as it is and return crop pixels, which
  are normalised here so every row is compared in the same space.

A runner separates `prepare` (preprocessing, timed once for the report) from `invoke` (the model
call, the only thing the latency figures time). Runtimes are imported inside their runner so this
module loads without them (the harness child imports only the one it needs). `io()` describes the
artifact's input/output tensors (dtype, quantisation), for the manifest.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import platform
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from facemark import codec
from facemark.data.crops import to_input
from facemark.errors import ArtifactError
from facemark.weights import Normalisation



@functools.cache
def eval_batch() -> int:
    """validate.batch of configs/base.yaml: faces per call of the accuracy passes."""
    from facemark.config import base_value

    return base_value("validate.batch")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Runner:
    """Base class. Subclasses set `runtime`, implement `invoke` and `settings`; the crop -> input
    -> landmarks conversions live here so every backend applies the same contract."""

    runtime = "base"

    def __init__(self, path: Path, entry: dict[str, Any], size: int, norm: Normalisation, threads: int) -> None:
        self.path = Path(path)
        self.entry = entry
        self.size = size
        self.norm = norm
        self.threads = threads
        self.layout = entry.get("layout", "NCHW")
        self.baked = bool(entry.get("baked_preprocessing", False))
        self.dynamic_batch = False   # set by subclasses that accept any batch size
        self.batch = eval_batch()    # faces per call when dynamic_batch

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB -> the artifact's input tensor (float32 or uint8, its layout)."""
        if self.baked:   # raw RGB 0-255, in the graph's layout
            return np.ascontiguousarray(crops if self.layout == "NHWC" else crops.transpose(0, 3, 1, 2))
        return to_input(crops, self.norm, self.layout)

    def invoke(self, inputs: np.ndarray) -> np.ndarray:
        """The model call only: prepared input -> raw float output (N, ...)."""
        raise NotImplementedError

    def decode(self, raw: np.ndarray) -> np.ndarray:
        """Raw output -> (N, P, 2) normalised crop coordinates (baked artifacts return crop pixels)."""
        points = np.asarray(raw, dtype=np.float64).reshape(raw.shape[0], -1, 2)
        return codec.normalise(points, self.size) if self.baked else points

    def raw_outputs(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, 2P) float32 in the artifact's own output space (crop pixels
        when baked, else normalised); batched when the artifact allows it."""
        batch = self.batch if self.dynamic_batch else 1
        outputs = [np.asarray(self.invoke(self.prepare(np.asarray(crops[i:i + batch]))), dtype=np.float32)
                   .reshape(len(crops[i:i + batch]), -1) for i in range(0, len(crops), batch)]
        return np.concatenate(outputs)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, P, 2) float32 normalised crop coordinates."""
        return self.decode(self.raw_outputs(crops)).astype(np.float32)

    def latency(self, crop: np.ndarray, warmup: int, runs: int) -> np.ndarray:
        """Batch-1 model time in ms of `runs` calls after `warmup` untimed ones; crop (S, S, 3)."""
        return self.latency_calls(crop[None], warmup, runs)[:, 0]

    def latency_calls(self, crops: np.ndarray, warmup: int, runs: int) -> np.ndarray:
        """(runs, K) batch-1 model times in ms: each run calls the model on the K crops
        ((K, S, S, 3), e.g. refine.Refinement.latency_crops) in order, each call timed; `warmup`
        untimed runs first. The one timing loop of facemark: a backend changes only what runs
        around it (timing_session) and what one timed call is (timed_inputs, timed_call)."""
        with self.timing_session():
            inputs = self.timed_inputs(crops)
            for _ in range(warmup):
                for item in inputs:
                    self.timed_call(item)
            times = np.empty((runs, len(inputs)))
            for i in range(runs):
                for k, item in enumerate(inputs):
                    start = time.perf_counter_ns()
                    self.timed_call(item)
                    times[i, k] = (time.perf_counter_ns() - start) / 1e6
        return times

    def timing_session(self) -> contextlib.AbstractContextManager:
        """What holds around a timing loop (nothing here; PyTorch: its threads, inference mode)."""
        return contextlib.nullcontext()

    def timed_inputs(self, crops: np.ndarray) -> list[Any]:
        """(K, S, S, 3) crops -> the K batch-1 inputs a timed call takes (prepared outside the timing)."""
        return [self.prepare(crop[None]) for crop in crops]

    def timed_call(self, item: Any) -> None:
        """One timed model call, to its completion."""
        self.invoke(item)

    def settings(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "threads": self.threads}

    def io(self) -> dict[str, Any]:
        """Input/output tensor facts as the runtime sees them; backends with more to say override it."""
        return {}

    def shapes(self) -> tuple[list, list] | None:
        """(input shape, output shape) as the artifact declares them (a dynamic dimension is not an
        int), or None where the runtime does not say (Core ML)."""
        return None

    def check_shapes(self, values: int | None) -> None:
        """The artifact's own tensors against the contract it is run under: S x S crops in its
        layout, and `values` (2P, the manifest's scheme) outputs when given. A manifest that claims
        another size or scheme than its artifact fails here, before a crop is cut."""
        shapes = self.shapes()
        if shapes is None:
            return
        inputs, outputs = shapes
        spatial = inputs[2:4] if self.layout == "NCHW" else inputs[1:3]
        if any(isinstance(side, int) and side != self.size for side in spatial):
            raise ArtifactError(f"{self.path}: the artifact takes {inputs} ({self.layout}) inputs, its manifest "
                                f"says input.size {self.size}")
        found = int(np.prod([d for d in outputs[1:] if isinstance(d, int)])) if len(outputs) > 1 else None
        if values is not None and found is not None and found != values:
            raise ArtifactError(f"{self.path}: the artifact returns {found} values per face, its manifest's scheme "
                                f"has {values // 2} points ({values} values)")


class TorchRunner(Runner):
    """PyTorch eager: the reference every artifact is compared to, and the one way facemark runs a
    PyTorch model on crops (training's validation, eval, validate, predict, the peers)."""

    runtime = "pytorch"

    def __init__(self, model, size: int, norm: Normalisation | None = None, threads: int | None = None,
                 device=None, batch: int | None = None, amp: bool = False) -> None:
        """`model`: any nn.Module mapping (N, 3, S, S) normalised float32 to (N, 2P) normalised crop
        units, put in eval mode here. `norm` None: its weights source's (facemark.model.weights_source);
        `threads` None keeps torch's current thread count; `device` None: where its parameters are;
        `batch`: faces per call in predict (None: validate.batch); `amp`: float16 autocast (validation during CUDA training)."""
        import torch

        if norm is None:
            from facemark.model import weights_source

            norm = weights_source(model).norm
        threads = torch.get_num_threads() if threads is None else threads
        super().__init__(Path("best.pt"), {"layout": "NCHW"}, size, norm, threads)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        self.model.eval()   # not chained: an exported QAT graph's eval() (torchao's) returns None
        self.dynamic_batch, self.batch, self.amp = True, batch or self.batch, amp

    def invoke(self, inputs: np.ndarray) -> np.ndarray:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                return self.model(torch.from_numpy(inputs).to(self.device)).float().cpu().numpy()
        finally:
            torch.set_num_threads(previous)

    @contextlib.contextmanager
    def timing_session(self):
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)   # once around the loop, not inside the timed call
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(previous)

    def timed_inputs(self, crops: np.ndarray) -> list[Any]:
        import torch

        return [torch.from_numpy(self.prepare(crop[None])).to(self.device) for crop in crops]

    def timed_call(self, item: Any) -> None:
        import torch

        self.model(item)
        if self.device.type == "cuda":   # CUDA launches are asynchronous: time to completion, not return
            torch.cuda.synchronize()

    def settings(self) -> dict[str, Any]:
        return {"runtime": "pytorch", "version": _version("torch"), "delegate": "eager CPU",
                "threads": self.threads}


class OnnxRunner(Runner):
    """onnxruntime, CPUExecutionProvider, intra-op threads fixed, one inter-op thread."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, entry: dict[str, Any], size: int, norm: Normalisation, threads: int) -> None:
        import onnxruntime as ort

        super().__init__(path, entry, size, norm, threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:   # onnxruntime raises its own exception types for bad graphs
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        node = self.session.get_inputs()[0]
        self.input_name = node.name
        self.dynamic_batch = not isinstance(node.shape[0], int)

    def invoke(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]

    def shapes(self) -> tuple[list, list]:
        return list(self.session.get_inputs()[0].shape), list(self.session.get_outputs()[0].shape)

    def settings(self) -> dict[str, Any]:
        return {"runtime": "onnxruntime", "version": _version("onnxruntime"),
                "delegate": "CPUExecutionProvider", "threads": self.threads, "inter_op_threads": 1}


class LiteRTRunner(Runner):
    """LiteRT (ai_edge_litert) interpreter; XNNPACK is its default CPU delegate. NHWC input."""

    runtime = "litert"

    def __init__(self, path: Path, entry: dict[str, Any], size: int, norm: Normalisation, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(path, {**entry, "layout": "NHWC"}, size, norm, threads)
        self._new_interpreter = lambda: Interpreter(model_path=str(path), num_threads=threads)
        try:
            self.interpreter = self._new_interpreter()
            self.interpreter.allocate_tensors()
        except Exception as exc:   # LiteRT raises ValueError/RuntimeError for bad flatbuffers
            raise ArtifactError(f"{path}: LiteRT cannot load it ({str(exc).splitlines()[0][:200]})") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.dynamic_batch = int(self.input["shape_signature"][0]) == -1
        self.batch = int(self.input["shape"][0])   # faces per call: the converted batch
        # a LiteRT interpreter is not safe to share: two threads invoking one fail with "There is at
        # least 1 reference to internal data" or read each other's output; each calling thread gets
        # its own (the first is this one's), so one runner serves a thread pool in parallel
        self._local = threading.local()
        self._local.interpreter, self._local.batch = self.interpreter, self.batch

    def _thread_interpreter(self) -> threading.local:
        """This thread's interpreter and its current batch size (created on the thread's first call)."""
        state = self._local
        if not hasattr(state, "interpreter"):
            state.interpreter = self._new_interpreter()
            state.interpreter.allocate_tensors()
            state.batch = self.batch
        return state

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        inputs = super().prepare(crops)
        dtype = self.input["dtype"]
        if inputs.dtype == dtype:
            return inputs
        scale, zero_point = self.input["quantization"]
        if np.issubdtype(dtype, np.integer) and scale > 0 and not self.baked:
            # full-integer input: q = round(x / scale) + zero_point, as the converter calibrated it
            info = np.iinfo(dtype)
            return np.clip(np.round(inputs / scale) + zero_point, info.min, info.max).astype(dtype)
        return inputs.astype(dtype)

    def invoke(self, inputs: np.ndarray) -> np.ndarray:
        state = self._thread_interpreter()
        interpreter = state.interpreter
        if inputs.shape[0] != state.batch:
            interpreter.resize_tensor_input(self.input["index"], list(inputs.shape))
            interpreter.allocate_tensors()
            state.batch = inputs.shape[0]
        interpreter.set_tensor(self.input["index"], inputs)
        interpreter.invoke()
        raw = interpreter.get_tensor(self.output["index"])   # a copy: safe after the next invoke
        scale, zero_point = self.output["quantization"]
        if np.issubdtype(raw.dtype, np.integer) and scale > 0:
            return (raw.astype(np.float32) - zero_point) * scale
        return raw

    def shapes(self) -> tuple[list, list]:
        return [int(d) for d in self.input["shape"]], [int(d) for d in self.output["shape"]]

    def settings(self) -> dict[str, Any]:
        return {"runtime": "litert", "version": _version("ai-edge-litert"),
                "delegate": "XNNPACK (LiteRT default CPU delegate)", "threads": self.threads,
                "input_dtype": np.dtype(self.input["dtype"]).name,
                "output_dtype": np.dtype(self.output["dtype"]).name}

    def io(self) -> dict[str, Any]:
        """{"input", "output": {name, shape, dtype, scale, zero_point}, "output_step_scale"}: the
        scale of the integer tensor the landmark output comes from (the output itself, or the input
        of the final DEQUANTIZE), or None when the output is computed in float."""
        def tensor(detail: dict[str, Any]) -> dict[str, Any]:
            scale, zero_point = detail["quantization"]
            return {"name": detail["name"], "shape": [int(v) for v in detail["shape"]],
                    "dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}

        return {"input": tensor(self.input), "output": tensor(self.output),
                "output_step_scale": self._output_step_scale()}

    def _output_step_scale(self) -> float | None:
        integer = (np.int8, np.uint8, np.int16)
        if self.output["dtype"] in integer:
            return float(self.output["quantization"][0])
        for op in self.interpreter._get_ops_details():   # the public API lists tensors, not who writes them
            if self.output["index"] in list(op["outputs"]) and op["op_name"] == "DEQUANTIZE":
                source = self.interpreter._get_tensor_details(int(op["inputs"][0]), 0)
                if source["dtype"] in integer:
                    return float(source["quantization"][0])
        return None


class CoreMLRunner(Runner):
    """coremltools' MLModel.predict on the CPU; Core ML runs only on macOS (see `needs_macos`).

    An image-typed input (the baked-preprocessing package) takes a PIL image of the crop; a
    tensor input takes the prepared array. Core ML predicts one input at a time here.
    """

    runtime = "coreml"

    def __init__(self, path: Path, entry: dict[str, Any], size: int, norm: Normalisation, threads: int) -> None:
        import coremltools as ct

        super().__init__(path, entry, size, norm, threads)
        # CPU_ONLY: comparable with the other CPU rows; the Neural Engine is a question for the phone
        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_name = spec.description.output[0].name
        self.image_input = spec.description.input[0].type.WhichOneof("Type") == "imageType"

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(crops) if self.image_input else super().prepare(crops)

    def invoke(self, inputs: np.ndarray) -> np.ndarray:
        from PIL import Image

        outputs = []
        for i in range(inputs.shape[0]):
            value = Image.fromarray(inputs[i]) if self.image_input else inputs[i:i + 1]
            outputs.append(np.asarray(self.model.predict({self.input_name: value})[self.output_name],
                                      dtype=np.float32).reshape(1, -1))
        return np.concatenate(outputs)

    def settings(self) -> dict[str, Any]:
        return {"runtime": "coreml", "version": _version("coremltools"), "delegate": "CPU_ONLY",
                "threads": "n/a (Core ML schedules its own)"}


RUNNERS: dict[str, type[Runner]] = {"onnx": OnnxRunner, "tflite": LiteRTRunner, "coreml": CoreMLRunner}


def needs_macos(fmt: str) -> bool:
    """True when `fmt` cannot run on this machine because Core ML exists only on macOS."""
    return fmt == "coreml" and platform.system() != "Darwin"


def create_runner(fmt: str, path: Path, entry: dict[str, Any], size: int, norm: Normalisation,
                  threads: int = 1, values: int | None = None) -> Runner:
    """The runner for an artifact format (float inputs normalised with `norm`, the manifest's),
    its tensors checked against S = `size` and, when given, `values` = 2P outputs (check_shapes);
    an unknown format raises ArtifactError listing the known."""
    if fmt not in RUNNERS:
        raise ArtifactError(f"{path}: no runner for format {fmt!r}; known: {', '.join(sorted(RUNNERS))}")
    runner = RUNNERS[fmt](path, entry, size, norm, threads)
    runner.check_shapes(values)
    return runner
