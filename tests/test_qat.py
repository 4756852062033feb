"""facemark qat: quantisation-aware fine-tuning, its artifacts, which row ships, and resume.

A small ConvNeXt (timm's test_convnext, perturbed random weights as in test_quantize) at 64 px is exported to float ONNX and
quantised (PTQ rows), then fine-tuned under fake quantisation on a tiny drawn dataset. The checks:
the fine-tuned float checkpoint records its source; the QAT ONNX is a real QDQ graph whose
onnxruntime outputs match the fake-quantised PyTorch graph it was converted from (mean 0.22-0.29 crop px over seeds 0-2, bound 0.6); both QAT rows
are verified against the original PyTorch model; exactly one calibrated int8 row per format ships
(the others name it in superseded_by), whichever of qat and quantize ran last; an interrupted
fine-tuning resumes to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from drawn_faces import make_drawn_root, perturbed_model
from margins import below

from facemark import interrupt
from facemark.artifacts import qat_row
from facemark.backends import QAT_FORMATS
from facemark.config import load_config
from facemark.convert.export import export_run
from facemark.errors import ArtifactError, ConfigError
from facemark.io import sha256_of
from facemark.manifest import load_manifest, record_artifact
from facemark.model import checkpoint_dict, load_checkpoint
from facemark.quantize.qat import FineTuner, qat_run
from facemark.rundir import RunDir
from facemark.quantize.run import build_job, quantize_run
from facemark.runtime import Feed, TorchRunner, create_runner
from facemark.pipeline import check_plan, qat_current

# timm's tiny ConvNeXt (no BatchNorm): perturbed, its outputs vary with the input (std 0.14 across
# crops); timm's tiny EfficientNet gives nearly the same output for every crop (std 0.001), too weak
# a model for parity bounds. The BatchNorm fold has its own test below, on that EfficientNet.
SIZE = 64
ARCH = "test_convnext"
OVERRIDES = ["model.pretrained=false", f"data.input_size={SIZE}", "data.detector=drawn",
             "quantize.calibration_count=24", "export.parity_images=6", "export.formats=[onnx]",
             "quantize.mixed=false", "quantize.mixed_eval_faces=8", "quantize.qat_epochs=2", "quantize.qat_lr=1e-4",
             "train.batch_size=8", "data.workers=0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_drawn_root(tmp_path_factory.mktemp("drawn"), train=24, val=8)


def exported_run(root: Path, run: Path, formats: str, arch: str = ARCH) -> Path:
    """A trained-looking run, exported to float ONNX, with `formats` ("[onnx]", ...) in its config."""
    run.mkdir(exist_ok=True)
    cfg = load_config(overrides=[*OVERRIDES, f"quantize.formats={formats}", f"model.arch={arch}"])
    model = perturbed_model(cfg)
    torch.save(checkpoint_dict(model, cfg, data_root=str(root), epoch=0), run / "best.pt")
    assert export_run(run, formats=["onnx"], data_root=root, bake=False, golden=False) == 0
    return run


@pytest.fixture(scope="module")
def qat_done(dataset, tmp_path_factory) -> tuple[Path, int]:
    """The ONNX PTQ row, then `facemark qat` for onnx and tflite -> (run, exit code). (No TFLite
    PTQ row: onnx2tf is the slowest step here, and the ONNX rows exercise the choice of row.)"""
    run = exported_run(dataset, tmp_path_factory.mktemp("run"), "[onnx,tflite]")
    assert quantize_run(run, formats=["onnx"], data_root=dataset, calibration_count=None) == 0
    return run, qat_run(run, data_root=dataset)


@pytest.mark.slow
def test_qat_writes_a_float_checkpoint_and_verified_rows(qat_done):
    run, code = qat_done
    assert code == 0
    model, _, ckpt = load_checkpoint(RunDir(RunDir(run).qat).best)
    original, _, _ = load_checkpoint(run / "best.pt")
    record = ckpt["qat"]
    assert record["made_from_sha256"] == sha256_of(run / "best.pt") and record["epochs"] == 2
    assert record["best_epoch"] in (1, 2) and np.isfinite(record["val_nme_int8_sim"])
    moved = [(a - b).abs().max().item() for a, b in zip(model.state_dict().values(), original.state_dict().values())
             if a.is_floating_point()]
    assert max(moved) > 0   # fine-tuning changed the weights
    lines = RunDir(RunDir(run).qat).metrics.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    manifest = load_manifest(run / "export")
    for fmt, row in ((fmt, qat_row(fmt)) for fmt in QAT_FORMATS):
        name, entry = row.name, manifest.artifacts[row.name]
        assert entry.file == row.file and entry.format == fmt and entry.precision == "int8"
        assert entry.status == "verified" and entry.details["qat"]["made_from_sha256"] == record["made_from_sha256"]
        assert entry.made_from == "qat/best.pt"
        macs = entry.details["int8_macs"]
        assert 0.1 < macs <= 1.0, macs   # measured, not assumed (0.27 for ONNX here)
        below(f"{name} parity vs the original model", entry.parity["nme_ipd"], 0.25)


@pytest.mark.slow
def test_qat_onnx_is_the_fine_tuned_graph(qat_done, dataset):
    """The QDQ file holds int8 weights, and onnxruntime gives what the fake-quantised graph gives."""
    import onnx

    run, _ = qat_done
    path = run / "export" / qat_row("onnx").file
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer) >= 10   # conv and Linear weights
    job = build_job(run, dataset, None, verb="qat")
    tuner = FineTuner(job, RunDir(run).qat, 2)
    tuner.train(None)   # finished: loads the best epoch's state, trains nothing
    crops = job.parity.crops
    # in a Sequential: the QAT graph's own eval() (torchao's override) returns None, not the module
    fake = TorchRunner(torch.nn.Sequential(tuner.graph), SIZE, job.norm).predict(crops)
    entry = load_manifest(run / "export").artifacts[qat_row("onnx").name]
    real = create_runner("onnx", path, Feed.of(entry), SIZE, job.norm).predict(crops)
    distance = np.linalg.norm((fake - real).reshape(len(crops), -1, 2), axis=-1) * SIZE / 2
    # 0.22-0.29 on AVX-512/VNNI Xeons (seeds 0-2), 0.83 on an AVX2-only EPYC, whose int8 kernels
    # round differently from torchao's fake quantisation; a wrong range or layout moves points by crops
    below("QAT ONNX vs fake-quant graph, mean crop px", float(distance.mean()), 1.7)


def _shipping(run: Path) -> dict[str, tuple[str | None, dict | None]]:
    """int8 row -> (superseded_by, val_comparison) of the run's manifest."""
    artifacts = load_manifest(run / "export").artifacts
    return {name: (entry.superseded_by, entry.details.get("val_comparison")) for name, entry in artifacts.items()
            if entry.precision == "int8"}


