"""CoreML int8: weight-only W8 from the verified coreml_fp32 artifact, and W8A8 from the checkpoint.

- coreml_int8_w8: ct.optimize.coreml.linear_quantize_weights (int8, linear symmetric, per
  channel) on the fp32 mlprogram; compute stays float.
- coreml_int8_w8a8: int8 weights and activations. Activation calibration on the CoreML side
  (linear_quantize_activations) needs MLModel.predict, i.e. macOS; so the ranges are measured on
  the PyTorch side with coremltools.optimize.torch's LinearQuantizer used as a post-training
  calibrator (observers on, fake quantisation on, BatchNorm statistics frozen, no gradient step,
  calibration crops forwarded once), then finalised and converted. Its parity is that of the
  fake-quantised PyTorch graph, which simulates the same integer arithmetic in float.

Input "input" (1, 3, S, S) float32 NCHW normalised, output "landmarks" (1, 2P) normalised crop
units. On Linux the package is written, reloaded and its spec checked (names, shapes, quantised
ops) but not run: status "written, not run on this host". On macOS it also runs on the val crops.
"""

from __future__ import annotations

import copy
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemark.convert.coreml import INPUT_NAME, OUTPUT_NAME
from facemark.console import captured
from facemark.artifacts import ARTIFACTS, Artifact
from facemark.backends import BACKENDS
from facemark.io import atomic_path
from facemark.manifest import verify_artifact
from facemark.artifact_rows import RowResult, attempt, written
from facemark.quantize.common import (QuantJob, check_output_step, int8_facts, int8_parity,
                                      load_torch_before_tensorflow)
from facemark.runtime import Feed, TorchRunner, create_runner
from facemark.status import Status

INT8_FROM = BACKENDS["coreml"].int8_from
CALIBRATION_BATCH = 16
QUANTISED_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale", "quantize", "dequantize")


W8, W8A8 = ARTIFACTS["coreml_int8_w8"], ARTIFACTS["coreml_int8_w8a8"]


def planned(job: QuantJob) -> list[Artifact]:
    return [W8, W8A8]


def quantize(job: QuantJob) -> list[RowResult]:
    """Entry point: W8 and W8A8, each independent."""
    return [attempt(W8, lambda: _w8(job)), attempt(W8A8, lambda: _w8a8(job))]


def import_coremltools():
    load_torch_before_tensorflow()
    import coremltools

    return coremltools


def _w8(job: QuantJob) -> RowResult:
    ct = import_coremltools()
    import coremltools.optimize as cto

    float_path = verify_artifact(job.export_dir, INT8_FROM, job.manifest)
    facts = int8_facts(W8, "int8 weights (linear symmetric, per channel; weight tensors "
                       "of >= 2048 elements, coremltools' default threshold), float compute and activations; "
                       "float32 I/O", "NCHW", "float32", "float32", job, INT8_FROM)
    facts.pop("calibration")  # weight-only: nothing is measured on data
    model = ct.models.MLModel(str(float_path), skip_model_load=True)
    config = cto.coreml.OptimizationConfig(global_config=cto.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel"))
    with captured():   # progress bars into the log
        quantized = cto.coreml.linear_quantize_weights(model, config=config)
    return _save(job, quantized, W8, facts)


def _w8a8(job: QuantJob) -> RowResult:
    ct = import_coremltools()

    facts = int8_facts(W8A8, "int8 per-channel weights and uint8 activations (symmetric), "
                       f"activation ranges from {len(job.calibration.crops)} calibration crops measured in "
                       "PyTorch (coremltools.optimize.torch LinearQuantizer as a post-training calibrator); "
                       "float32 I/O", "NCHW", "float32", "float32", job, "checkpoint")
    facts["compute_precision"], facts["minimum_deployment_target"] = "float16", "iOS17"
    facts["calibration"]["method"] = "minmax"   # calibrate_torch's observers, whatever quantize.calibration_method says
    quantizer, prepared = calibrate_torch(job.model, job.calibration.inputs("NCHW"))
    scale = output_fake_quant_scale(prepared)
    if scale is not None:
        facts["output_step"] = check_output_step(scale, job.size, job.calibration.median_ipd_px,
                                                 job.cfg.quantize.max_output_step)
    facts["simulated_parity"] = int8_parity(
        TorchRunner(prepared, job.size, job.norm).predict(job.parity.crops),
        TorchRunner(job.model, job.size, job.norm).predict(job.parity.crops),
        job, reference="pytorch float32 vs fake-quantised pytorch")
    final = quantizer.finalize(prepared, inplace=False).eval()
    example = torch.from_numpy(job.calibration.inputs("NCHW")[:1])
    with torch.no_grad():
        traced = torch.jit.trace(final, example)
    # iOS 17: the first target whose MIL has activation quantize/dequantize ops (the float export
    # targets iOS 15); compute stays float16 between them, as the Neural Engine runs it
    with captured():   # progress bars into the log
        mlmodel = ct.convert(traced, inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape))],
                             outputs=[ct.TensorType(name=OUTPUT_NAME)], convert_to="mlprogram",
                             minimum_deployment_target=ct.target.iOS17)
    return _save(job, mlmodel, W8A8, facts)


