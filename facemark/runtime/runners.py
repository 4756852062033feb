"""The runners of PyTorch eager, onnxruntime and Core ML, and `create_runner`, which picks an
artifact's runner from its format's row of facemark.backends; LiteRT's is in litert.py, the
contract they share in runner.py."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from facemark.backends import backend
from facemark.errors import ArtifactError
from facemark.runtime.runner import Feed, Runner, package_version
from facemark.weights import Normalisation


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
        super().__init__(Path("best.pt"), Feed("NCHW"), size, norm, threads)
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
        return {"runtime": "pytorch", "version": package_version("torch"), "delegate": "eager CPU",
                "threads": self.threads}


class OnnxRunner(Runner):
    """onnxruntime, CPUExecutionProvider, intra-op threads fixed, one inter-op thread."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, feed: Feed, size: int, norm: Normalisation, threads: int) -> None:
        import onnxruntime as ort

        super().__init__(path, feed, size, norm, threads)
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
        return {"runtime": "onnxruntime", "version": package_version("onnxruntime"),
                "delegate": "CPUExecutionProvider", "threads": self.threads, "inter_op_threads": 1}


class CoreMLRunner(Runner):
    """coremltools' MLModel.predict on the CPU; Core ML runs only on macOS (its backend's `runs_here`).

    An image-typed input (the baked-preprocessing package) takes a PIL image of the crop; a
    tensor input takes the prepared array. Core ML predicts one input at a time here.
    """

    runtime = "coreml"

    def __init__(self, path: Path, feed: Feed, size: int, norm: Normalisation, threads: int) -> None:
        import coremltools as ct

        super().__init__(path, feed, size, norm, threads)
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
        return {"runtime": "coreml", "version": package_version("coremltools"), "delegate": "CPU_ONLY",
                "threads": "n/a (Core ML schedules its own)"}


def create_runner(fmt: str, path: Path, feed: Feed, size: int, norm: Normalisation,
                  threads: int = 1, values: int | None = None) -> Runner:
    """The runner for an artifact format (float inputs normalised with `norm`, the manifest's),
    its tensors checked against S = `size` and, when given, `values` = 2P outputs (check_shapes);
    an unknown format raises ArtifactError listing the known."""
    runner = backend(fmt).runner_class()(path, feed, size, norm, threads)
    runner.check_shapes(values)
    return runner
