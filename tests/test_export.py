"""facemark export: every format written and checked against PyTorch, the manifest contract,
sha256 refusal, baked preprocessing, atomicity and failure isolation.

One backbone (ResNet18 at 64 px, random weights perturbed with a fixed seed: timm
zero-initialises the last BatchNorm gamma of residual blocks, which would make outputs nearly
constant and parity meaningless) on a tiny drawn dataset with a box cache. Module-scoped
fixtures export once; the TFLite path (two onnx2tf runs) is marked slow.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from drawn_faces import make_drawn_split
from margins import DATA_SEED, below

from facemark.codec import denormalise
from facemark.config import load_config, save_config
from facemark.status import Status
from facemark.convert.export import export_run
from facemark.backends import FORMATS
from facemark.convert.formats import PARITY_BOUND, resolve_formats
from facemark.convert.onnx import read_onnx_metadata
from facemark.runtime import Feed, TorchRunner, create_runner
from facemark.data.crops import load_crop_set
from facemark.errors import ArtifactError, ConfigError, DataError
from facemark.io import sha256_of
from facemark.manifest import load_manifest, save_manifest, verify_artifact
from facemark.model import build_model, checkpoint_dict, load_checkpoint, weights_source
from facemark.schemes import load_scheme
from facemark.weights import IMAGENET

SIZE = 64
CROPS = 4
OVERRIDES = ["model.arch=resnet18", "model.pretrained=false", f"data.input_size={SIZE}",
             "data.detector=drawn", f"export.parity_images={CROPS}"]


def make_run(base: Path, name: str = "run", scheme: str = "lapa106") -> Path:
    """A run folder with best.pt (perturbed random weights) and config.yaml; data under base/data."""
    root = base / "data"
    if not root.exists():
        make_drawn_split(root, "val", CROPS + 2)
    cfg = load_config(None, OVERRIDES + [f"data.scheme={scheme}"])
    model = perturbed_model(cfg, load_scheme(scheme).num_points)
    run = base / name
    run.mkdir()
    torch.save(checkpoint_dict(model, cfg, data_root=str(root)), run / "best.pt")
    save_config(cfg, run / "config.yaml")
    return run


def perturbed_model(cfg, num_points: int) -> torch.nn.Module:
    """Random weights + seeded noise, BatchNorm statistics recomputed on random inputs so that
    activations keep a sane scale, classifier scaled so outputs are about +-1 (crop-sized)."""
    torch.manual_seed(DATA_SEED)
    model = build_model(cfg.model, num_points)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration batch
        model.train()(torch.randn(16, 3, SIZE, SIZE))
        model.get_classifier().weight.mul_(0.2)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()


def crops_of(run: Path) -> np.ndarray:
    _, cfg, ckpt = load_checkpoint(run / "best.pt")
    return load_crop_set(Path(ckpt["data_root"]), "val", cfg.data, limit=CROPS).crops


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """ONNX and CoreML, plain and baked, exported once."""
    run = make_run(tmp_path_factory.mktemp("export"))
    assert export_run(run, formats=["onnx", "coreml"], data_root=None, bake=True, golden=False) == 0
    return run


def test_onnx_and_coreml_artifacts_are_recorded(exported):
    manifest = load_manifest(exported / "export")
    expected = {"onnx_fp32", "onnx_fp32_baked", "coreml_fp32", "coreml_fp16", "coreml_fp32_baked",
                "coreml_fp16_baked"}
    assert set(manifest.artifacts) == expected
    assert manifest.contract.checkpoint.sha256 == sha256_of(exported / "best.pt")
    assert manifest.contract.scheme.name == "lapa106" and manifest.contract.output.values == 212
    for name in expected:
        path = verify_artifact(exported / "export", name, manifest)
        entry = manifest.artifacts[name]
        assert entry.size_bytes > 100_000 and entry.sha256 == sha256_of(path)
        assert entry.tools["torch"] and entry.quantization == "none"
        assert entry.baked_preprocessing == name.endswith("_baked")
        assert entry.output.space == ("crop pixels" if name.endswith("_baked") else "normalised crop")
    onnx_entry = manifest.artifacts["onnx_fp32"]
    assert onnx_entry.status == Status.VERIFIED and onnx_entry.layout == "NCHW"
    assert onnx_entry.input.shape == (1, 3, SIZE, SIZE) and onnx_entry.input_dtype == "float32"
    assert onnx_entry.parity["images"] == CROPS and onnx_entry.parity["split"] == "val"
    below("export: onnx_fp32 recorded parity", onnx_entry.parity["max_abs"], PARITY_BOUND["float32"])
    baked = manifest.artifacts["onnx_fp32_baked"]
    assert baked.layout == "NHWC" and baked.input.shape == (1, SIZE, SIZE, 3) and baked.input_dtype == "uint8"
    assert manifest.artifacts["coreml_fp16"].status == Status.WRITTEN  # Linux: no CoreML runtime


def test_onnx_parity_recomputed_from_the_file(exported):
    model, _, _ = load_checkpoint(exported / "best.pt")
    crops = crops_of(exported)
    norm = weights_source(model).norm
    expected = TorchRunner(model, crops.shape[1], norm).predict(crops)
    entry = load_manifest(exported / "export").artifacts["onnx_fp32"]
    actual = create_runner("onnx", exported / "export" / "model_fp32.onnx", Feed.of(entry), SIZE, norm).predict(crops)
    assert actual.shape == (CROPS, 106, 2)
    assert np.abs(expected).max() > 0.05 and np.std(expected, axis=0).mean() > 1e-3  # not a constant model
    below("export: onnx_fp32 parity from the file", np.abs(actual - expected).max(), PARITY_BOUND["float32"])


def test_baked_onnx_equals_float_path_plus_arithmetic(exported):
    """The baked file's raw output (crop pixels) is the float file's output denormalised."""
    crops = crops_of(exported)
    artifacts = load_manifest(exported / "export").artifacts
    plain = create_runner("onnx", exported / "export" / "model_fp32.onnx", Feed.of(artifacts["onnx_fp32"]), SIZE,
                          IMAGENET)
    baked = create_runner("onnx", exported / "export" / "model_fp32_baked.onnx", Feed.of(artifacts["onnx_fp32_baked"]),
                          SIZE, IMAGENET)
    raw = baked.raw_outputs(crops)   # uint8 NHWC in, crop pixels out
    assert raw.dtype == np.float32 and baked.prepare(crops[:1]).dtype == np.uint8
    np.testing.assert_allclose(raw.reshape(len(crops), -1, 2), denormalise(plain.predict(crops), SIZE), atol=1e-3)


def test_onnx_metadata_embeds_the_contract(exported):
    manifest = load_manifest(exported / "export")
    metadata = read_onnx_metadata(exported / "export" / "model_fp32.onnx")
    embedded = json.loads(metadata["facemark_manifest"])
    assert embedded["checkpoint"]["sha256"] == manifest.contract.checkpoint.sha256
    assert embedded["input"] == manifest.contract.input.to_json()
    assert embedded["scheme"] == manifest.contract.scheme.to_json()
    assert embedded["artifact"]["layout"] == "NCHW" and metadata["num_points"] == "106"


def test_coreml_spec_and_metadata(exported):
    import coremltools as ct

    for name, kind in (("model_fp16.mlpackage", "multiArrayType"), ("model_fp32_baked.mlpackage", "imageType")):
        spec = ct.models.MLModel(str(exported / "export" / name), skip_model_load=True).get_spec()
        assert [i.name for i in spec.description.input] == ["input"]
        assert [o.name for o in spec.description.output] == ["landmarks"]
        assert spec.description.input[0].type.WhichOneof("Type") == kind
        embedded = json.loads(spec.description.metadata.userDefined["facemark_manifest"])
        assert embedded["scheme"]["num_points"] == 106


def test_tampered_artifact_is_refused(exported, tmp_path):
    export_dir = tmp_path / "export"
    shutil.copytree(exported / "export", export_dir)
    with open(export_dir / "model_fp32.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        verify_artifact(export_dir, "onnx_fp32")
    (export_dir / "model_fp32_baked.mlpackage" / "Manifest.json").write_text("{}")
    with pytest.raises(ArtifactError, match="does not match the manifest"):
        verify_artifact(export_dir, "coreml_fp32_baked")
    assert verify_artifact(export_dir, "coreml_fp16").name == "model_fp16.mlpackage"


def test_failing_format_leaves_no_file_and_others_continue(tmp_path, monkeypatch, capsys):
    import facemark.convert.coreml as coreml

    def broken_check(*args, **kwargs):  # fails after the package was copied to its temporary name
        raise RuntimeError("spec check exploded on purpose\nsecond line")

    monkeypatch.setattr(coreml, "check_spec", broken_check)
    run = make_run(tmp_path)
    assert export_run(run, formats=["coreml", "onnx"], data_root=None, bake=False, golden=False) == 1
    export_dir = run / "export"
    assert sorted(p.name for p in export_dir.iterdir()) == ["manifest.json", "model_fp32.onnx"]
    assert set(load_manifest(export_dir).artifacts) == {"onnx_fp32"}
    out = capsys.readouterr().out
    assert "coreml_fp32: RuntimeError: spec check exploded on purpose" in out and "second line" not in out
    assert "coreml_fp16: RuntimeError: spec check exploded on purpose" in out


def test_unknown_format_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid: onnx, tflite, coreml, all"):
        resolve_formats(["tflight"], ["onnx"])
    assert [f.name for f in resolve_formats(["all"], [])] == list(FORMATS)
    assert [f.name for f in resolve_formats(None, ["coreml", "onnx"])] == ["onnx", "coreml"]


def test_user_errors(tmp_path):
    with pytest.raises(ArtifactError, match="checkpoint not found"):
        export_run(tmp_path / "nothing", formats=["onnx"], data_root=None, bake=False, golden=False)
    run = make_run(tmp_path)
    with pytest.raises(DataError, match="elsewhere: dataset root not found"):
        export_run(run, formats=["onnx"], data_root=tmp_path / "elsewhere", bake=False, golden=False)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(DataError, match="no val or test split"):
        export_run(run, formats=["onnx"], data_root=tmp_path / "elsewhere", bake=False, golden=False)
    export_dir = run / "export"
    assert export_run(run, formats=["onnx"], data_root=None, bake=False, golden=False) == 0
    manifest = load_manifest(export_dir)
    contract = manifest.contract   # made a whole 68-point contract
    manifest.contract = dataclasses.replace(contract, scheme=load_scheme("ibug68").facts(),
                                            output=dataclasses.replace(contract.output, values=136))
    save_manifest(export_dir, manifest)
    with pytest.raises(ArtifactError, match="made for scheme 'ibug68'"):
        export_run(run, formats=["onnx"], data_root=None, bake=False, golden=False)


def test_cli_export_onnx_sweeps_what_a_killed_export_left(tmp_path, capsys):
    """A SIGKILL between atomic_path's temporary and its rename leaves `.NAME.*.partial` behind
    (seen when the pipeline test's kill landed on a manifest write): the next export removes it."""
    from facemark.cli import main

    run = make_run(tmp_path)
    leftovers = [run / "export" / ".manifest.json.x1.partial", run / "export" / ".model_fp32.mlpackage.x2.partial"]
    leftovers[0].parent.mkdir()
    leftovers[0].write_text("{")
    (leftovers[1] / "Data").mkdir(parents=True)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert "onnx_fp32" in capsys.readouterr().out
    assert not any(path.exists() for path in leftovers) and not list(run.rglob("*.partial"))
    assert main(["export", str(tmp_path / "missing")]) == 2


@pytest.fixture(scope="module")
def exported_tflite(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("tflite"))
    assert export_run(run, formats=["tflite"], data_root=None, bake=True, golden=False) == 0
    return run


@pytest.mark.slow
def test_tflite_float32_float16_and_baked(exported_tflite):
    from facemark.convert.tflite import read_tflite_metadata

    export_dir = exported_tflite / "export"
    manifest = load_manifest(export_dir)
    assert set(manifest.artifacts) == {"tflite_fp32", "tflite_fp16", "tflite_fp32_baked", "tflite_fp16_baked"}
    model, _, _ = load_checkpoint(exported_tflite / "best.pt")
    crops = crops_of(exported_tflite)
    norm = weights_source(model).norm
    expected = TorchRunner(model, crops.shape[1], norm).predict(crops)
    for precision, tag in (("float32", "fp32"), ("float16", "fp16")):
        entry = manifest.artifacts[f"tflite_{tag}"]
        assert entry.layout == "NHWC" and entry.input.shape == (1, SIZE, SIZE, 3)
        assert entry.status == Status.VERIFIED
        below(f"export: tflite_{tag} recorded parity", entry.parity["max_abs"], PARITY_BOUND[precision])
        path = verify_artifact(export_dir, f"tflite_{tag}", manifest)
        actual = create_runner("tflite", path, Feed.of(entry), SIZE, norm).predict(crops)
        below(f"export: tflite_{tag} parity from the file", np.abs(actual - expected).max(), PARITY_BOUND[precision])
        baked_entry = manifest.artifacts[f"tflite_{tag}_baked"]
        baked_path = verify_artifact(export_dir, f"tflite_{tag}_baked", manifest)
        baked = create_runner("tflite", baked_path, Feed.of(baked_entry), SIZE, norm)
        raw = baked.raw_outputs(crops).reshape(len(crops), -1, 2)   # crop pixels
        np.testing.assert_allclose(raw, denormalise(actual, SIZE), atol=PARITY_BOUND[precision] * SIZE)
        embedded = read_tflite_metadata(path)
        assert embedded["checkpoint"]["sha256"] == manifest.contract.checkpoint.sha256
        assert embedded["artifact"]["precision"] == precision
    fp32 = manifest.artifacts["tflite_fp32"].size_bytes
    assert manifest.artifacts["tflite_fp16"].size_bytes < 0.6 * fp32


def test_dynamic_batch_onnx_and_onnx2tf_shape_argument(tmp_path):
    import onnxruntime as ort

    from facemark.convert.onnx import export_onnx
    from facemark.convert.tflite import _batch_args

    cfg = load_config(None, OVERRIDES)
    model = perturbed_model(cfg, 106)
    path = export_onnx(model, tmp_path / "dynamic.onnx", SIZE, cfg.export.opset, dynamic_batch=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": batch})[0], expected, atol=PARITY_BOUND["float32"])
    # onnx2tf's `-b 1` fails on a dynamic batch axis; the driver pins it with -ois instead
    assert _batch_args(path, []) == ["-ois", f"input:1,3,{SIZE},{SIZE}"]
    assert _batch_args(path, ["-ois", "input:1,3,64,64"]) == []
    static = export_onnx(model, tmp_path / "static.onnx", SIZE, cfg.export.opset)
    assert _batch_args(static, []) == []
