"""Run-folder checkpoints: RUN/best.pt (lowest val NME), RUN/last.pt (everything to resume).

Both start with facemark.model.checkpoint_dict (weights of the EMA model when train.ema is on,
config, scheme, epoch, val_nme, data_root). last.pt adds: optimizer, scheduler, scaler, ema,
train_model (the raw weights when EMA is on), rng (torch, cuda, numpy, python), best_val_nme,
best_epoch, and `interrupted_epoch`: None after a whole epoch, else the EpochProgress of the epoch
an interruption (Ctrl-C, SIGTERM) stopped between two steps, so --resume continues at the next step.
Only tensors and plain Python values, so torch.load(weights_only=True) reads them.
Writes are atomic: torch.save to a temporary name, then a rename.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from facemark.config import Config, config_from_saved
from facemark.errors import ArtifactError, FacemarkError
from facemark.io import atomic_path
from facemark.model import checkpoint_dict
from facemark.rundir import RunDir

if TYPE_CHECKING:
    from facemark.train.loop import TrainState

BEST = RunDir(Path(".")).best.name
LAST = RunDir(Path(".")).last.name
# Changing one of these makes the saved weights or optimiser state meaningless for the run.
RESUME_KEYS = ("model.arch", "data.scheme", "data.input_size")
# Changing one of these changes which faces the steps of an epoch see: an interrupted epoch then
# starts again from its first step (with the weights it had reached).
ORDER_KEYS = ("train.batch_size", "train.seed", "data.limit", "data.skip_bad_samples")


@dataclass
class EpochProgress:
    """The epoch in progress: optimiser steps done, their summed loss (loss x faces) and face
    count, the learning rate it started with and its seconds so far (what metrics.jsonl records)."""

    steps: int = 0
    loss_sum: float = 0.0
    faces: int = 0
    lr: float | None = None
    seconds: float = 0.0
    in_step: bool = False   # a step was cut short (no deferred signal handling): not resumable

    def saved(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if key != "in_step"}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash leaves the old file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def save_last(path: Path, state: TrainState, cfg: Config, common: dict[str, Any]) -> None:
    """last.pt: `common` (epoch, val_nme, data root and fingerprints) and everything --resume needs,
    with the interrupted epoch's progress when steps of it are done."""
    progress = state.progress.saved() if state.progress.steps else None
    save_checkpoint(path, checkpoint_dict(state.eval_model, cfg, **common, **{
        "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "ema": state.ema.module.state_dict() if state.ema is not None else None,
        "train_model": state.model.state_dict() if state.ema is not None else None,
        "rng": rng_state(), "best_val_nme": state.best_val_nme, "best_epoch": state.best_epoch,
        "interrupted_epoch": progress}))


def save_interrupted(path: Path, state: TrainState, cfg: Config, common: dict[str, Any], world_size: int,
                     log: Callable[[str], None]) -> None:
    """Rank 0, interrupted inside an epoch: last.pt after the last whole step, and a log line. Not
    saved when no step is done (last.pt already holds this epoch's start), when a step was cut
    short, or under DDP (the other processes' steps are not known here)."""
    done = state.progress
    if not done.steps:
        return
    where = f"epoch {state.epoch + 1} after step {done.steps}/{state.steps_per_epoch}"
    if done.in_step or world_size > 1:
        log(f"interrupted in {where}: not saved; --resume restarts the epoch")
        return
    started = time.perf_counter()
    save_last(path, state, cfg, common)
    log(f"interrupted in {where}: saved {path} in {time.perf_counter() - started:.1f} s (--resume continues "
        f"with step {done.steps + 1})")


def interrupted_progress(saved: dict[str, Any], changed: list[str]) -> EpochProgress:
    """The steps of the interrupted epoch that last.pt recorded, unless none were or a config key
    that reorders an epoch's faces changed (ORDER_KEYS: the epoch then restarts)."""
    if saved.get("interrupted_epoch") and set(ORDER_KEYS).isdisjoint(changed):
        return EpochProgress(**saved["interrupted_epoch"])
    return EpochProgress()


