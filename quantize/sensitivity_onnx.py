"""ONNX per-layer sensitivity with onnxruntime's qdq_loss_debug.

The float (pre-processed) model and its plain QDQ model are run on the same calibration inputs
with every intermediate tensor as an output; for each tensor `sqnr_db` is the SQNR of its own
QuantizeLinear/DequantizeLinear pair (the error quantising that tensor adds) and
`xmodel_sqnr_db` the ratio of the float model's tensor to the int8 model's (the error accumulated
up to that layer). Also the multiply-adds of each node and which nodes run in int8.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facemark.quantize.sensitivity import EXACT_DB, decode_tail, keep_float, rank, sqnr_db


# onnx ops whose multiply-adds are counted (the rest are element-wise or data movement)
MAC_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


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


def onnx_decode_tail(onnx_path: Path) -> list[str]:
    """Names of the nodes of an ONNX model that no Conv/Gemm/MatMul depends on (sensitivity.decode_tail)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    ops = [(node.name, list(node.input), list(node.output)) for node in graph.node]
    return decode_tail(ops, {node.name for node in graph.node if node.op_type in MAC_OPS})


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
