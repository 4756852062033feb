"""Per-layer int8 sensitivity: how much error each layer's quantisation adds, top offenders first.

ONNX: onnxruntime's qdq_loss_debug. The float (pre-processed) model and its plain QDQ model are
run on the same calibration inputs with every intermediate tensor as an output; for each tensor
`sqnr_db` is the signal-to-quantisation-noise ratio of its own QuantizeLinear/DequantizeLinear
pair (the error quantising that tensor adds, in dB: higher is better, 20 dB = noise at a tenth
of the signal's amplitude) and `xmodel_sqnr_db` the ratio of the float model's tensor to the
int8 model's (the error accumulated up to that layer).

TFLite: LiteRT's QuantizationDebugger on the saved model onnx2tf writes, the same calibration
inputs: per quantised op, its int8 output against the float op fed the same (dequantised) input,
as an SQNR (`sqnr_db`, so both formats rank alike) and as the RMSE in units of the tensor's int8
step (`rmse_steps`: ~0.29 is pure rounding).

Each row also carries the layer's multiply-adds (`macs`, batch 1): a layer left in float costs
its MACs of the int8 budget (quantize.mixed_min_int8_macs).
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# onnx ops whose multiply-adds are counted (the rest are element-wise or data movement)
MAC_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
# the report lists this many offenders in the markdown and the plot (the JSON keeps every layer)
TOP_LISTED = 15
# SQNR of a tensor that is exactly reproduced (no noise): reported as this, not infinity
EXACT_DB = 99.0
# channels with less than this fraction of the strongest channel's power (amplitude 1/30000) are left out of the
# per-channel SQNR (measured: near-empty squeeze-excite channels gave -700 dB otherwise)
CHANNEL_FLOOR = 1e-9


def sqnr_db(reference: np.ndarray, actual: np.ndarray, channel_axis: int | None = None) -> float:
    """10 log10(signal power / noise power) of `actual` against `reference`, in dB (EXACT_DB when
    the noise is zero). With `channel_axis`, each channel's noise is taken relative to its own
    signal and the ratios averaged (in linear units, so one ruined channel is not hidden by good
    ones): one activation scale shared by channels of very different ranges rounds the small
    channels to nothing, which the whole-tensor figure (dominated by the large channels) misses."""
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    if channel_axis is not None and reference.ndim > 1:
        axes = tuple(i for i in range(reference.ndim) if i != channel_axis % reference.ndim)
        signal, noise = np.sum(reference ** 2, axis=axes), np.sum((reference - actual) ** 2, axis=axes)
        # a channel (nearly) zero in float has no scale to be ruined by: its ratio would be noise / 0
        live = signal > CHANNEL_FLOOR * signal.max()
        # each channel's noise/signal capped at 1 (0 dB: the channel is gone; worse says no more),
        # so a channel of one tiny value (a squeeze-excite gate of one image) cannot swamp the mean
        ratio = float(np.mean(np.minimum(noise[live] / signal[live], 1.0))) if live.any() else float(np.sum(noise) > 0)
        return _db(1.0, ratio)
    return _db(float(np.sum(reference ** 2)), float(np.sum((reference - actual) ** 2)))


def _db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return EXACT_DB
    if signal == 0.0:
        return 0.0
    return round(max(-EXACT_DB, min(EXACT_DB, 10.0 * math.log10(signal / noise))), 3)


# ---------------------------------------------------------------- ONNX

def onnx_macs(onnx_path: Path) -> dict[str, int]:
    """{node name: multiply-adds for one (1, 3, S, S) input} of the Conv/Gemm/MatMul nodes of a
    float or QDQ ONNX model (shapes from onnx shape inference; weight shapes from the initializers
    or, in a QDQ model, from the DequantizeLinear that feeds them)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    producers = {out: node for node in model.graph.node for out in node.output}
    macs = {}
    for node in model.graph.node:
        if node.op_type not in MAC_OPS:
            continue
        weight = _weight_shape(node.input[1], shapes, producers)
        out = shapes.get(node.output[0])
        if weight is None or out is None:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):  # out (N, Cout, H, W), weight (Cout, Cin/g, kh, kw)
            macs[node.name] = int(np.prod(out) * np.prod(weight[1:]))
        else:                                             # out (N, M), weight (K, M) or (M, K)
            macs[node.name] = int(np.prod(out) * (np.prod(weight) // max(out[-1], 1)))
    return macs


def _weight_shape(name: str, shapes: dict[str, list[int]], producers: dict[str, Any]) -> list[int] | None:
    if name in shapes:
        return shapes[name]
    node = producers.get(name)   # a QDQ model: weight -> DequantizeLinear -> Conv
    if node is not None and node.op_type == "DequantizeLinear":
        return shapes.get(node.input[0])
    return None


def onnx_int8_nodes(qdq_path: Path) -> set[str]:
    """Names of the MAC nodes of a QDQ model that run in int8: both activation and weight inputs
    come from a DequantizeLinear and the output goes to QuantizeLinear nodes only, directly or
    through one Relu/Clip (onnxruntime fuses DQ -> op [-> Relu/Clip] -> Q into the integer kernel;
    without the Q it runs the op in float on dequantised inputs)."""
    import onnx

    model = onnx.load(str(qdq_path))
    users: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    dequantized = {out for node in model.graph.node if node.op_type == "DequantizeLinear" for out in node.output}

    def requantized(tensor: str, hops: int = 1) -> bool:
        readers = users.get(tensor, [])
        if len(readers) == 1 and readers[0].op_type in ("Relu", "Clip") and hops:
            return requantized(readers[0].output[0], hops - 1)
        return bool(readers) and all(r.op_type == "QuantizeLinear" for r in readers)

    return {node.name for node in model.graph.node
            if node.op_type in MAC_OPS and node.input[0] in dequantized and node.input[1] in dequantized
            and requantized(node.output[0])}


def onnx_layer_errors(float_path: Path, qdq_path: Path, inputs: np.ndarray) -> list[dict[str, Any]]:
    """Per-layer errors of `qdq_path` (quantised from `float_path`, same tensor names) on (N, 3, S, S)
    float32 inputs -> rows {layer, op, tensor, sqnr_db, xmodel_sqnr_db, macs}, worst first.

    A layer is the float graph node producing a quantised tensor (its name is what
    nodes_to_exclude takes). sqnr_db: the float model's tensor against the same tensor passed
    through the QDQ model's own scale and zero point (range clipping plus rounding, nothing
    upstream), averaged over channels; xmodel_sqnr_db: the float tensor against the int8 model's (qdq_loss_debug's
    cross-model figure: everything upstream too). The local figure is computed here rather than
    with qdq_loss_debug's pre/post pair because onnxruntime folds Relu/Clip into the range, so
    its "pre" tensor is the unclipped one and every clipped activation would look broken."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         create_activation_matching,
                                                         modify_model_output_intermediate_tensors)

    feeds = [{"input": inputs[i:i + 1]} for i in range(len(inputs))]
    with tempfile.TemporaryDirectory(prefix="facemark-explain-") as work:
        activations = {}
        for tag, path in (("float", float_path), ("qdq", qdq_path)):
            augmented = Path(work) / f"{tag}_augmented.onnx"
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            activations[tag] = collect_activations(str(augmented), feeds)
    shapes = tensor_shapes(float_path)
    stacked = {name: np.stack([a.reshape(shapes[name]) for a in arrays]) if name in shapes else
               np.concatenate([a.ravel() for a in arrays]) for name, arrays in activations["float"].items()}
    accumulated = compute_activation_error(create_activation_matching(activations["qdq"], activations["float"]),
                                           err_func=lambda ref, act: sqnr_db(np.concatenate([a.ravel() for a in ref]),
                                                                              np.concatenate([a.ravel() for a in act])))
    ranges = activation_ranges(qdq_path)
    macs = onnx_macs(float_path)
    nodes = list(onnx.load(str(float_path)).graph.node)
    consumers = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    cross = {name: err["xmodel_err"] for name, err in accumulated.items() if err.get("xmodel_err") is not None}
    clean = max(cross.values(), default=EXACT_DB)   # what an input with no int8 history is credited with
    rows = []
    for node in nodes:
        tensor = node.output[0]
        if tensor not in ranges or tensor not in stacked:
            continue
        values = stacked[tensor]   # (N, 1, C, ...) when the shape is known: channels on axis 2
        rows.append({"layer": node.name, "op": node.op_type, "tensor": tensor,
                     "sqnr_db": sqnr_db(values, fake_quant(values, *ranges[tensor]), 2 if values.ndim > 2 else None),
                     "xmodel_sqnr_db": cross.get(tensor), "macs": macs.get(node.name, 0),
                     "damage_db": _damage(node, tensor, cross, clean),
                     **keep_float(node.name, consumers.get(tensor, []), macs)})
    return rank(rows)


def _damage(node, tensor: str, cross: dict[str, float], clean: float) -> float | None:
    """How many dB of accumulated SQNR the node loses: its worst input's figure minus its output's
    (weight rounding and every int8 step inside the node show here, not only the output range)."""
    if tensor not in cross:
        return None
    inputs = [cross.get(name, clean) for name in node.input if name]
    return round(min(inputs, default=clean) - cross[tensor], 3)


def recovery_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order recovery keeps layers in float: largest accumulated-SQNR loss first (damage_db),
    the own-SQNR ranking for rows without one (TFLite)."""
    if any(r.get("damage_db") is not None for r in rows):
        return sorted(rows, key=lambda r: -(r.get("damage_db") or 0.0))
    return rows


def keep_float(producer: str, consumers: list[str], macs: dict[str, int]) -> dict[str, Any]:
    """What keeping one activation in float takes: its producer and every consumer out of int8 (an
    int8 consumer would quantise it again on its way in) -> {"exclude": names, "exclude_macs"}."""
    names = list(dict.fromkeys([producer, *consumers]))
    return {"exclude": names, "exclude_macs": int(sum(macs.get(n, 0) for n in names))}


def tensor_shapes(onnx_path: Path) -> dict[str, list[int]]:
    """{tensor name: static shape} from onnx shape inference (dynamic dims as 1)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    return {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.value_info, *model.graph.output]}


def activation_ranges(qdq_path: Path) -> dict[str, tuple[float, int, int, int]]:
    """{float tensor name: (scale, zero point, qmin, qmax)} of each per-tensor QuantizeLinear of a QDQ model
    (onnxruntime renames a quantised tensor X's producer output to X_QuantizeLinear_Input)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq_path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    ranges = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[1] not in consts or consts[node.input[1]].size != 1:
            continue
        zero = consts.get(node.input[2]) if len(node.input) > 2 else None
        dtype = zero.dtype if zero is not None else np.dtype(np.uint8)
        info = np.iinfo(dtype)
        name = node.input[0].removesuffix("_QuantizeLinear_Input")
        ranges[name] = (float(consts[node.input[1]]), int(zero) if zero is not None else 0, int(info.min), int(info.max))
    return ranges


def fake_quant(values: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """Quantise then dequantise `values` with one scale and zero point (what a QDQ pair computes)."""
    return (np.clip(np.round(values / scale) + zero_point, qmin, qmax) - zero_point) * scale


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst first: lowest own SQNR, ties broken by the accumulated SQNR."""
    return sorted(rows, key=lambda r: (r["sqnr_db"], r.get("xmodel_sqnr_db") or EXACT_DB))


# ---------------------------------------------------------------- TFLite

class TfliteCalibration:
    """LiteRT's QuantizationDebugger over onnx2tf's saved model: calibrated once on the (N, S, S, 3)
    float32 normalised NHWC `inputs` (the converter's min-max ranges, or with `percentile` the
    percentile ranges over the same crops: tflite_int8.calibrated_ranges), debugged on the
    first `debug_count` of them; `layer_errors()` ranks the ops, `quantize(denylist)` writes a
    model with the named ops (output tensor names) left in float."""

    def __init__(self, saved_model: Path, inputs: np.ndarray, debug_count: int, percentile: float | None = None):
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

    def quantize(self, denylisted_nodes: list[str], io_type: str = "float32") -> bytes:
        """The int8 model with `denylisted_nodes` in float (those ops fall back to float kernels),
        from the one calibration, with `io_type` (quantize.tflite_io) input and output: the call
        LiteRT's converter makes for a full-integer model, and what
        QuantizationDebugger.get_nondebug_quantized_model does with denylisted_nodes set, without a
        new debugger (which would calibrate again) per candidate."""
        import tensorflow as tf
        from tensorflow.lite.python import convert

        dtype = {"float32": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io_type]
        return convert.mlir_quantize(self.debugger.calibrated_model, input_data_type=dtype, output_data_type=dtype,
                                     denylisted_nodes=list(denylisted_nodes) or None)

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


def int8_mac_fraction(macs: dict[str, int], int8_layers: set[str]) -> float:
    """Share of the model's multiply-adds computed in int8 (1.0 when nothing has MACs)."""
    total = sum(macs.values())
    return 1.0 if total == 0 else sum(m for name, m in macs.items() if name in int8_layers) / total


# ---------------------------------------------------------------- report

def write_explain(out_dir: Path, reports: dict[str, dict[str, Any]]) -> list[Path]:
    """Write sensitivity.json (every layer), sensitivity.md (top offenders per format) and
    sensitivity.png (bar chart of the top offenders' SQNR) into `out_dir` -> the paths. Formats
    not in `reports` keep their sections from an earlier run.
    `reports`: {format: {"artifact", "inputs", "layers": rows from *_layer_errors}}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out_dir / "sensitivity.json", out_dir / "sensitivity.md", out_dir / "sensitivity.png"
    if json_path.is_file():   # a run over one format keeps the other formats' sections
        reports = {**json.loads(json_path.read_text()).get("formats", {}), **reports}
    json_path.write_text(json.dumps({"schema": "facemark.sensitivity/1", "formats": reports}, indent=2))
    md_path.write_text(markdown(reports))
    _plot(png_path, reports)
    return [json_path, md_path, png_path]


def markdown(reports: dict[str, dict[str, Any]]) -> str:
    """The top TOP_LISTED offenders of each format as markdown tables."""
    lines = ["# int8 sensitivity (per layer, calibration crops)", "",
             "SQNR: signal-to-quantisation-noise ratio of the layer's own int8 output in dB (higher is better; "
             "below ~20 dB the layer's noise is over a tenth of its signal). Layers listed worst first; "
             "`macs`: multiply-adds the layer costs (what keeping it in float takes from the int8 share).", ""]
    for fmt, report in reports.items():
        total = sum(r["macs"] for r in report["layers"]) or 1
        lines += [f"## {fmt}: {report['artifact']} ({report['inputs']} crops, {len(report['layers'])} layers)", "",
                  "| rank | layer | op | SQNR dB | accumulated SQNR dB | MACs % |", "|---|---|---|---|---|---|"]
        for i, row in enumerate(report["layers"][:TOP_LISTED], 1):
            accumulated = row.get("xmodel_sqnr_db")
            lines.append(f"| {i} | `{row['layer']}` | {row['op']} | {row['sqnr_db']:.1f} | "
                         f"{'-' if accumulated is None else f'{accumulated:.1f}'} | {100 * row['macs'] / total:.2f} |")
        lines.append("")
    return "\n".join(lines)


def _plot(path: Path, reports: dict[str, dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(reports), 1), figsize=(7 * max(len(reports), 1), 6), squeeze=False)
    for ax, (fmt, report) in zip(axes[0], reports.items()):
        top = report["layers"][:TOP_LISTED][::-1]
        ax.barh([_short(r["layer"]) for r in top], [r["sqnr_db"] for r in top], color="tab:red")
        ax.set_xlabel("own int8 SQNR, dB (higher is better)")
        ax.set_title(f"{fmt}: worst {len(top)} layers")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]