def restore(state: TrainState, saved: dict[str, Any], changed: list[str]) -> None:
    """Load last.pt into a freshly built state (same config up to `changed` keys)."""
    state.model.load_state_dict(saved["train_model"] if saved.get("train_model") is not None else saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.progress = interrupted_progress(saved, changed)
    schedule_keys = {"train.epochs", "train.scheduler", "train.warmup_epochs", "train.lr", "train.lr_update"}
    if schedule_keys.isdisjoint(changed):
        state.scheduler.load_state_dict(saved["scheduler"])
    else:   # a new schedule length or shape: recompute this step's value on the new curve
        state.scheduler.step(saved["epoch"])
        state.scheduler.step_update(saved["epoch"] * state.steps_per_epoch + state.progress.steps)
    if state.ema is not None:   # EMA switched on at resume: start it from the restored weights
        state.ema.module.load_state_dict(saved["ema"] if saved.get("ema") is not None else state.model.state_dict())
    state.scaler.load_state_dict(saved["scaler"])
    restore_rng(saved["rng"])
    state.epoch, state.best_val_nme, state.best_epoch = saved["epoch"], saved["best_val_nme"], saved["best_epoch"]


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """torch.load(weights_only=True) with a readable ArtifactError for a missing or broken file."""
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:120]})") from None


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Without resume, refuse a run folder that already holds checkpoints; with it, require last.pt."""
    run_dir = Path(run_dir)
    existing = [name for name in (LAST, BEST) if (run_dir / name).exists()]
    if not resume and existing:
        raise FacemarkError(f"{run_dir}: run folder already holds {', '.join(existing)}; pass --resume to "
                            f"continue it, or choose another --run folder")
    if resume and not (run_dir / LAST).is_file():
        raise FacemarkError(f"{run_dir / LAST}: nothing to resume (no last.pt); start the run without --resume")


def _show(values: dict[str, Any], dotted: str) -> str:
    """A config value for the resume error: data.sets by its schemes."""
    if dotted == "data.sets":
        return repr([item["scheme"] for item in values["data"]["sets"]])
    return repr(_lookup(values, dotted))


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def check_resume_config(saved: dict[str, Any], cfg: Config, path: Path) -> list[str]:
    """Refuse to resume under a config that changes arch, scheme or input size; return the other
    changed keys (e.g. more epochs) so the caller can report them. A key added to facemark after
    `saved` was written counts as unchanged at its base.yaml default (config_from_saved)."""
    saved = config_from_saved(saved, origin=str(path)).to_dict()
    current = cfg.to_dict()
    blocking = [key for key in RESUME_KEYS if _lookup(saved, key) != _lookup(current, key)]
    schemes = [[item["scheme"] for item in values["data"]["sets"]] for values in (saved, current)]
    if schemes[0] != schemes[1]:   # one head per set's scheme: other schemes, other weights
        blocking.append("data.sets")
    if blocking:
        changes = ", ".join(f"{k}: {_show(saved, k)} -> {_show(current, k)}" for k in blocking)
        raise FacemarkError(f"{path}: cannot resume, the config changed ({changes}); restore those "
                            f"values or start a new --run folder")
    return [f"{section}.{key}" for section, values in current.items() for key, value in values.items()
            if saved.get(section, {}).get(key) != value]


def rng_state() -> dict[str, Any]:
    """Every global RNG as tensors and plain values (numpy's MT19937 key as an int64 tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    random.setstate(state["python"])


def training_done(run_dir: Path, epochs: int) -> bool:
    """RUN's best.pt exists and its last.pt has completed `epochs` epochs."""
    run = RunDir(run_dir)
    if not (run.last.is_file() and run.best.is_file()):
        return False
    return int(torch.load(run.last, map_location="cpu", weights_only=True).get("epoch", -1)) >= epochs
