"""A model's own input normalisation, end to end: for EfficientNet-Lite (mean = std = 0.5) and
MobileViT (mean 0, std 1) runs, the checkpoint, manifest, baked ONNX artifact, validate runner,
golden vectors and the Android core all agree on it, and ImageNet's statistics in its place would
be caught."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from drawn_faces import make_drawn_split
from java_core import needs_jdk, run_checker

from facemark.codec import denormalise
from facemark.config import load_config
from facemark.convert.export import export_run
from facemark.convert.onnx import read_onnx_metadata
from facemark.data.crops import load_crop_set, to_input
from facemark.manifest import MANIFEST_NAME, load_manifest
from facemark.model import build_model, checkpoint_dict, load_checkpoint
from facemark.schemes import load_scheme
from facemark.runtime.runners import Feed, create_runner
from facemark.weights import HALF, IMAGENET, Normalisation

SIZE = 64
OVERRIDES = ["model.pretrained=false", f"data.input_size={SIZE}", "data.detector=drawn", "export.parity_images=4"]
# the smallest of each family; random init, so the normalisation is timm's convention for the arch
ARCHS = {"tf_efficientnet_lite0": HALF, "mobilevit_xxs": Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}
PX_TOL = 1e-3   # crop pixels: float32 ONNX vs PyTorch on the same uint8 crops


@pytest.fixture(scope="module", params=sorted(ARCHS))
def norm_run(request, tmp_path_factory) -> Path:
    """A run of ARCHS' arch (perturbed random weights) exported to ONNX with baked preprocessing
    and golden vectors."""
    base = tmp_path_factory.mktemp("norm")
    make_drawn_split(base / "data", "val", 4)
    cfg = load_config(overrides=[*OVERRIDES, f"model.arch={request.param}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, load_scheme(cfg.data.scheme).num_points).eval()
    with torch.no_grad():   # random init gives near-constant outputs; perturb so the input matters,
        for param in model.parameters():   # then scale the head to crop-sized outputs (about +-0.3)
            param.add_(0.05 * torch.randn_like(param))
        head = model.get_classifier()
        scale = 0.3 / float(model(torch.randn(4, 3, SIZE, SIZE)).std())
        head.weight.mul_(scale)
        head.bias.mul_(scale)
    run = base / "run"
    run.mkdir()
    torch.save(checkpoint_dict(model, cfg, data_root=str(base / "data")), run / "best.pt")
    assert export_run(run, formats=["onnx"], data_root=base / "data", bake=True, golden=True) == 0
    return run


def _crops(run: Path) -> np.ndarray:
    cfg = load_config(overrides=OVERRIDES)
    return load_crop_set(run.parent / "data", "val", cfg.data, workers=1).crops


def _norm(run: Path) -> Normalisation:
    """The arch's expected normalisation (ARCHS), from the run's arch."""
    return ARCHS[torch.load(run / "best.pt", weights_only=True)["arch"]]


def test_checkpoint_and_manifest_say_the_arch_normalisation(norm_run):
    expected = _norm(norm_run).to_dict()
    assert torch.load(norm_run / "best.pt", weights_only=True)["input"] == expected
    manifest = load_manifest(norm_run / "export")
    assert {"mean": list(manifest.contract.input.mean), "std": list(manifest.contract.input.std)} == expected
    for name in ("onnx_fp32", "onnx_fp32_baked"):   # the contract embedded in each file
        embedded = json.loads(read_onnx_metadata(norm_run / "export" / manifest.artifacts[name].file)
                              ["facemark_manifest"])
        assert {key: embedded["input"][key] for key in ("mean", "std")} == expected


def test_baked_onnx_normalises_like_the_model(norm_run):
    """uint8 in, crop pixels out: equal to PyTorch fed (x/255 - mean)/std, far from ImageNet's stats."""
    model, _, _ = load_checkpoint(norm_run / "best.pt")
    crops = _crops(norm_run)
    entry = load_manifest(norm_run / "export").artifacts["onnx_fp32_baked"]
    runner = create_runner("onnx", norm_run / "export" / "model_fp32_baked.onnx", Feed.of(entry), SIZE, _norm(norm_run))
    baked = runner.raw_outputs(crops).astype(np.float64)   # uint8 in, crop pixels out

    def torch_px(norm):
        with torch.no_grad():
            return denormalise(model(torch.from_numpy(to_input(crops, norm))).numpy().astype(np.float64), SIZE)

    assert np.abs(baked - torch_px(_norm(norm_run))).max() < PX_TOL
    assert np.abs(baked - torch_px(IMAGENET)).max() > 100 * PX_TOL   # the wrong stats would show


def test_validate_runner_feeds_the_manifest_normalisation(norm_run):
    manifest = load_manifest(norm_run / "export")
    entry = manifest.artifacts["onnx_fp32"]
    crops = _crops(norm_run)
    model, _, _ = load_checkpoint(norm_run / "best.pt")
    with torch.no_grad():
        expected = model(torch.from_numpy(to_input(crops, _norm(norm_run)))).numpy().reshape(len(crops), -1, 2)
    path = norm_run / "export" / entry.file
    right = create_runner("onnx", path, Feed.of(entry), SIZE, _norm(norm_run), threads=1).predict(crops)
    wrong = create_runner("onnx", path, Feed.of(entry), SIZE, IMAGENET, threads=1).predict(crops)
    assert np.abs(right - expected).max() < 1e-4 < np.abs(wrong - expected).max() / 10


@needs_jdk
def test_android_core_uses_the_manifest_normalisation(core_classes, norm_run, tmp_path):  # noqa: F811
    golden = norm_run / "export" / "golden"
    index = dict(line.split(" ", 1) for line in (golden / "golden.txt").read_text().splitlines())
    norm = _norm(norm_run)
    assert [float(v) for v in index["mean"].split()] == list(norm.mean)
    assert [float(v) for v in index["std"].split()] == list(norm.std)
    result = run_checker(core_classes, golden)
    assert result.returncode == 0, result.stdout + result.stderr
    # manifest and golden index both claiming ImageNet: the core then normalises differently from
    # the expected tensors, and says so
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    manifest = json.loads((norm_run / "export" / MANIFEST_NAME).read_text())
    manifest["input"].update(IMAGENET.to_dict())
    (export_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    (export_dir / "golden").mkdir()
    for path in golden.iterdir():
        text = path.read_bytes()
        if path.name == "golden.txt":
            lines = [line for line in text.decode().splitlines() if not line.startswith(("mean ", "std "))]
            lines += [f"mean {' '.join(map(repr, IMAGENET.mean))}", f"std {' '.join(map(repr, IMAGENET.std))}"]
            text = ("\n".join(lines) + "\n").encode()
        (export_dir / "golden" / path.name).write_bytes(text)
    result = run_checker(core_classes, export_dir / "golden")
    assert result.returncode == 1 and "case_0 input_mean" in result.stdout, result.stdout
