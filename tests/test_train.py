"""`facemark train` end to end on drawn faces: it learns, resumes exactly, refuses what it must, runs DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from facemark import codec
from facemark.cli import main as cli_main
from facemark.config import load_config
from facemark.data.crops import load_crop_set
from facemark.data.layout import list_split, read_landmarks
from facemark.errors import DataError, FacemarkError
from facemark.metrics import nme
from facemark.model import load_checkpoint
from facemark.schemes import load_scheme
from facemark.runtime import TorchRunner
from facemark.train import threads
from facemark.train.engine import train
from facemark.train.threads import thread_budget

sys.path.insert(0, str(Path(__file__).parent))
from drawn_faces import make_drawn_split  # noqa: E402
from margins import DATA_SEED, below  # noqa: E402

SIZE = 64
# Small, from scratch, CPU: a higher rate than the paper's 1e-3 and no warm-up (the recipe itself is
# exercised unchanged otherwise).
COMMON = [f"data.input_size={SIZE}", "data.detector=drawn", "data.workers=0", "model.pretrained=false",
          "train.warmup_epochs=0", "train.device=cpu", "augment.rotate=0", f"train.seed={DATA_SEED}"]
# Eight epochs (192 steps), not three: at three the model sits right at the step where it leaves
# the mean shape (0.83-0.91 of it across seeds, 0.912 on an AMX Xeon against a 0.9 bound), so CPU
# kernels decided the verdict; at six it still spread over 0.33-0.47. At eight it is well past that
# step on every seed, thread count and instruction set tried (benchmarks/test_margins.py; figures in
# docs/testing.md), far below the 0.7 bound, while a model that learns nothing stays
# at ~1.0.
LEARNS = ["model.arch=resnet10t", "train.lr=0.002", "train.batch_size=4", "train.epochs=8"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drawn")
    make_drawn_split(root, "train", 96, misses=(3,), seed=DATA_SEED)
    make_drawn_split(root, "val", 16, seed=DATA_SEED)
    return root


def _mean_shape_nme(root: Path, cfg) -> float:
    """The mean normalised training target (landmark boxes) placed in each validation crop."""
    scheme = load_scheme(cfg.data.scheme)
    targets = []
    for sample in list_split(root, "train"):
        points = read_landmarks(sample.landmarks_path, scheme.num_points)
        matrix = codec.crop_matrix(codec.landmark_box(points), SIZE, cfg.data.margin)
        targets.append(codec.normalise(codec.apply_affine(points, matrix), SIZE))
    val = load_crop_set(root, "val", cfg.data)
    mean = np.broadcast_to(np.mean(targets, axis=0), val.points.shape)
    return float(nme(codec.to_image(mean, val.matrices, SIZE), val.points, scheme).mean())


@pytest.mark.parametrize("cores, workers, local_world, given, expected", [
    (2, 2, 1, None, 1),     # this machine: the two workers take both cores, the model keeps one
    (16, 2, 1, None, 14),
    (16, 2, 4, None, 2),    # four torchrun processes share the 16 cores, each with its 2 workers
    (8, 0, 1, None, 8),
    (2, 2, 1, 3, 3),        # train.threads wins
])
def test_thread_budget_leaves_the_workers_their_cores(monkeypatch, cores, workers, local_world, given, expected):
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    cfg = load_config(overrides=[f"data.workers={workers}", f"train.threads={'null' if given is None else given}"])
    assert thread_budget(cfg) == expected


def test_training_beats_the_mean_shape_and_writes_a_loadable_run(data_root, tmp_path):
    cfg = load_config(overrides=COMMON + LEARNS)
    run = tmp_path / "run"
    result = train(cfg, data_root, run, resume=False)
    baseline = _mean_shape_nme(data_root, cfg)
    assert result["mean_shape_val_nme"] == pytest.approx(baseline, rel=1e-6)
    below("train: best val NME / mean-shape NME", result["best_val_nme"] / baseline, 0.7)

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == list(range(1, 9))
    assert set(lines[0]) == {"epoch", "train_loss", "val_nme", "lr", "seconds", "threads"}
    assert lines[0]["threads"] == thread_budget(cfg)
    below("train: last / first epoch train loss", lines[-1]["train_loss"] / lines[0]["train_loss"], 0.5)
    assert yaml.safe_load((run / "config.yaml").read_text()) == cfg.to_dict()

    # best.pt rebuilds through the public loader and reproduces its recorded val NME
    model, saved_cfg, ckpt = load_checkpoint(run / "best.pt")
    assert saved_cfg == cfg and ckpt["epoch"] == result["best_epoch"] and ckpt["data_root"] == str(data_root)
    val = load_crop_set(data_root, "val", cfg.data)
    preds = TorchRunner(model, SIZE, batch=16).predict(val.crops)
    again = nme(codec.to_image(preds, val.matrices, SIZE), val.points, load_scheme(cfg.data.scheme)).mean()
    assert again == pytest.approx(ckpt["val_nme"], abs=1e-5)
    last = torch.load(run / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng", "scaler", "best_val_nme"} <= set(last)


# train.threads fixed: its default follows data.workers, and kernels split over another thread
# count round differently (the test is about the worker's data, not about kernels)
RESUME = COMMON + ["model.arch=mobilenetv3_small_050", "data.limit=16", "train.batch_size=4", "train.epochs=2",
                   "train.ema=true", "train.ema_decay=0.9", "train.warmup_epochs=1", "train.threads=1"]


@pytest.fixture(scope="module")
def resumed_runs(data_root, tmp_path_factory) -> tuple[Path, Path]:
    """(a run of 2 epochs, the same run stopped after epoch 1 and resumed with a DataLoader worker)."""
    base = tmp_path_factory.mktemp("runs")
    whole, split = base / "whole", base / "split"
    train(load_config(overrides=RESUME), data_root, whole, resume=False)
    with_worker = load_config(overrides=RESUME + ["data.workers=1"])
    train(with_worker, data_root, split, resume=False, stop_after=1)
    assert json.loads((split / "metrics.jsonl").read_text())["epoch"] == 1
    train(with_worker, data_root, split, resume=True)
    return whole, split


def test_resume_reaches_the_uninterrupted_result(resumed_runs):
    whole, split = resumed_runs
    a, b = (torch.load(run / "last.pt", weights_only=True) for run in (whole, split))
    assert a["epoch"] == b["epoch"] == 2
    for key in ("model", "train_model", "ema"):   # EMA weights, raw weights, EMA copy
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=1e-5, atol=1e-6, msg=f"{key}.{name}")
    metrics = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in (whole, split)]
    assert [m["epoch"] for m in metrics[1]] == [1, 2]
    for first, second in zip(*metrics):
        assert first["val_nme"] == pytest.approx(second["val_nme"], rel=1e-5)
        assert first["lr"] == pytest.approx(second["lr"])
    assert metrics[0][0]["lr"] < metrics[0][1]["lr"]    # linear warm-up in epoch 1


def test_refusals(resumed_runs, data_root, tmp_path):
    whole, _ = resumed_runs
    cfg = load_config(overrides=RESUME)
    with pytest.raises(FacemarkError, match=r"whole.*--resume.*another --run"):
        train(cfg, data_root, whole, resume=False)
    with pytest.raises(FacemarkError, match=r"model.arch: 'mobilenetv3_small_050' -> 'resnet10t'"):
        train(load_config(overrides=RESUME + ["model.arch=resnet10t"]), data_root, whole, resume=True)
    with pytest.raises(FacemarkError, match="data.input_size"):
        train(load_config(overrides=RESUME + ["data.input_size=96"]), data_root, whole, resume=True)
    with pytest.raises(FacemarkError, match="nothing to resume"):
        train(cfg, data_root, tmp_path / "empty", resume=True)


def test_cli_refusal_is_one_line_and_exit_code_2(resumed_runs, data_root, capsys):
    whole, _ = resumed_runs
    code = cli_main(["train", "--data", str(data_root), "--run", str(whole), *sum((["--set", o] for o in RESUME), [])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--resume" in err


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(data_root, tmp_path):
    """torchrun with 2 gloo processes: every rank trains its half, rank 0 writes the run.

    The `--` stops torchrun's own parser, which would take `--run` for an abbreviation of its
    --run-path option."""
    run = tmp_path / "ddp"
    overrides = RESUME + ["train.epochs=1", "train.warmup_epochs=0", "data.limit=8", "train.ema=false"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "facemark", "--", "train", "--data", str(data_root), "--run", str(run)]
    command += sum((["--set", item] for item in overrides), [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    model, cfg, ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 1 and cfg.data.limit == 8


def test_bad_training_image_is_named_or_skipped(tmp_path, capsys):
    root = tmp_path / "data"
    make_drawn_split(root, "train", 8)
    make_drawn_split(root, "val", 4)
    broken = root / "train" / "images" / "train005.png"
    broken.write_bytes(broken.read_bytes()[:200])
    tiny = RESUME + ["train.epochs=1", "train.warmup_epochs=0", "train.ema=false", "data.workers=1"]
    with pytest.raises(DataError) as caught:   # decoded in a DataLoader worker, reported as one line
        train(load_config(overrides=tiny), root, tmp_path / "strict", resume=False)
    assert str(caught.value) == f"{broken}: truncated PNG (no IEND chunk)"
    result = train(load_config(overrides=tiny + ["data.skip_bad_samples=true"]), root, tmp_path / "lenient",
                   resume=False)
    assert "skipped 1 bad samples" in capsys.readouterr().out
    assert result["epoch"] == 1 and (tmp_path / "lenient" / "best.pt").is_file()


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    import random

    from facemark.train.checkpoint import restore_rng, rng_state, save_checkpoint

    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    assert [p.name for p in tmp_path.iterdir()] == ["rng.pt"]   # no temporary file left behind


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Table 1 of the paper, in its order: each row changes exactly these keys of the MSE baseline.
ABLATION_CHANGES = {
    "01_baseline_mse": {},
    "02_wing": {"train.loss": "wing"},
    "03_no_warmup": {"train.warmup_epochs": 0},
    "04_frozen3": {"model.freeze_blocks": 3},
    "05_no_pretraining": {"model.pretrained": False},
    "06_detector_only_boxes": {"data.landmark_box_prob": 0.0},
    "07_no_rot_color_aug": {f"augment.{k}": 0.0 for k in ("rotate", "brightness", "contrast", "saturation", "hue")},
    "08_no_aug_no_box_shift": {f"augment.{k}": 0.0 for k in ("rotate", "box_shift", "brightness", "contrast",
                                                             "saturation", "hue")},
}


def _flat(cfg) -> dict:
    return {f"{section}.{key}": value for section, values in cfg.to_dict().items() for key, value in values.items()}


def test_ablation_rows_change_one_thing_each_on_the_mobilenetv3_baseline():
    files = sorted((CONFIGS / "ablation").glob("*.yaml"))
    assert [f.stem for f in files] == list(ABLATION_CHANGES)
    baseline = _flat(load_config(CONFIGS / "ablation" / "01_baseline_mse.yaml"))
    assert baseline["model.arch"] == "mobilenetv3_large_100" and baseline["train.loss"] == "mse"
    for path in files:
        flat = _flat(load_config(path))
        assert {k: v for k, v in flat.items() if baseline[k] != v} == ABLATION_CHANGES[path.stem], path.name


def test_arch_configs_and_demo_load():
    expected = {"resnet18": "mse", "mobilenetv2_100": "mse", "efficientnet_b0": "mse",
                "mobilenetv3_large_100": "mse", "mobilevit_s": "mse", "mobilenetv3_large_100_wing": "wing",
                "efficientnet_b0_wing": "wing", "efficientnet_lite0": "mse", "efficientnet_lite0_wing": "wing"}
    found = {p.stem: load_config(p) for p in (CONFIGS / "arch").glob("*.yaml")}
    assert {name: cfg.train.loss for name, cfg in found.items()} == expected
    tf_ported = {"efficientnet_lite0"}   # TF-trained weights: timm's tf_ variant (see facemark/weights.py)
    for name, cfg in found.items():
        base = name.removesuffix("_wing")
        assert cfg.model.arch == (f"tf_{base}" if base in tf_ported else base)
    demo = load_config(CONFIGS / "demo.yaml")
    assert (demo.model.arch, demo.data.detector, demo.model.pretrained, demo.model.head) == (
        "mobilenetv2_100", "synth", True, "spatial")


REAL_ABLATION_CHANGES = {
    "01_baseline_mse": {},
    "02_wing": {"train.loss": "wing"},
    "03_smooth_l1": {"train.loss": "smooth_l1"},
    "04_l1": {"train.loss": "l1"},
    "05_flip": {"augment.flip": 0.5},
    "06_scale": {"augment.scale": 0.1},
    "07_translate": {"augment.translate": 0.05},
    "08_ema": {"train.ema": True, "train.ema_decay": 0.99},
    "09_per_epoch_lr": {"train.lr_update": "epoch"},
    "10_spatial_head": {"model.head": "spatial"},
    "11_recipe": {"train.loss": "wing", "augment.flip": 0.5, "augment.scale": 0.1, "augment.translate": 0.05,
                  "train.ema": True, "train.ema_decay": 0.998, "model.head": "spatial", "train.epochs": 90,
                  "train.warmup_epochs": 1,
                  # the recipe's int8 settings (quantisation-aware fine-tuning after training)
                  "quantize.qat": True, "quantize.qat_epochs": 5, "quantize.qat_lr": 5e-5},
}


def test_real_face_ablation_rows_change_one_switch_each():
    """configs/ablation/real: the paper's recipe on 300-W (ibug68, MTCNN, MobileNetV2, 128 px), then
    one switch per row, then the CPU recipe (the switches that helped, its schedule)."""
    files = sorted((CONFIGS / "ablation" / "real").glob("*.yaml"))
    assert [f.stem for f in files] == list(REAL_ABLATION_CHANGES)
    baseline = _flat(load_config(files[0]))
    assert {k: baseline[k] for k in ("model.arch", "model.pretrained", "data.scheme", "data.detector",
                                     "data.input_size", "train.loss", "augment.flip", "train.ema")} == {
        "model.arch": "mobilenetv2_100", "model.pretrained": True, "data.scheme": "ibug68", "data.detector": "mtcnn",
        "data.input_size": 128, "train.loss": "mse", "augment.flip": 0.0, "train.ema": False}
    for path in files:
        flat = _flat(load_config(path))
        assert {k: v for k, v in flat.items() if baseline[k] != v} == REAL_ABLATION_CHANGES[path.stem], path.name
    recipe = _flat(load_config(CONFIGS / "real" / "300w_mobilenetv2_cpu.yaml"))
    assert recipe == _flat(load_config(files[-1]))
    assert (recipe["train.epochs"], recipe["train.batch_size"], recipe["train.device"], recipe["data.workers"]) == (
        90, 32, "cpu", 2)


@pytest.mark.parametrize("lr_update", ["step", "epoch"])
def test_warm_up_climbs_within_the_first_epoch_only_per_step(lr_update):
    """train.lr_update=step ramps the first epoch's 10 steps from 1e-5 to lr; `epoch` holds them at 1e-5."""
    from facemark.train.engine import _build_scheduler
    from facemark.train.loop import TrainState

    cfg = load_config(overrides=[f"train.lr_update={lr_update}", "train.epochs=4", "train.warmup_epochs=1",
                                 "train.lr=0.001"])
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
    state = TrainState(model=torch.nn.Linear(1, 1), optimizer=optimizer, scheduler=None, scaler=None)
    _build_scheduler(cfg, state, steps_per_epoch=10)
    lrs = []
    for step in range(1, 11):
        state.scheduler.step_update(step)
        lrs.append(optimizer.param_groups[0]["lr"])
    if lr_update == "step":
        assert lrs[:9] == sorted(lrs[:9]) and lrs[0] < 2e-4 and min(lrs[8:]) > 8e-4
    else:
        assert lrs == [pytest.approx(1e-5)] * 10
    state.scheduler.step(1)
    assert optimizer.param_groups[0]["lr"] > 8e-4    # both are on the cosine near the full rate after it


