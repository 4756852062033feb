"""`facemark benchmark` and `facemark ablate` end to end on drawn faces with a tiny budget, plus
the pieces (budget, config expansion, paper-row matching, model costs) on their own."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from drawn_faces import make_drawn_split
from facemark.cli import main
from facemark.config import load_config
from facemark.errors import ConfigError
from facemark.model import build_model
from facemark.train.ablate import paper_row
from facemark.train.costs import count_gflops, count_params, measure_costs
from facemark.train.experiments import Budget, expand_configs

# Everything a tiny CPU run needs; the budget flags of the test set epochs, input size and limit.
COMMON = """\
model: {{arch: {arch}, pretrained: {pretrained}}}
data: {{detector: drawn, workers: 0}}
train: {{batch_size: 4, warmup_epochs: 0, device: cpu, amp: false{extra}}}
"""
BUDGET_FLAGS = ["--epochs", "1", "--input-size", "64", "--limit", "8"]


def write_config(folder: Path, name: str, arch: str = "mobilenetv3_small_050", pretrained: str = "false",
                 extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(COMMON.format(arch=arch, pretrained=pretrained, extra=extra))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn")
    make_drawn_split(root, "train", 8, detector="drawn", misses=(3,))
    make_drawn_split(root, "val", 4, detector="drawn")
    make_drawn_split(root, "test", 4, detector="drawn", misses=(1,))
    return root


def test_budget_and_config_expansion(tmp_path):
    assert not Budget().reduced and Budget().overrides() == []
    budget = Budget(epochs=2, input_size=64)
    assert budget.overrides() == ["train.epochs=2", "data.input_size=64"]
    assert budget.describe() == "reduced budget: epochs=2, input_size=64"
    a, b = write_config(tmp_path / "x", "b"), write_config(tmp_path / "x", "a")
    assert expand_configs([tmp_path / "x"]) == [b, a]          # sorted by name
    write_config(tmp_path / "y", "a")
    with pytest.raises(ConfigError, match="share the name a"):
        expand_configs([tmp_path / "x", tmp_path / "y"])
    with pytest.raises(ConfigError, match="not found"):
        expand_configs([tmp_path / "nope.yaml"])


@pytest.mark.parametrize("name, value", [("01_baseline_mse", 0.0788), ("wing", 0.0536), ("no_warmup", 0.0807),
                                         ("frozen3", 0.0817), ("no_pretraining", 0.0881),
                                         ("detector_boxes", 0.0884), ("no_rot_colour_aug", 0.0823),
                                         ("no_aug_no_box_shift", 0.0931)])
def test_paper_rows(name, value):
    assert paper_row(name)[1] == value
    assert paper_row("mystery") is None


def test_costs_of_a_tiny_model():
    cfg = load_config(overrides=["model.pretrained=false", "model.arch=resnet18"])
    model = build_model(cfg.model, 106)
    # resnet18 with a 212-way head: 11.18 M backbone + 512 * 212 + 212
    assert count_params(model) == 11_176_512 + 512 * 212 + 212
    # FLOPs scale with the pixel count: 2x the side -> ~4x the FLOPs
    assert count_gflops(model, 128) / count_gflops(model, 64) == pytest.approx(4.0, rel=0.02)
    costs = measure_costs(model, 64, threads=1, warmup=1, runs=3)
    assert costs["cpu_ms"] > 0 and costs["cpu_threads"] == 1 and torch.get_num_threads() == 1
    assert (costs["gpu_ms"] is None) == (not torch.cuda.is_available())


@pytest.mark.slow
def test_benchmark_end_to_end_and_resume(tmp_path, data_root, capsys):
    configs = tmp_path / "arch"
    write_config(configs, "mnv3s")
    write_config(configs, "mnv2", arch="mobilenetv2_050")
    write_config(configs, "needs_weights", arch="resnet18", pretrained="true")   # offline: fails, row kept
    out = tmp_path / "bench"
    argv = ["benchmark", "--configs", str(configs), "--data", str(data_root), "--out", str(out), *BUDGET_FLAGS,
            "--threads", "1", "--warmup", "1", "--runs", "3"]
    assert main(argv) == 1
    rows = {r["name"]: r for r in csv.DictReader((out / "benchmark.csv").open())}
    assert set(rows) == {"mnv3s", "mnv2", "needs_weights"}
    assert rows["needs_weights"]["status"] == "failed" and "pretrained" in rows["needs_weights"]["error"]
    for name in ("mnv3s", "mnv2"):
        row = rows[name]
        assert row["status"] == "trained" and row["input_size"] == "64" and row["epochs"] == "1"
        for key in ("nme_pupil", "params_m", "gflops", "cpu_ms"):
            assert math.isfinite(float(row[key])) and float(row[key]) > 0
        assert int(row["faces"]) == 4
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["budget"] == {"epochs": 1, "input_size": 64, "limit": 8, "reduced": True,
                                 "description": "reduced budget: epochs=1, input_size=64, limit=8"}
    report = (out / "benchmark.md").read_text()
    assert "reduced budget" in report and (torch.cuda.is_available() or "no GPU" in report)
    assert (out / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    best = out / "runs" / "mnv3s" / "best.pt"
    stamp = best.stat().st_mtime_ns
    capsys.readouterr()

    assert main(argv) == 1                                       # second run: nothing retrained
    again = {r["name"]: r for r in csv.DictReader((out / "benchmark.csv").open())}
    assert again["mnv3s"]["status"] == "reused" and best.stat().st_mtime_ns == stamp
    assert again["mnv3s"]["nme_pupil"] == rows["mnv3s"]["nme_pupil"]
    assert "[mnv3s] training" not in capsys.readouterr().out

    report = (out / "benchmark.csv").read_text()
    changed = [a if a != "1" else "2" for a in argv]             # another budget in the same folder:
    assert main(changed) == 2                                    # refused before any training
    error = capsys.readouterr().err
    assert "holds another experiment (changed: train.epochs)" in error and "mnv2" in error
    assert (out / "benchmark.csv").read_text() == report and best.stat().st_mtime_ns == stamp

    pin = out / "runs" / "mnv3s" / "experiment.json"           # written before train.star_omega existed:
    recorded = json.loads(pin.read_text())
    del recorded["config"]["train"]["star_omega"]
    pin.write_text(json.dumps(recorded))
    assert main(argv) == 1 and best.stat().st_mtime_ns == stamp  # its default is that run's behaviour: reused
    assert "[mnv3s] training" not in capsys.readouterr().out


@pytest.mark.slow
def test_ablate_end_to_end(tmp_path, data_root, capsys):
    configs = tmp_path / "ablation"
    write_config(configs, "01_baseline_mse")
    write_config(configs, "02_wing", extra=", loss: wing")
    out = tmp_path / "abl"
    assert main(["ablate", "--config", str(configs), "--data", str(data_root), "--out", str(out),
                 *BUDGET_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | 01_baseline_mse | baseline (MSE) |" in printed and "0.0788" in printed and "0.0536" in printed
    assert "-32.0 %" in printed                                  # the paper's Wing gain vs its baseline
    assert "reduced budget: epochs=1, input_size=64, limit=8" in printed and "LaPa" in printed
    saved = json.loads((out / "ablation.json").read_text())
    nmes = [row["nme_pupil"] for row in saved["rows"]]
    assert len(nmes) == 2 and all(math.isfinite(v) and v > 0 for v in nmes)
    assert saved["rows"][1]["paper"] == ["Wing loss", 0.0536]
    assert (out / "ablation.md").read_text().startswith("# facemark ablate")
    assert (out / "ablation_ced.png").is_file()
