"""LiteRT (ai_edge_litert) runner for TFLite artifacts: float, float16 and full-integer I/O, one
interpreter per calling thread (the contract: facemark.runtime.runner)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from facemark.errors import ArtifactError
from facemark.runtime.runner import Feed, Runner, package_version
from facemark.weights import Normalisation


class LiteRTRunner(Runner):
    """LiteRT (ai_edge_litert) interpreter; XNNPACK is its default CPU delegate. NHWC input."""

    runtime = "litert"

    def __init__(self, path: Path, feed: Feed, size: int, norm: Normalisation, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(path, Feed("NHWC", feed.baked), size, norm, threads)
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
        return {"runtime": "litert", "version": package_version("ai-edge-litert"),
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
