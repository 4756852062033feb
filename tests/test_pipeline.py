"""`facemark pipeline`: runs every stage, skips what is up to date, survives SIGKILL mid-way.

A run killed during training and one killed during export are re-run and must end with the same
validation numbers and intact artifacts as an uninterrupted run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facemark.data.synth import generate_dataset
from facemark.manifest import load_manifest, verify_artifact

pytestmark = pytest.mark.slow

CONFIG = """\
_base_: facemark:demo.yaml
data:
  input_size: 64
  workers: 0
train:
  epochs: 3
  batch_size: 8
export:
  formats: [onnx]
  parity_images: 4
quantize:
  formats: [onnx]
  calibration_count: 8
validate:
  warmup: 1
  runs: 3
  max_nme_increase: 10.0
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    generate_dataset(root / "data", scheme="lapa106", counts={"train": 16, "val": 4, "test": 4}, seed=5)
    config = root / "pipeline.yaml"
    config.write_text(CONFIG)
    return root, config


def _command(config: Path, data: Path, run: Path) -> list[str]:
    return [sys.executable, "-u", "-m", "facemark", "pipeline", "--config", str(config), "--data", str(data),
            "--run", str(run)]


def _run(config, data, run) -> subprocess.CompletedProcess:
    return subprocess.run(_command(config, data, run), capture_output=True, text=True, timeout=600)


def _kill_when(config, data, run, ready) -> None:
    """Start the pipeline and SIGKILL it as soon as ready(run) is true."""
    process = subprocess.Popen(_command(config, data, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not ready(run):
        assert process.poll() is None, "pipeline finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _rows(run: Path) -> dict[str, float]:
    report = json.loads((run / "validation" / "validation.json").read_text())
    return {row["name"]: row["accuracy"]["nme_pupil"] for row in report["rows"] if row.get("accuracy")}


@pytest.fixture(scope="module")
def reference(setup):
    root, config = setup
    result = _run(config, root / "data", root / "reference")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return root / "reference", result.stdout


def test_uninterrupted_run_writes_everything(reference, setup):
    run, stdout = reference
    manifest = load_manifest(run / "export")
    names = set(manifest.artifacts)
    assert {"onnx_fp32", "onnx_int8_qdq_u8s8"} <= names
    for name in names:
        verify_artifact(run / "export", name, manifest)
    assert (run / "pipeline.yaml").is_file() and (run / "validation" / "validation.md").is_file()
    assert "artifacts in" in stdout


def test_rerun_skips_up_to_date_stages(reference, setup):
    root, config = setup
    run, _ = reference
    before = (run / "export" / "manifest.json").read_text()
    result = _run(config, root / "data", run)
    assert result.returncode == 0
    for stage in ("train", "export", "quantize"):
        assert f"[pipeline] {stage}: up to date, skipped" in result.stdout
    assert (run / "export" / "manifest.json").read_text() == before


def test_changed_config_is_refused(reference, setup, tmp_path):
    root, config = setup
    run, _ = reference
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("epochs: 3", "epochs: 4"))
    result = _run(other, root / "data", run)
    assert result.returncode == 2 and "train.epochs" in result.stderr


def _exported(run: Path) -> bool:
    """The ONNX export is recorded: the pipeline is in its quantize stage."""
    manifest = run / "export" / "manifest.json"
    return manifest.is_file() and '"onnx_fp32"' in manifest.read_text()


@pytest.mark.parametrize("moment", ["training", "export", "quantize"])
def test_sigkill_then_rerun_matches_uninterrupted(reference, setup, moment):
    """Killed at that moment, the rerun takes over the dead process's lock and ends with what an
    uninterrupted run has: the same validation rows, every artifact matching its sha256."""
    root, config = setup
    run = root / f"killed_{moment}"
    ready = {"training": lambda r: (r / "last.pt").is_file(),   # after the first finished epoch
             "export": lambda r: (r / "export").is_dir(), "quantize": _exported}[moment]
    _kill_when(config, root / "data", run, ready)
    assert not (run / "validation" / "validation.json").exists()
    result = _run(config, root / "data", run)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    expected, got = _rows(reference[0]), _rows(run)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-4), name
    manifest = load_manifest(run / "export")
    for name in manifest.artifacts:
        verify_artifact(run / "export", name, manifest)
    assert not list(run.rglob("*.partial"))
