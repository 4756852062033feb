"""The runtime layer's contract: Runner, the base of every backend's runner (runners.py, litert.py),
the only code in facemark that invokes a model or an artifact. Convert's parity checks, quantize's
checks, `facemark validate` and `facemark predict` all go through them (in-process, or in a child
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemark import codec
from facemark.contract import ArtifactEntry
from facemark.data.crops import to_input
from facemark.errors import ArtifactError
from facemark.weights import Normalisation


@functools.cache
def eval_batch() -> int:
    """validate.batch of configs/base.yaml: faces per call of the accuracy passes."""
    from facemark.config import base_value

    return base_value("validate.batch")


def package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Feed:
    """How an artifact takes its input: `layout` NCHW or NHWC, and `baked` preprocessing (uint8 RGB
    pixels in, crop pixels out) or not (float32 normalised with mean/std in, normalised crop out)."""

    layout: str = "NCHW"
    baked: bool = False

    @classmethod
    def of(cls, entry: ArtifactEntry) -> Feed:
        """The feed a manifest entry records."""
        return cls(entry.layout, entry.baked_preprocessing)


class Runner:
    """Base class. Subclasses set `runtime`, implement `invoke` and `settings`; the crop -> input
    -> landmarks conversions live here so every backend applies the same contract."""

    runtime = "base"

    def __init__(self, path: Path, feed: Feed, size: int, norm: Normalisation, threads: int) -> None:
        self.path = Path(path)
        self.size = size
        self.norm = norm
        self.threads = threads
        self.layout = feed.layout
        self.baked = feed.baked
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