def calibrate_torch(model: torch.nn.Module, inputs: np.ndarray):
    """LinearQuantizer as a calibrator on (N, 3, S, S) float32 inputs -> (quantizer, the prepared
    fake-quantised model in eval mode with observers off)."""
    load_torch_before_tensorflow()
    from coremltools.optimize.torch.quantization import (LinearQuantizer, LinearQuantizerConfig,
                                                         ModuleLinearQuantizerConfig)
    from torch.ao.quantization import disable_observer

    # milestones [observers on, fake quant on, observers off, BN frozen] at step 0, observers never
    # switched off by the schedule (-1): we switch them off ourselves after one calibration pass
    config = LinearQuantizerConfig(global_config=ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric", weight_per_channel=True, weight_observer="min_max",
        activation_observer="min_max", milestones=[0, 0, -1, 0]))
    quantizer = LinearQuantizer(split_norm_act(copy.deepcopy(model).eval()), config)
    batches = torch.from_numpy(inputs)
    prepared = quantizer.prepare(example_inputs=(batches[:1],), inplace=False)
    quantizer.step()
    prepared.eval()  # BatchNorm uses its running statistics; observers still record (not tied to mode)
    with torch.no_grad():
        for start in range(0, len(batches), CALIBRATION_BATCH):
            prepared(batches[start:start + CALIBRATION_BATCH])
    prepared.apply(disable_observer)
    return quantizer, prepared


def split_norm_act(model: torch.nn.Module) -> torch.nn.Module:
    """Replace timm's fused BatchNormAct2d modules by Sequential(BatchNorm2d, drop, act), in place.

    Why: LinearQuantizer traces the model in train mode, and FX inlines BatchNormAct2d's forward
    with `training=True` frozen into the graph, so calibration would normalise with batch
    statistics (and overwrite the running ones): measured 20 % of the inter-pupil distance of
    error on MobileNetV3. A plain BatchNorm2d stays a module that the quantiser folds into its conv.
    """
    from timm.layers import BatchNormAct2d

    for name, child in list(model.named_children()):
        if isinstance(child, BatchNormAct2d):
            norm = torch.nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                        child.track_running_stats)
            norm.load_state_dict({k: v for k, v in child.state_dict().items()
                                  if k in norm.state_dict()})
            setattr(model, name, torch.nn.Sequential(norm, child.drop, child.act).train(child.training))
        else:
            split_norm_act(child)
    return model


def output_fake_quant_scale(prepared: torch.nn.Module) -> float | None:
    """Scale of the fake-quantise module that produces the prepared graph's output, if any."""
    from torch.ao.quantization import FakeQuantizeBase

    output = next(node for node in prepared.graph.nodes if node.op == "output")
    node = output.args[0]
    node = node[0] if isinstance(node, (tuple, list)) else node
    if getattr(node, "op", None) == "call_module":
        module = prepared.get_submodule(node.target)
        if isinstance(module, FakeQuantizeBase):
            return float(module.scale.max())
    return None


def _save(job: QuantJob, mlmodel, row: Artifact, facts: dict[str, Any]) -> RowResult:
    """Embed the contract, save atomically, reload and check the spec (and run it on macOS)."""
    from facemark.convert.coreml import can_predict, check_spec
    from facemark.convert.parity import embedded_metadata

    metadata = embedded_metadata(job.contract, facts)
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.short_description = f"facemark {job.contract.scheme.name} landmarks, {facts['quantization']}"
    with atomic_path(job.export_dir / row.file) as tmp:
        staging = job.work_dir / row.file  # coremltools insists on the .mlpackage suffix
        shutil.rmtree(staging, ignore_errors=True)
        mlmodel.save(str(staging))
        shutil.move(str(staging), tmp)
        facts["spec"] = {**check_spec(tmp, job.size, False, metadata), "reloaded": True,
                         "quantised_ops": quantised_ops(tmp)}
        if can_predict():
            actual = create_runner("coreml", tmp, Feed("NCHW"), job.size, job.norm).predict(job.parity.crops)
            expected = TorchRunner(job.model, job.size, job.norm).predict(job.parity.crops)
            facts["parity"] = int8_parity(actual, expected, job)
            facts["status"] = Status.VERIFIED
        else:
            facts["status"] = Status.WRITTEN
    return written(row, facts)


def quantised_ops(package: Path) -> dict[str, int]:
    """Counts of quantisation ops in a reloaded (not compiled) package; none is an error."""
    ct = import_coremltools()
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    ops = Counter(op.type for function in spec.mlProgram.functions.values()
                  for block in function.block_specializations.values() for op in block.operations)
    quantised = {op: ops[op] for op in QUANTISED_OPS if ops[op]}
    if not quantised:
        raise RuntimeError(f"{package.name}: reloaded program holds no quantised op ({dict(ops)})")
    return quantised