@pytest.mark.slow
def test_one_calibrated_row_per_format_ships(qat_done):
    """ONNX has two calibrated rows (static QDQ and its QAT): the one selection.choose picks from
    their val NME and int8 shares ships (an all-int8 row within quantize.all_int8_margin of float,
    else the lower NME), the other names it; TFLite has only its QAT row here, which competes with
    nothing and ships."""
    from facemark.quantize.selection import choose

    run, _ = qat_done
    shipping = _shipping(run)
    plain, qat = "onnx_int8_qdq_u8s8", qat_row("onnx").name
    comparison = shipping[qat][1]
    assert comparison == shipping[plain][1] and sorted(comparison["nme"]) == sorted([plain, qat])
    artifacts = load_manifest(run / "export").artifacts
    all_int8 = {name for name in (plain, qat) if artifacts[name].details.get("int8_macs", 0.0) >= 1.0}
    assert plain in all_int8
    ships = choose(comparison["nme"], all_int8, comparison["float_nme"], load_config().quantize.all_int8_margin)
    assert comparison["ships"] == ships and comparison["split"] == "val" and comparison["faces"] == 8
    assert {name: shipping[name][0] for name in (plain, qat)} == {plain: None if ships == plain else ships,
                                                                  qat: None if ships == qat else ships}
    assert shipping[qat_row("tflite").name] == (None, None)


