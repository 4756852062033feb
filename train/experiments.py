"""Shared by `facemark benchmark` and `facemark ablate`: one experiment = one config trained in its
own run folder and evaluated on a split, reusing whatever a previous invocation finished.

A run folder is pinned to its resolved config and dataset (RUN/experiment.json), so a re-run with
another budget or config is refused, before anything trains, instead of silently mixing two
experiments; delete the folder or choose another --out to start over. Training is skipped when
RUN/last.pt has reached train.epochs (resumed from last.pt when it has not), and evaluation is
skipped when RUN/metrics_<split>.json was computed from the current best.pt.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


from facemark.config import Config, config_from_saved, load_config
from facemark.errors import ConfigError, FacemarkError
from facemark.io import atomic_write_text, sha256_of
from facemark.rundir import RunDir
from facemark.train.checkpoint import training_done

PIN_NAME = "experiment.json"


@dataclass(frozen=True)
class Budget:
    """Optional reductions of the configs' training budget; None keeps the config's value."""

    epochs: int | None = None
    input_size: int | None = None
    limit: int | None = None

    def overrides(self) -> list[str]:
        keys = {"epochs": "train.epochs", "input_size": "data.input_size", "limit": "data.limit"}
        return [f"{keys[name]}={value}" for name, value in asdict(self).items() if value is not None]

    @property
    def reduced(self) -> bool:
        return any(value is not None for value in asdict(self).values())

    def describe(self) -> str:
        """'full budget (as configured)' or 'reduced budget: epochs=2, input_size=64, limit=100'."""
        if not self.reduced:
            return "full budget (as configured)"
        return "reduced budget: " + ", ".join(f"{k}={v}" for k, v in asdict(self).items() if v is not None)

    def to_dict(self) -> dict:
        return {**asdict(self), "reduced": self.reduced, "description": self.describe()}


def expand_configs(paths: list[Path]) -> list[Path]:
    """Config files from files and folders (a folder contributes its *.yaml, sorted by name);
    two configs with the same file name would share a run folder, so that is an error."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = sorted(path.glob("*.yaml"))
            if not found:
                raise ConfigError(f"{path}: no *.yaml config files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: config file or folder not found")
    stems = [f.stem for f in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ConfigError(f"configs share the name {', '.join(duplicates)} (each names its run folder); "
                          f"rename one")
    return files


@dataclass(frozen=True)
class Experiment:
    name: str             # the config file's stem, also the run folder's name
    config_path: Path
    cfg: Config
    run_dir: Path


def prepare_experiments(paths: list[Path], overrides: list[str], budget: Budget, out_dir: Path,
                        data_root: Path) -> list[Experiment]:
    """Resolve every config (file merged over base.yaml, then --set overrides, then the budget flags)
    and check that no existing run folder holds another experiment, all before any training, so a
    typo or a changed budget stops the command at once and leaves earlier reports untouched."""
    experiments = [Experiment(path.stem, path, load_config(path, list(overrides) + budget.overrides()),
                              Path(out_dir) / "runs" / path.stem) for path in expand_configs(paths)]
    for experiment in experiments:
        _check_pin(experiment.run_dir, _pin_record(experiment.cfg, data_root))
    return experiments


def _pin_record(cfg: Config, data_root: Path) -> dict:
    return {"config": cfg.to_dict(), "data_root": str(Path(data_root).resolve())}


def _check_pin(run_dir: Path, pinned: dict) -> None:
    path = run_dir / PIN_NAME
    if not path.is_file():
        return
    previous = json.loads(path.read_text())
    # a key added to facemark since the pin was written takes its base.yaml default, which by rule
    # reproduces the behaviour from before it (as for a checkpoint): not a change of experiment
    previous["config"] = config_from_saved(previous.get("config", {}), origin=str(path)).to_dict()
    if previous != pinned:
        changed = [f"{section}.{key}" for section, values in pinned["config"].items() for key, value
                   in values.items() if previous.get("config", {}).get(section, {}).get(key) != value]
        if previous.get("data_root") != pinned["data_root"]:
            changed.append(f"data root (was {previous.get('data_root')})")
        raise ConfigError(f"{path}: this run folder holds another experiment (changed: {', '.join(changed)}); "
                          f"use another --out or delete {run_dir}")


def _cached_metrics(run_dir: Path, split: str, ckpt: Path) -> dict | None:
    path = run_dir / f"metrics_{split}.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return saved if saved.get("checkpoint", {}).get("sha256") == sha256_of(ckpt) else None


def run_experiment(experiment: Experiment, data_root: Path, split: str) -> tuple[dict, str]:
    """Train (or resume, or reuse) and evaluate one experiment -> (evaluate_checkpoint's dict,
    status: 'trained', 'resumed' or 'reused')."""
    from facemark.train.engine import train
    from facemark.train.evaluate import evaluate_checkpoint

    cfg, run_dir = experiment.cfg, experiment.run_dir
    pinned = _pin_record(cfg, data_root)
    _check_pin(run_dir, pinned)
    atomic_write_text(run_dir / PIN_NAME, json.dumps(pinned, indent=2) + "\n")
    if training_done(run_dir, cfg.train.epochs):
        status = "reused"
    else:
        resume = RunDir(run_dir).last.is_file()
        status = "resumed" if resume else "trained"
        print(f"[{experiment.name}] training {cfg.model.arch} for {cfg.train.epochs} epochs -> {run_dir}")
        train(cfg, data_root=data_root, run_dir=run_dir, resume=resume)
    ckpt = RunDir(run_dir).best
    cached = _cached_metrics(run_dir, split, ckpt)
    if cached is not None:
        return cached, status
    return evaluate_checkpoint(ckpt, data_root=data_root, split=split, out_dir=run_dir), status


def run_all(experiments: list[Experiment], data_root: Path, split: str) -> list[tuple[Experiment, dict, dict | None]]:
    """Run every experiment -> (experiment, row, result) each. The row names the config, run folder,
    arch, input size, epochs and status; a FacemarkError becomes status "failed" with the error and
    result None, so one broken config does not stop the study."""
    outcomes = []
    for experiment in experiments:
        cfg = experiment.cfg
        row = {"name": experiment.name, "config": str(experiment.config_path), "run_dir": str(experiment.run_dir),
               "arch": cfg.model.arch, "input_size": cfg.data.input_size, "epochs": cfg.train.epochs}
        try:
            result, row["status"] = run_experiment(experiment, data_root, split)
        except FacemarkError as exc:
            print(f"[{experiment.name}] failed: {exc}")
            result = None
            row.update(status="failed", error=str(exc))
        outcomes.append((experiment, row, result))
    return outcomes


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
