"""Shared test settings (single-threaded torch for stable timings on 2 shared cores, no hub access)
and the fixtures several test files use; helpers they share are modules beside this one
(drawn_faces.py, java_core.py, margins.py).

FACEMARK_TEST_THREADS changes torch's thread count, for the margin audit (benchmarks/test_margins.py)."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("FACEMARK_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def core_classes(tmp_path_factory) -> Path:
    """android-demo/core compiled with javac (tests/java_core.py), once per test module."""
    from java_core import compile_core

    return compile_core(tmp_path_factory.mktemp("core_classes"))


# ---------------------------------------------------------------- the bad-input catalogue's runs
# (tests/test_bad_*.py, test_interruptions.py): a tiny synthetic dataset and untrained 64 px runs


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Path:
    from cli_errors import COUNTS

    from facemark.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("bad") / "synth"
    generate_dataset(root, scheme="lapa106", counts=COUNTS, seed=3)
    return root


@pytest.fixture()
def data(clean_data, tmp_path) -> Path:
    """A private copy each case may break."""
    root = tmp_path / "data"
    shutil.copytree(clean_data, root)
    return root


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory, clean_data) -> Path:
    """A run folder with an untrained 64 px MobileNetV3-L checkpoint on the synthetic data."""
    from facemark.config import load_config
    from facemark.data.fingerprint import fingerprint_split
    from facemark.data.layout import SPLITS
    from facemark.model import build_model, checkpoint_dict

    run = tmp_path_factory.mktemp("run") / "run"
    run.mkdir()
    cfg = load_config(overrides=["model.pretrained=false", "data.input_size=64", "data.detector=synth",
                                 "export.formats=[onnx]", "export.parity_images=2"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 106).eval()
    fingerprints = {split: fingerprint_split(clean_data, split, cfg.data) for split in SPLITS}  # as train records
    torch.save(checkpoint_dict(model, cfg, epoch=1, val_nme=None, data_root=str(clean_data),
                               data_fingerprint=fingerprints), run / "best.pt")
    return run


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, ckpt_run) -> Path:
    """ckpt_run with an ONNX export (the cheapest format) and its manifest."""
    from facemark.cli import main

    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(ckpt_run, run)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    return run


@pytest.fixture()
def run_copy(exported_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    return run