@pytest.mark.slow
def test_qat_then_quantize_ships_what_quantize_then_qat_ships(dataset, tmp_path):
    """One selection step runs after both verbs over the whole manifest: the order does not matter."""
    first, second = exported_run(dataset, tmp_path / "a", "[onnx]"), exported_run(dataset, tmp_path / "b", "[onnx]")
    assert quantize_run(first, formats=["onnx"], data_root=dataset, calibration_count=None) == 0
    assert qat_run(first, data_root=dataset) == 0
    assert qat_run(second, data_root=dataset) == 0
    assert quantize_run(second, formats=["onnx"], data_root=dataset, calibration_count=None) == 0
    shipped = _shipping(first)
    assert set(shipped) == {"onnx_int8_qdq_u8s8", "onnx_int8_qdq_u8s8_qat"}
    assert sum(by is None for by, _ in shipped.values()) == 1   # exactly one row ships
    assert _shipping(second) == shipped


@pytest.mark.slow
def test_interrupted_qat_resumes_to_the_same_weights(dataset, tmp_path, monkeypatch):
    """Stopped after epoch 1, or by SIGTERM inside epoch 2, and run again, QAT ends with the
    weights of an uninterrupted run (training's loop: the step is saved, the next one follows)."""
    straight = exported_run(dataset, tmp_path / "a", "[onnx]")
    assert qat_run(straight, data_root=dataset) == 0
    resumed = exported_run(dataset, tmp_path / "b", "[onnx]")
    assert qat_run(resumed, data_root=dataset, stop_after=1) == 0
    saved = torch.load(RunDir(RunDir(resumed).qat).last, weights_only=True)
    assert saved["epoch"] == 1 and not RunDir(RunDir(resumed).qat).best.exists()
    assert qat_row("onnx").name not in load_manifest(resumed / "export").artifacts
    assert qat_run(resumed, data_root=dataset) == 0
    signalled = exported_run(dataset, tmp_path / "c", "[onnx]")
    _sigterm_in_step(monkeypatch, 5)   # 3 steps per epoch (24 faces, batch 8): epoch 2's second
    with interrupt.handled(), pytest.raises(KeyboardInterrupt):
        qat_run(signalled, data_root=dataset)
    saved = torch.load(RunDir(RunDir(signalled).qat).last, weights_only=True)
    assert saved["epoch"] == 1 and saved["interrupted_epoch"]["steps"] == 2
    monkeypatch.undo()
    assert qat_run(signalled, data_root=dataset) == 0
    lines = RunDir(RunDir(signalled).qat).metrics.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    first = torch.load(RunDir(RunDir(straight).qat).best, weights_only=True)["model"]
    for run in (resumed, signalled):
        other = torch.load(RunDir(RunDir(run).qat).best, weights_only=True)["model"]
        assert first.keys() == other.keys()
        assert all(torch.equal(first[k], other[k]) for k in first), run


def _sigterm_in_step(monkeypatch, step: int) -> None:
    """The QAT loss sends this process SIGTERM while computing optimiser step `step` (counted from 1)."""
    from facemark.train import losses

    build, calls = losses.build_loss, []

    def interrupting(cfg):
        loss = build(cfg)

        def forward(*args):
            calls.append(1)
            if len(calls) == step:
                os.kill(os.getpid(), signal.SIGTERM)
            return loss(*args)
        return forward

    monkeypatch.setattr(losses, "build_loss", interrupting)


def test_qat_needs_an_export(tmp_path):
    with pytest.raises(ArtifactError, match="facemark export"):
        qat_run(tmp_path, data_root=None)


def test_pipeline_refuses_qat_without_a_format():
    cfg = load_config(overrides=["quantize.qat=true", "quantize.qat_formats=[tflite]", "quantize.formats=[onnx]"])
    with pytest.raises(ConfigError, match="share no format"):
        check_plan(cfg, "demo.yaml")


