"""`facemark eval`: an untrained tiny checkpoint on a drawn dataset, numbers checked by recomputation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drawn_faces import make_drawn_split
from margins import DATA_SEED, above
from facemark import codec
from facemark.cli import main
from facemark.config import load_config
from facemark.data.crops import load_crop_set
from facemark.errors import ArtifactError
from facemark.metrics import summarize
from facemark.model import build_model, checkpoint_dict, load_checkpoint
from facemark.schemes import load_scheme
from facemark.runtime import TorchRunner
from facemark.train.evaluate import evaluate_checkpoint

FACES = 6


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn")
    make_drawn_split(root, "test", FACES, detector="drawn", misses=(2,))
    return root


def write_checkpoint(path: Path, data_root: Path, *overrides: str, nan_head: bool = False) -> Path:
    cfg = load_config(overrides=["model.pretrained=false", "model.arch=mobilenetv3_small_050",
                                 "data.input_size=64", "data.detector=drawn", "train.device=cpu", *overrides])
    torch.manual_seed(DATA_SEED)
    model = build_model(cfg.model, load_scheme(cfg.data.scheme).num_points)
    if nan_head:
        with torch.no_grad():
            model.get_classifier().bias[5] = float("nan")
    torch.save(checkpoint_dict(model, cfg, epoch=0, val_nme=None, data_root=str(data_root)), path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, data_root) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("run") / "best.pt", data_root)


def test_evaluate_checkpoint_matches_recomputed_metrics(ckpt, data_root, capsys):
    result = evaluate_checkpoint(ckpt, data_root, "test", out_dir=None)
    metrics_path, plot_path = ckpt.parent / "metrics_test.json", ckpt.parent / "ced_test.png"
    assert json.loads(metrics_path.read_text()) == result
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["data"]["misses"] == 1 and result["data"]["skipped"] == 0 and result["data"]["faces"] == FACES
    assert result["data"]["detector"] == "drawn"
    assert result["checkpoint"]["epoch"] == 0 and result["checkpoint"]["path"] == str(ckpt)

    model, cfg, _ = load_checkpoint(ckpt)
    crop_set = load_crop_set(data_root, "test", cfg.data)
    norm = TorchRunner(model, cfg.data.input_size, batch=4).predict(crop_set.crops)
    assert norm.shape == (FACES, 106, 2) and np.isfinite(norm).all()
    expected = summarize(codec.to_image(norm, crop_set.matrices, 64), crop_set.points, load_scheme("lapa106"))
    metrics = result["metrics"]
    assert metrics["count"] == FACES
    for key in ("nme_pupil", "nme_corner", "auc@0.1", "fr@0.1", "p50", "p99"):
        assert np.isfinite(metrics[key])
        assert metrics[key] == pytest.approx(expected[key], rel=1e-5)
    assert metrics["regions"] == pytest.approx(expected["regions"], rel=1e-5)
    assert np.mean(result["per_face"]["nme_pupil"]) == pytest.approx(metrics["nme_pupil"])
    # an untrained head outputs ~0 (the crop centre), far from the landmarks: a large, finite NME
    above("eval: untrained model NME", metrics["nme_pupil"], 0.3)
    printed = capsys.readouterr().out
    assert "NME inter-pupil" in printed and "1 misses" in printed and f"{metrics['nme_pupil']:.4f}" in printed


def test_batch_size_does_not_change_predictions(ckpt, data_root):
    model, cfg, _ = load_checkpoint(ckpt)
    crop_set = load_crop_set(data_root, "test", cfg.data)
    size = cfg.data.input_size
    np.testing.assert_allclose(TorchRunner(model, size, batch=64).predict(crop_set.crops),
                               TorchRunner(model, size, batch=1).predict(crop_set.crops), atol=1e-5)


def test_cli_eval_writes_to_out(ckpt, data_root, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(ckpt), "--data", str(data_root), "--split", "test", "--out", str(out)]) == 0
    saved = json.loads((out / "metrics_test.json").read_text())
    assert saved["metrics"]["count"] == FACES and (out / "ced_test.png").is_file()


def test_skip_on_miss_is_counted(tmp_path, data_root):
    ckpt = write_checkpoint(tmp_path / "skip.pt", data_root, "data.on_miss=skip")
    result = evaluate_checkpoint(ckpt, data_root, "test", out_dir=tmp_path)
    assert result["data"]["skipped"] == 1 and result["metrics"]["count"] == FACES - 1
    assert "test002" not in result["per_face"]["stems"]


def test_missing_checkpoint_exit_code_2(tmp_path, data_root, capsys):
    missing = tmp_path / "nowhere" / "best.pt"
    assert main(["eval", "--ckpt", str(missing), "--data", str(data_root)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_nan_model_is_refused(tmp_path, data_root, capsys):
    ckpt = write_checkpoint(tmp_path / "nan.pt", data_root, nan_head=True)
    with pytest.raises(ArtifactError, match="NaN"):
        evaluate_checkpoint(ckpt, data_root, "test", out_dir=tmp_path)
    assert not (tmp_path / "metrics_test.json").exists()
    assert main(["eval", "--ckpt", str(ckpt), "--data", str(data_root), "--out", str(tmp_path)]) == 2
    assert "NaN" in capsys.readouterr().err


def test_plots_write_pngs(tmp_path):
    from facemark.plots import plot_ced, plot_panels, plot_scatter

    rng = np.random.default_rng(0)
    curves = {"torch": rng.gamma(4, 0.01, 50), "tflite int8": rng.gamma(4, 0.011, 50)}
    paths = [plot_ced(curves, 0.1, tmp_path / "ced.png"),
             plot_scatter([("onnx", 3.1, 0.052), ("tflite", 2.4, 0.053)], "latency [ms]", "NME",
                          tmp_path / "s.png"),
             plot_panels([("CPU", "ms", [("a", 1.0, 0.05)], None), ("GPU", "ms", [], "no GPU")], "NME",
                         tmp_path / "p.png")]
    for path in paths:
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ced.png", "p.png", "s.png"]   # no temporaries left
