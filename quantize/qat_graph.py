"""The QAT graph: the run's model captured with torch.export, each BatchNorm folded into its
convolution (and mapped back afterwards), prepared with torchao's XNNPACK quantizer (uint8
activations, ReLU6 fused), and its fake-quant ranges measured as the converters will measure them
(see facemark.quantize.qat for why each choice).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn


RANGE_BATCH = 64        # calibration crops per forward pass when the ranges are measured
UNFOLD_TOLERANCE = 1e-3   # float model vs folded graph, normalised units (rounding gives ~1e-6)


@dataclasses.dataclass(frozen=True)
class FoldedBatchNorm:
    """A BatchNorm folded into the convolution before it. Names are state-dict keys of the run's
    model; `fused_bias` is the graph's key of the folded bias (the conv's own bias key if it had one)."""

    conv_bias: str | None
    fused_bias: str
    weight: str
    bias: str
    running_mean: str
    running_var: str
    eps: float


def prepare(model: nn.Module, size: int) -> tuple[nn.Module, list[FoldedBatchNorm]]:
    """`model` captured with torch.export (batch axis dynamic), every conv -> BatchNorm folded into
    the conv (fold_batchnorm), and prepared for QAT with fake quantisation -> (GraphModule in eval
    mode whose .eval()/.train() calls keep it so (facemark's predictors call .eval()), the folds)."""
    from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    batch = torch.export.Dim("batch", min=1, max=4096)
    example = (torch.zeros(2, 3, size, size),)
    exported = torch.export.export(copy.deepcopy(model).eval(), example, dynamic_shapes=({0: batch},)).module()
    folds = fold_batchnorm(exported)
    graph = prepare_qat_pt2e(exported, quantizer())
    move_exported_model_to_eval(graph)
    allow_exported_model_train_eval(graph)
    graph.weights_source = model.weights_source   # the predictors read the input normalisation from it
    return graph, folds


BATCHNORM_OPS = ("aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default")


def fold_batchnorm(graph: torch.fx.GraphModule) -> list[FoldedBatchNorm]:
    """Fold each (eval) BatchNorm that follows a convolution into it, in place, with torchao's pass
    (the one prepare_pt2e runs for post-training quantisation) -> what was folded.

    Why before prepare_qat_pt2e: its conv-BN QAT rewrite and convert_pt2e's fold back match ~130
    exported patterns whatever the model's size (~45 s per run measured on MobileNetV2); with the
    statistics frozen (see the module docstring) the folded graph computes the same thing."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    folds = []
    for node in graph.graph.nodes:
        if node.op != "call_function" or str(node.target) not in BATCHNORM_OPS:
            continue
        conv = node.args[0]
        if not (isinstance(conv, torch.fx.Node) and str(conv.target).startswith("aten.conv")):
            continue
        bn = dict(zip([a.name for a in node.target._schema.arguments], node.args)) | node.kwargs
        conv_bias = conv.args[2].target if len(conv.args) > 2 and conv.args[2] is not None else None
        folds.append(FoldedBatchNorm(
            conv_bias=conv_bias, fused_bias=conv_bias or f"{conv.args[1].target}_bias",   # torchao's name
            weight=bn["weight"].target, bias=bn["bias"].target, running_mean=bn["running_mean"].target,
            running_var=bn["running_var"].target, eps=float(bn["eps"])))
    _fuse_conv_bn_(graph)
    return folds


def unfold_batchnorm(model: nn.Module, tuned: dict[str, torch.Tensor], folds: list[FoldedBatchNorm]) -> nn.Module:
    """Load the fine-tuned weights of a folded graph (`tuned`: its state dict) into `model` (the
    run's float architecture, BatchNorm unfolded), in place -> model. Each folded BatchNorm becomes
    the identity plus the folded bias (weight 1, mean 0, variance 1 - eps), so the model computes
    what the graph computes with fake quantisation off."""
    state = model.state_dict()
    folded = {key for fold in folds for key in (fold.weight, fold.bias, fold.running_mean, fold.running_var)}
    wanted = [k for k in state if not k.endswith("num_batches_tracked") and k not in folded]
    missing = sorted(set(wanted) - set(tuned))
    if missing:
        raise RuntimeError(f"the QAT graph lost {len(missing)} weights of the model (first: {missing[0]})")
    state.update({key: tuned[key] for key in wanted})
    for fold in folds:
        bias = tuned[fold.fused_bias]
        state[fold.weight] = torch.ones_like(bias)
        state[fold.running_mean] = torch.zeros_like(bias)
        state[fold.running_var] = torch.full_like(bias, 1.0 - fold.eps)
        state[fold.bias] = torch.zeros_like(bias) if fold.conv_bias else bias
    model.load_state_dict(state)
    return model


def quantizer():
    """torchao's XNNPACK quantizer (the scheme of the phones' int8 CPU kernels: symmetric
    per-channel int8 weights; every convolution, Linear and Add quantised at its output) with
    uint8 activations, the type onnxruntime's x86 kernels run fastest (u8s8), and ReLU6 fused into
    the convolution before it (see _relu_six_fused).

    Chosen over X86InductorQuantizer, measured on the demo MobileNetV2: that one leaves the
    residual Adds, the convolutions feeding them and the head in float (Inductor fuses them in
    float), so onnxruntime ran 15 of 53 convolutions and the Linear in float (68 % of the MACs in
    int8). This one gives 53 QLinearConv, 10 QLinearAdd and a QGemm, as post-training QDQ does,
    at the same latency (1.37 vs 1.30 ms). (torchao ships it under torchao.testing since the
    XNNPACK backend moved to ExecuTorch, where it warns that it is deprecated; the torchao
    version is pinned.)"""
    from torchao.testing.pt2e._xnnpack_quantizer import get_symmetric_quantization_config

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    uint8 = dataclasses.replace(config.input_activation, dtype=torch.uint8, quant_min=0, quant_max=255)
    return _relu_six_fused()().set_global(dataclasses.replace(config, input_activation=uint8, output_activation=uint8))


def _relu_six_fused():
    """The XNNPACK quantizer with conv (+BatchNorm) -> ReLU6 quantised once, after the ReLU6.

    Its own annotation fuses ReLU only: it quantises the convolution's output and lets ReLU6
    (hardtanh) share that range, negatives included, which spends half the uint8 levels on values
    ReLU6 clips, and onnxruntime cannot fold the clip (DQ -> Clip -> Q stays in float: 35 extra
    ops, 2.8 ms instead of 1.4 on the demo model). Moving the output spec from the producer to the
    ReLU6 gives Conv -> Clip -> Q with a [0, <=6] range, which onnxruntime fuses into QLinearConv,
    and is what XNNPACK and LiteRT compute (conv with a fused ReLU6)."""
    import torch.fx
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer

    relu_six = {torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default}

    class ReluSixFused(XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target not in relu_six:
                    continue
                producer = node.args[0]
                annotation = producer.meta.get("quantization_annotation")
                if annotation is None or annotation.output_qspec is None or len(producer.users) != 1:
                    continue
                spec, annotation.output_qspec = annotation.output_qspec, None
                node.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=spec, _annotated=True)
            return model

    return ReluSixFused


def measure_ranges(graph: nn.Module, inputs: torch.Tensor, percentile: float | None) -> None:
    """Set every fake-quant range of the prepared `graph` to what the converters measure on
    `inputs` ((N, 3, S, S) normalised calibration crops) with the float graph (fake quantisation
    off): per-channel min-max for the weights, and for the activations min-max, or with
    `percentile` the percentile ranges (calibration.PercentileRanges, as onnxruntime computes them
    and tflite_int8.calibrated_ranges sets them for LiteRT). Then hold the ranges (observers
    off, fake quantisation on)."""
    from torchao.quantization.pt2e import disable_observer, enable_fake_quant
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    from facemark.quantize.calibration import PercentileRanges

    quants = [module for module in graph.modules() if isinstance(module, FakeQuantizeBase)]
    low, high = _min_max(graph, quants, inputs)
    if percentile is not None:
        # the weights' quantisers are the per-channel ones (XNNPACK scheme); activations are per tensor
        stats = PercentileRanges({i: (low[i].item(), high[i].item())
                                  for i, quant in enumerate(quants) if not quant.is_per_channel})
        hooks = [quants[i].register_forward_pre_hook(lambda module, args, i=i: stats.add(i, args[0].numpy()))
                 for i in stats.bounds]
        graph.apply(disable_observer)
        with torch.no_grad():
            for start in range(0, len(inputs), RANGE_BATCH):
                graph(inputs[start:start + RANGE_BATCH])
        for hook in hooks:
            hook.remove()
        for i, (lo, hi) in stats.ranges(percentile).items():
            low[i], high[i] = torch.tensor(lo), torch.tensor(hi)
    for i, quant in enumerate(quants):
        observer = quant.activation_post_process
        observer.min_val, observer.max_val = low[i], high[i]
        scale, zero_point = quant.calculate_qparams()
        quant.scale.resize_(scale.shape).copy_(scale)
        quant.zero_point.resize_(zero_point.shape).copy_(zero_point)
    graph.apply(disable_observer)
    graph.apply(enable_fake_quant)


def _min_max(graph: nn.Module, quants: list[nn.Module],
             inputs: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each quantiser's min and max over `inputs` (per channel for per-channel ones), fake quantisation off."""
    low: list[torch.Tensor] = []
    high: list[torch.Tensor] = []
    for quant in quants:
        quant.disable_fake_quant()
        quant.enable_observer()
    with torch.no_grad():
        for start in range(0, len(inputs), RANGE_BATCH):
            for quant in quants:   # a fresh observation per chunk: the observers average across calls
                quant.activation_post_process.reset_min_max_vals()
            graph(inputs[start:start + RANGE_BATCH])
            # copies: the observers reset and update their buffers in place
            values = [(q.activation_post_process.min_val.clone(), q.activation_post_process.max_val.clone())
                      for q in quants]
            low = [torch.minimum(low[i], v[0]) for i, v in enumerate(values)] if low else [v[0] for v in values]
            high = [torch.maximum(high[i], v[1]) for i, v in enumerate(values)] if high else [v[1] for v in values]
    return low, high