@pytest.mark.slow
def test_pipeline_sees_whether_the_qat_rows_are_current(qat_done):
    run, _ = qat_done
    cfg = load_config(overrides=[*OVERRIDES, "quantize.formats=[onnx,tflite]", "quantize.qat=true"])
    assert qat_current(run, cfg)
    manifest = load_manifest(run / "export")
    entry = manifest.artifacts[qat_row("tflite").name]
    record_artifact(run / "export", qat_row("tflite").name,
                    entry.replaced(qat={**entry.details["qat"], "made_from_sha256": "0" * 64}))
    try:
        assert not qat_current(run, cfg)   # fine-tuned from another checkpoint: the stage runs again
    finally:
        record_artifact(run / "export", qat_row("tflite").name, entry)


def test_qat_ranges_are_the_ones_the_converters_measure():
    """measure_ranges: per-channel weight min-max and activation min-max over the calibration
    inputs, or with a percentile the PercentileRanges onnxruntime's percentile method gives."""
    from facemark.model import build_model
    from facemark.quantize.calibration import PercentileRanges
    from facemark.quantize.qat_graph import measure_ranges, prepare

    cfg = load_config(overrides=OVERRIDES + [f"model.arch={ARCH}"])
    torch.manual_seed(0)
    graph, _ = prepare(build_model(cfg.model, 5, input_size=SIZE).eval(), SIZE)
    inputs = torch.randn(70, 3, SIZE, SIZE)   # two chunks of RANGE_BATCH and a ragged one
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    placeholder = next(node for node in graph.graph.nodes if node.op == "placeholder")
    first = next(getattr(graph, n.target) for n in placeholder.users
                 if n.op == "call_module" and isinstance(getattr(graph, n.target), FakeQuantizeBase))
    measure_ranges(graph, inputs, None)
    observer = first.activation_post_process
    assert (observer.min_val.item(), observer.max_val.item()) == (inputs.min().item(), inputs.max().item())
    weights = [m for m in graph.modules() if getattr(m, "is_per_channel", False)]
    assert weights and all(m.scale.numel() > 1 for m in weights)   # one scale per output channel
    measure_ranges(graph, inputs, 99.0)
    expected = PercentileRanges({0: (inputs.min().item(), inputs.max().item())})
    expected.add(0, inputs.numpy())
    low, high = expected.ranges(99.0)[0]
    assert observer.min_val.item() == pytest.approx(low) and observer.max_val.item() == pytest.approx(high)
    assert inputs.min().item() < low < high < inputs.max().item()
    assert first.observer_enabled.item() == 0 and first.fake_quant_enabled.item() == 1   # held, applied


def test_batchnorm_is_folded_for_fine_tuning_and_unfolded_into_the_run_architecture():
    """prepare folds every BatchNorm into its conv (the graph computes the model's function, no
    BatchNorm left); after the weights move, unfold_batchnorm gives the run's architecture that
    computes what the graph computes with fake quantisation off."""
    from torchao.quantization.pt2e import disable_fake_quant

    from facemark.model import build_model
    from facemark.quantize.qat_graph import prepare, unfold_batchnorm

    cfg = load_config(overrides=OVERRIDES + ["model.arch=test_efficientnet"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 5, input_size=SIZE).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in norms:   # statistics a trained model would have, not the identity of a fresh one
        bn.running_mean.normal_(0, 0.2), bn.running_var.uniform_(0.3, 3), bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.normal_(0, 0.2)
    graph, folds = prepare(model, SIZE)
    assert len(folds) == len(norms) > 5
    assert not [n for n in graph.graph.nodes if "batch_norm" in str(n.target)]
    graph.apply(disable_fake_quant)
    inputs = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        assert (graph(inputs) - model(inputs)).abs().max().item() < 1e-4
        for param in graph.parameters():   # as fine-tuning would
            param.add_(torch.randn_like(param) * 0.01)
        tuned = graph(inputs)
        unfolded = unfold_batchnorm(build_model(cfg.model, 5, input_size=SIZE), graph.state_dict(), folds).eval()
        assert (unfolded(inputs) - tuned).abs().max().item() < 1e-4
        assert (unfolded(inputs) - model(inputs)).abs().max().item() > 1e-3   # the moved weights arrived
