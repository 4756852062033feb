"""TFLite per-layer sensitivity with LiteRT's QuantizationDebugger.

On the saved model onnx2tf writes and the calibration inputs: per quantised op, its int8 output
against the float op fed the same (dequantised) input, as an SQNR (`sqnr_db`, so both formats rank
alike) and as the RMSE in units of the tensor's int8 step (`rmse_steps`: ~0.29 is pure rounding).
Also the flatbuffer reading (ops, consumers, multiply-adds) the int8 share is computed from.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from facemark.quantize.sensitivity import decode_tail, keep_float, rank, sqnr_db


class TfliteCalibration:
    """LiteRT's QuantizationDebugger over onnx2tf's saved model: calibrated once on the (N, S, S, 3)
    float32 normalised NHWC `inputs` (the converter's min-max ranges, or with `percentile` the
    percentile ranges over the same crops: tflite_int8.calibrated_ranges), debugged on the
    first `debug_count` of them; `layer_errors()` ranks the ops, `quantize(denylist)` writes a
    model with the named ops (output tensor names) left in float. With `float_decode`
    (quantize.float_decode) every model it writes also keeps `decode` in float: the ops after the
    last multiply-add (sensitivity.decode_tail)."""

    def __init__(self, saved_model: Path, inputs: np.ndarray, debug_count: int, percentile: float | None = None,
                 *, float_decode: bool):
        import tensorflow as tf

        def calibration():
            for i in range(len(inputs)):
                yield [inputs[i:i + 1].astype(np.float32)]

        def debug():
            for i in range(min(debug_count, len(inputs))):
                yield [inputs[i:i + 1].astype(np.float32)]

        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        # the default statistics describe only the difference, not the signal it is compared with
        options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics={"channel_sqnr": _channel_sqnr})
        self.debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug,
                                                                  debug_options=options)
        from facemark.quantize.tflite_int8 import calibrated_ranges

        self.debugger.calibrated_model = calibrated_ranges(self.debugger.calibrated_model, inputs, percentile)
        self.debugger.options = self.debugger.options   # rebuilds its debug model from these ranges
        self.decode = tflite_decode_tail(self.debugger.calibrated_model) if float_decode else []

    def quantize(self, denylisted_nodes: list[str], io_type: str = "float32") -> bytes:
        """The int8 model with `denylisted_nodes` and self.decode in float (those ops fall back to float kernels),
        from the one calibration, with `io_type` (quantize.tflite_io) input and output: the call
        LiteRT's converter makes for a full-integer model, and what
        QuantizationDebugger.get_nondebug_quantized_model does with denylisted_nodes set, without a
        new debugger (which would calibrate again) per candidate."""
        import tensorflow as tf
        from tensorflow.lite.python import convert

        dtype = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type]
        return convert.mlir_quantize(self.debugger.calibrated_model, input_data_type=dtype, output_data_type=dtype,
                                     denylisted_nodes=list(dict.fromkeys([*self.decode, *denylisted_nodes])) or None)

    def layer_errors(self) -> list[dict[str, Any]]:
        """Rows {layer (output tensor name, what denylisted_nodes takes), op, tensor, sqnr_db,
        rmse_steps, macs}, worst first."""
        self.debugger.run()
        dump = io.StringIO()
        self.debugger.layer_statistics_dump(dump)
        plain = self.quantize([])
        macs, consumers = tflite_macs(plain), tflite_consumers(plain)
        flat_macs = {name: op["macs"] for name, op in macs.items()}
        rows = []
        for stat in csv.DictReader(io.StringIO(dump.getvalue())):
            mse, scale = float(stat["mean_squared_error"]), float(stat["scale"])
            rows.append({"layer": stat["tensor_name"], "op": stat["op_name"], "tensor": stat["tensor_name"],
                         "sqnr_db": round(float(stat["channel_sqnr"]), 3), "rmse_steps": round(math.sqrt(mse) / scale, 4) if scale else None,
                         "macs": flat_macs.get(stat["tensor_name"], 0),
                         **keep_float(stat["tensor_name"], consumers.get(stat["tensor_name"], []), flat_macs)})
        return rank(rows)


def _channel_sqnr(float_values: np.ndarray, quant_values: np.ndarray, scale: float, zero_point: int) -> float:
    """LiteRT debugger metric: the float op's output (fed the int8 model's dequantised input) against
    the int8 op's dequantised output, per-channel SQNR averaged (NHWC: channels last)."""
    dequantised = (np.asarray(quant_values, np.int32) - zero_point) * scale
    return sqnr_db(float_values, dequantised, -1)


def tflite_graph(model_bytes: bytes):
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    return schema, model, model.subgraphs[0]


def op_kinds(schema, model, graph) -> list[tuple[str, Any]]:
    """(builtin op name, operator) of each op of a parsed .tflite graph (tflite_graph), in graph order."""
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    kinds = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        kinds.append((names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"), op))
    return kinds


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def tflite_consumers(model_bytes: bytes) -> dict[str, list[str]]:
    """{tensor name: output tensor names of the ops that read it} (ops are named by their first
    output tensor, as LiteRT's debugger and denylisted_nodes name them)."""
    _, _, graph = tflite_graph(model_bytes)
    consumers: dict[str, list[str]] = {}
    for op in graph.operators:
        if len(op.outputs) == 0:
            continue
        for index in op.inputs:
            if index >= 0:
                consumers.setdefault(_name(graph.tensors[index]), []).append(_name(graph.tensors[op.outputs[0]]))
    return consumers


def tflite_decode_tail(model_bytes: bytes) -> list[str]:
    """The ops (output tensor names) of a .tflite flatbuffer that no conv or fully connected op depends on
    (sensitivity.decode_tail)."""
    _, _, graph = tflite_graph(model_bytes)
    ops = [(_name(graph.tensors[op.outputs[0]]), [_name(graph.tensors[i]) for i in op.inputs if i >= 0],
            [_name(graph.tensors[i]) for i in op.outputs]) for op in graph.operators if len(op.outputs)]
    return decode_tail(ops, set(tflite_macs(model_bytes)))


def tflite_macs(model_bytes: bytes) -> dict[str, dict[str, Any]]:
    """{output tensor name: {"op", "macs", "int8"}} of the CONV_2D / DEPTHWISE_CONV_2D /
    FULLY_CONNECTED ops of a .tflite flatbuffer (batch 1); int8: the op's input is an integer tensor."""
    schema, model, graph = tflite_graph(model_bytes)
    integer = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16}
    result = {}
    for kind, op in op_kinds(schema, model, graph):
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        source, weight, out = (graph.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        out_shape, w_shape = list(out.shape), list(weight.shape)
        if kind == "CONV_2D":            # out (1, H, W, Cout), filter (Cout, kh, kw, Cin)
            macs = int(np.prod(out_shape) * np.prod(w_shape[1:]))
        elif kind == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, C): one kh x kw window per output
            macs = int(np.prod(out_shape) * w_shape[1] * w_shape[2])
        else:                              # filter (N, K)
            macs = int(np.prod(out_shape) * w_shape[-1])
        result[_name(out)] = {"op": kind, "macs": macs, "int8": source.type in integer}
    return result