def test_head_ablation_rows_change_one_switch_each_against_the_shipped_recipe():
    """configs/ablation/heads: the shipped 300-W recipe with one head or loss switched per row (RLE on
    the spatial row: it needs a regression head); the last row is the recipe itself."""
    files = sorted((CONFIGS / "ablation" / "heads").glob("*.yaml"))
    recipe = _flat(load_config(CONFIGS / "real" / "300w_cpu.yaml"))
    assert (recipe["model.head"], recipe["train.loss"], recipe["train.channels_last"]) == ("integral", "wing", True)
    assert recipe["model.grid_coarse"] == "first"
    changes = {"01_spatial": {"model.head": "spatial"},
               "02_spatial_rle": {"model.head": "spatial", "train.loss": "rle"},
               "03_pip": {"model.head": "pip"}, "04_integral_coarse_last": {"model.grid_coarse": "last"},
               "05_integral_coarse_none": {"model.grid_coarse": "none"}, "06_integral": {}}
    assert [f.stem for f in files] == list(changes)
    for path in files:
        flat = _flat(load_config(path))
        assert {k: v for k, v in flat.items() if recipe[k] != v} == changes[path.stem], path.name
    datatang = _flat(load_config(CONFIGS / "real" / "datatang106_cpu.yaml"))
    changed = {k: v for k, v in datatang.items() if recipe[k] != v}
    # trained beside the 300-W faces (the split `make models` writes first), 90 epochs of both sets,
    # STAR loss (better than Wing there, docs/results.md "STAR at the recipes' budget")
    assert changed == {"data.scheme": "datatang106", "train.epochs": 90, "train.loss": "star",
                       "data.sets": [{"root": "data/ibug68", "scheme": "ibug68", "weight": 1.0}]}
