"""Shared by the head tests: save a model as a run, export it to ONNX and TFLite, check both float rows."""

from __future__ import annotations

from pathlib import Path

import torch

from facemark.config import Config, save_config
from facemark.convert.export import export_run
from facemark.manifest import load_manifest
from facemark.model import checkpoint_dict


def assert_float_exports_verified(model: torch.nn.Module, cfg: Config, data_root: Path, run: Path) -> None:
    """RUN/best.pt + config.yaml from `model`, `facemark export` to onnx and tflite: both fp32 rows verified."""
    run.mkdir()
    torch.save(checkpoint_dict(model.eval(), cfg, data_root=str(data_root)), run / "best.pt")
    save_config(cfg, run / "config.yaml")
    assert export_run(run, formats=["onnx", "tflite"], data_root=None, bake=False, golden=False) == 0
    artifacts = load_manifest(run / "export").artifacts
    for name in ("onnx_fp32", "tflite_fp32"):
        assert artifacts[name].status == "verified", (name, artifacts[name].status)
