"""Run a .tflite file in LiteRT in a child process: `python -m facemark.quantize.litert_child MODEL
INPUTS.npy OUT_DIR`.

Why a child: some int8 kernels abort the whole interpreter process instead of raising (measured:
MobileViT's int16-activation file aborts on allocate_tensors), and a quantisation run must turn
that into a failed row, not die. The parent (tflite_int8.run_litert) reads what the child wrote.

Input: (N, S, S, 3) float32 NHWC normalised crops. Writes OUT_DIR/outputs.npy, (N, 2P) float32
normalised crop units (dequantised when the output tensor is int8/uint8), and OUT_DIR/io.json:
input/output dtypes and quantisation (scale, zero point), and `output_step_scale`, the scale of
the int8 tensor that becomes the output (the output itself, or the input of the final DEQUANTIZE)
or null when the output is computed in float.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

INTEGER_TYPES = (np.int8, np.uint8, np.int16)


def _quantization(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {"dtype": np.dtype(detail["dtype"]).name, "scale": float(scale), "zero_point": int(zero_point)}


def _output_step_scale(interpreter, output: dict) -> float | None:
    """Scale of the integer tensor the output comes from, or None if it is computed in float."""
    if output["dtype"] in INTEGER_TYPES:
        return float(output["quantization"][0])
    for op in interpreter._get_ops_details():  # the public API lists tensors, not who writes them
        if output["index"] in list(op["outputs"]) and op["op_name"] == "DEQUANTIZE":
            source = interpreter._get_tensor_details(int(op["inputs"][0]), 0)
            if source["dtype"] in INTEGER_TYPES:
                return float(source["quantization"][0])
    return None


def run(model_path: Path, inputs: np.ndarray) -> tuple[np.ndarray, dict]:
    """LiteRT on each (1, S, S, 3) input -> ((N, 2P) float32 outputs, io description)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_q, out_q = _quantization(source), _quantization(target)
    outputs = []
    for i in range(len(inputs)):
        x = inputs[i:i + 1]
        if source["dtype"] in INTEGER_TYPES:
            info = np.iinfo(source["dtype"])
            x = np.clip(np.round(x / in_q["scale"]) + in_q["zero_point"], info.min, info.max)
        interpreter.set_tensor(source["index"], x.astype(source["dtype"]))
        interpreter.invoke()
        y = interpreter.get_tensor(target["index"]).reshape(1, -1)
        if target["dtype"] in INTEGER_TYPES:
            y = (y.astype(np.float32) - out_q["zero_point"]) * out_q["scale"]
        outputs.append(y.astype(np.float32))
    io = {"input": {**in_q, "name": source["name"], "shape": [int(v) for v in source["shape"]]},
          "output": {**out_q, "name": target["name"], "shape": [int(v) for v in target["shape"]]},
          "output_step_scale": _output_step_scale(interpreter, target)}
    return np.concatenate(outputs), io


def main(argv: list[str]) -> int:
    model_path, inputs_path, out_dir = Path(argv[0]), Path(argv[1]), Path(argv[2])
    outputs, io = run(model_path, np.load(inputs_path))
    np.save(out_dir / "outputs.npy", outputs)
    (out_dir / "io.json").write_text(json.dumps(io))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
