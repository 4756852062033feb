"""Run-folder checkpoints: RUN/best.pt (lowest val NME), RUN/last.pt (everything to resume).

Both start with facemark.model.checkpoint_dict (weights of the EMA model when train.ema is on,
config, scheme, epoch, val_nme, data_root). last.pt adds: optimizer, scheduler, scaler, ema,
train_model (the raw weights when EMA is on), rng (torch, cuda, numpy, python), best_val_nme,
best_epoch. Only tensors and plain Python values, so torch.load(weights_only=True) reads them.
Writes are atomic: torch.save to a temporary name, then a rename.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facemark.config import Config, config_from_saved
from facemark.errors import ArtifactError, FacemarkError
from facemark.io import atomic_path

BEST = "best.pt"
LAST = "last.pt"
# Changing one of these makes the saved weights or optimiser state meaningless for the run.
RESUME_KEYS = ("model.arch", "data.scheme", "data.input_size")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash leaves the old file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


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


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def check_resume_config(saved: dict[str, Any], cfg: Config, path: Path) -> list[str]:
    """Refuse to resume under a config that changes arch, scheme or input size; return the other
    changed keys (e.g. more epochs) so the caller can report them. A key added to facemark after
    `saved` was written counts as unchanged at its base.yaml default (config_from_saved)."""
    saved = config_from_saved(saved, source=str(path)).to_dict()
    current = cfg.to_dict()
    blocking = [key for key in RESUME_KEYS if _lookup(saved, key) != _lookup(current, key)]
    if blocking:
        changes = ", ".join(f"{k}: {_lookup(saved, k)!r} -> {_lookup(current, k)!r}" for k in blocking)
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
