"""Quantising a format needs only that format exported, or nothing (issue: `make export-tflite` then
`make quantize` failed for want of onnx_fp32): quantize exports the float source it lacks, says so
in one line and records it; every "needs an earlier artifact" error names the command that makes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drawn_faces import make_drawn_root, perturbed_model
from facemark.status import Status
from facemark.artifacts import making_command
from facemark.cli import main
from facemark.config import load_config
from facemark.errors import ArtifactError
from facemark.manifest import load_manifest, new_manifest, save_manifest, verify_artifact
from facemark.model import checkpoint_dict
from facemark.schemes import load_scheme
from facemark.weights import IMAGENET

REPO = Path(__file__).resolve().parent.parent
OVERRIDES = ["model.arch=mobilenetv3_small_050", "model.pretrained=false", "data.input_size=64", "data.detector=drawn",
             "quantize.calibration_count=16", "export.parity_images=4", "quantize.mixed=false"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A run with best.pt and nothing exported."""
    root = make_drawn_root(tmp_path_factory.mktemp("drawn"), train=20, val=4)
    run = tmp_path_factory.mktemp("run") / "run"
    run.mkdir()
    cfg = load_config(overrides=OVERRIDES)
    torch.save(checkpoint_dict(perturbed_model(cfg), cfg, data_root=str(root), epoch=0), run / "best.pt")
    return run


def test_missing_artifact_errors_name_the_command(tmp_path, trained_run):
    assert making_command("onnx_fp32", "R") == "facemark export R --format onnx"
    assert making_command("tflite_fp32_baked", "R") == "facemark export R --format tflite --bake-preprocessing"
    assert making_command("tflite_int8_full", "R") == "facemark quantize R --format tflite"
    assert making_command("onnx_int8_qdq_u8s8_qat", "R") == "facemark qat R"
    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    cfg = load_config(overrides=OVERRIDES)
    save_manifest(export, new_manifest(cfg, load_scheme(cfg.data.scheme).facts(), trained_run / "best.pt", IMAGENET))
    with pytest.raises(ArtifactError, match=r"no artifact named 'coreml_fp32' \(known: none\); make it with: "
                                            rf"facemark export {tmp_path / 'run'} --format coreml$"):
        verify_artifact(export, "coreml_fp32")


@pytest.mark.slow
@pytest.mark.parametrize("fmt, int8", [("onnx", ("onnx_int8_qdq_u8s8",)), ("coreml", ("coreml_int8_w8", "coreml_int8_w8a8"))])
def test_export_then_quantize_the_same_format(trained_run, tmp_path, fmt, int8):
    """Exporting a format is all its int8 rows need (tflite, whose source is another format: above)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes((trained_run / "best.pt").read_bytes())
    assert main(["export", run, "--format", fmt]) == 0
    assert main(["quantize", run, "--format", fmt]) == 0
    artifacts = load_manifest(run / "export").artifacts
    assert {entry.format for entry in artifacts.values()} == {fmt}
    for name in int8:
        expected = Status.WRITTEN if fmt == "coreml" and sys.platform != "darwin" else "verified"
        assert artifacts[name].status == expected, name
        assert (run / "export" / artifacts[name].file).exists(), name   # a CoreML .mlpackage is a folder


@pytest.mark.slow
def test_make_export_tflite_then_make_quantize(trained_run, tmp_path):
    """The Makefile's own targets, as a user types them (install is not redone: -o install)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes((trained_run / "best.pt").read_bytes())
    make = ["make", "-C", str(REPO), "-o", "install", f"BIN={Path(sys.executable).parent}", f"RUN={run}"]
    outputs = []
    for target in ("export-tflite", "quantize"):
        done = subprocess.run([*make, target], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs.append(done.stdout)
        if target == "export-tflite":
            assert set(load_manifest(run / "export").artifacts) == {"tflite_fp32", "tflite_fp16"}
    # the TFLite int8 rows start from the float ONNX, which export-tflite did not write: quantize makes it
    assert (f"int8 start from onnx_fp32, which {run / 'export'} lacks: exporting it first "
            f"(facemark export {run} --format onnx)") in outputs[1]
    artifacts = load_manifest(run / "export").artifacts
    for name in ("onnx_fp32", "tflite_int8_full", "tflite_int8_dynamic", "onnx_int8_qdq_u8s8"):
        assert artifacts[name].status == "verified", name
    # CoreML runs on macOS only: elsewhere its artifacts are written and checked, not run
    coreml_status = "verified" if sys.platform == "darwin" else Status.WRITTEN
    for name in ("coreml_fp32", "coreml_int8_w8", "coreml_int8_w8a8"):
        assert artifacts[name].status == coreml_status, name
        assert (run / "export" / artifacts[name].file).exists(), name
