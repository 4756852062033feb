"""`facemark train`: the paper's recipe (timm backbone, MSE or Wing on normalised crop coordinates,
AdamW + cosine with linear warm-up, optional EMA), per-epoch validation NME, best/last checkpoints,
exact resume, and DDP under torchrun. The epoch loop itself is train/loop.py's (`facemark qat` runs
it too); this module builds the run and is its hooks (EngineHooks).

    facemark train --config configs/arch/mobilenetv3_large_100.yaml --data ROOT --run RUN
    torchrun --nproc-per-node 2 -m facemark -- train --config ... --data ROOT --run RUN

(the `--` keeps torchrun from reading facemark's --run as an abbreviation of its --run-path.)

RUN/ gets config.yaml (the resolved config), best.pt, last.pt, metrics.jsonl (one line per epoch:
epoch, train_loss, val_nme, lr, seconds, threads: train.threads), data_fingerprint.json (which faces: see
facemark.data.fingerprint; also in every checkpoint) and, when tensorboard is installed,
TensorBoard events. RUN/.facemark.lock is held while training (facemark.runlock).
Interrupted (Ctrl-C, SIGTERM) in the middle of an epoch, a single process saves last.pt after the
step it was in (facemark.interrupt defers the signal to the end of a step) and --resume continues
with the next step, to the same weights as an uninterrupted run.
With several processes, rank 0 validates, writes and shows progress; train.batch_size is the
global batch, split evenly over the processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from facemark.config import Config, save_config
from facemark.data.fingerprint import fingerprint_samples, fingerprint_split, record_run_data, warn_if_changed
from facemark.errors import ConfigError
from facemark.io import sweep_partials
from facemark.model import (build_model, checkpoint_dict, checkpoint_source, extra_points, keep_frozen_eval,
                            weights_source)
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.schemes import Scheme, load_scheme
from facemark.train import checkpoint as ckpt_io
from facemark.train.data import TrainLoader, training_dataset, validation_crops
from facemark.train.loop import Loop, Process, TrainState, append_metrics, run_epochs, trim_metrics
from facemark.train.threads import thread_budget, training_threads
from facemark.train.validation import mean_shape_nme, validate_epoch
from facemark.train.multiset import ExtraSchemes, epoch_teacher, training_loss
from facemark.train.selftrain import Teacher



def train(cfg: Config, data_root: Path, run_dir: Path, resume: bool, stop_after: int | None = None) -> dict:
    """Train (or resume) the run in `run_dir` on the dataset at `data_root` -> final metrics:
    epoch, train_loss, val_nme, best_val_nme, best_epoch, mean_shape_val_nme, seconds.

    `stop_after` ends this call after that many epochs in total (the run stays resumable), for
    time-boxed jobs and the resume test; None trains to train.epochs.
    """
    data_root, run_dir = Path(data_root), Path(run_dir)
    # rank 0 is the one writer of the run folder; the other DDP processes only compute
    writer = hold_run_lock(run_dir, "train") if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with writer, training_threads(thread_budget(cfg)):
        process = _init_process(cfg.train.device)
        try:
            return _train(cfg, data_root, run_dir, resume, stop_after, process)
        finally:
            if process.world_size > 1:
                dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """train.device (config.DEVICES, checked when the config loads): auto (CUDA when available,
    else CPU), cpu or cuda."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but torch sees no CUDA device (use auto or cpu)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _init_process(device_name: str) -> Process:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; with WORLD_SIZE > 1 join the process group
    (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Process(rank, world_size, local_rank, device)


def _build_state(cfg: Config, num_points: int, device: torch.device, saved: dict[str, Any] | None) -> TrainState:
    """Model, optimiser, scaler, EMA (the schedule comes with the data: see _build_scheduler).
    Resuming (`saved`), the weights source recorded in last.pt is kept and no ImageNet weights
    are looked up (they are overwritten by checkpoint.restore)."""
    from timm.optim import create_optimizer_v2
    from timm.utils import ModelEmaV3

    torch.manual_seed(cfg.train.seed)   # identical initial weights in every process and on resume
    source = checkpoint_source(saved, "last.pt") if saved is not None else None
    model = build_model(cfg.model, num_points, source=source, input_size=cfg.data.input_size,
                        rle=cfg.train.loss == "rle", extra_points=extra_points(cfg),
                        covariance=cfg.train.loss == "star").to(device)
    if cfg.train.channels_last:   # before the optimiser and EMA copy, so their tensors share the layout
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(model, opt=cfg.train.optimizer, lr=cfg.train.lr,
                                    weight_decay=cfg.train.weight_decay)
    # warmed up: a fixed 0.999 would keep most of the ImageNet-initialised weights for the first
    # thousand steps, longer than a whole CPU run; the decay climbs to ema_decay instead
    ema = ModelEmaV3(model, decay=cfg.train.ema_decay, use_warmup=True) if cfg.train.ema else None
    scaler = torch.amp.GradScaler(device.type, enabled=_use_amp(cfg, device))
    return TrainState(model, optimizer, None, scaler, ema)


def _build_scheduler(cfg: Config, state: TrainState, steps_per_epoch: int) -> None:
    """timm's scheduler for train.scheduler, moved per optimiser step or per epoch (train.lr_update;
    plateau reacts to validation, so it always moves per epoch)."""
    from timm.scheduler import create_scheduler_v2

    per_step = cfg.train.lr_update == "step" and cfg.train.scheduler != "plateau"
    state.steps_per_epoch = steps_per_epoch
    state.scheduler, _ = create_scheduler_v2(state.optimizer, sched=cfg.train.scheduler,
                                             num_epochs=cfg.train.epochs, warmup_epochs=cfg.train.warmup_epochs,
                                             plateau_mode="min", step_on_epochs=not per_step,
                                             updates_per_epoch=steps_per_epoch if per_step else 0)


def _use_amp(cfg: Config, device: torch.device) -> bool:
    return cfg.train.amp and device.type == "cuda"


def _train(cfg: Config, data_root: Path, run_dir: Path, resume: bool, stop_after: int | None,
           process: Process) -> dict:
    log = print if process.is_main else (lambda *args, **kwargs: None)
    ckpt_io.check_run_dir(run_dir, resume)
    saved, changed = _resumed(run_dir, cfg, log) if resume else (None, [])
    scheme = load_scheme(cfg.data.scheme)
    # the model first: a bad arch, weights file or freeze count is reported before data is read
    state = _build_state(cfg, scheme.num_points, process.device, saved)
    source = weights_source(state.model)
    log(f"weights: {source.origin} ({source.detail}); input {source.norm}")
    dataset = training_dataset(data_root, cfg, source.norm, log)
    loader = TrainLoader(dataset, cfg, process.rank, process.world_size, pin_memory=process.device.type == "cuda")
    _build_scheduler(cfg, state, len(loader))
    if saved is not None:
        ckpt_io.restore(state, saved, changed)
    val_set = validation_crops(data_root, cfg) if process.is_main else None
    extras = ExtraSchemes(cfg, process.is_main)   # data.sets: a head and a val split each
    if saved is not None:
        extras.restore(saved)
    baseline = mean_shape_nme(dataset.samples, val_set, scheme, cfg) if process.is_main else float("nan")
    fingerprints = _open_run(run_dir, cfg, data_root, dataset, val_set, baseline, saved, state.epoch, log) \
        if process.is_main else None
    loop = Loop(state, _wrap(state.model, process), loader, training_loss(cfg, state.model, extras.maps), process,
                cfg.train.epochs, cfg.train.channels_last, _use_amp(cfg, process.device))
    hooks = EngineHooks(loop, cfg, data_root, run_dir, scheme, val_set, fingerprints, extras, log,
                        _tensorboard(run_dir) if process.is_main else None, saved["val_nme"] if saved else None)
    try:
        record = run_epochs(loop, hooks, min(cfg.train.epochs, stop_after or cfg.train.epochs))
    finally:
        loader.close()   # its persistent workers end now, whatever stopped the epochs
        if hooks.writer is not None:
            hooks.writer.close()
    return _summary(state, record or {"val_nme": hooks.val_nme}, baseline, run_dir)


@dataclass
class EngineHooks:
    """`facemark train`'s part of the epoch loop (train/loop.py): validation of the main and extra
    schemes, label transfer, self-training's teacher, RUN's metrics line, checkpoints and log."""

    loop: Loop
    cfg: Config
    data_root: Path
    run_dir: Path
    scheme: Scheme
    val_set: Any                     # the val CropSet (rank 0; None elsewhere)
    fingerprints: dict[str, Any] | None
    extras: ExtraSchemes
    log: Callable[..., None]
    writer: Any                      # a TensorBoard SummaryWriter or None
    val_nme: float | None            # the last validated epoch's (what an interrupted last.pt records)
    label: str = "epoch"

    def start_epoch(self, epoch: int) -> Teacher | None:
        return epoch_teacher(self.cfg, self.loop.state.eval_model, epoch)

    def train_mode(self) -> None:
        self.loop.model.train()
        keep_frozen_eval(self.loop.state.model)

    def validate(self) -> float:
        return validate_epoch(self.loop.state.eval_model, self.val_set, self.scheme, self.cfg, self.loop.process)

    def end_epoch(self, record: dict[str, Any], improved: bool) -> None:
        state, process, extras = self.loop.state, self.loop.process, self.extras
        self.val_nme = record["val_nme"]
        if process.is_main:
            extras.validate(state.eval_model, record, process.device)
            if extras.transfer_due(state.epoch):   # before last.pt, which keeps the maps
                extras.fit_transfer(state.eval_model, self.data_root, self.val_set, process.device, self.run_dir,
                                    self.log)
            self._write(record, improved)
        if extras.transfer_due(state.epoch) and process.world_size > 1:
            extras.share_maps(process.device)

    def save_interrupted(self) -> None:
        if self.loop.process.is_main:
            ckpt_io.save_interrupted(RunDir(self.run_dir).last, self.loop.state, self.cfg, self._common(),
                                     self.loop.process.world_size, self.log)

    def _write(self, record: dict[str, Any], improved: bool) -> None:
        """Rank 0: the metrics.jsonl line, best.pt when val NME improved, last.pt always, TensorBoard.

        The metrics line comes first: a run interrupted before last.pt is saved drops it on resume
        (lines after the checkpoint's epoch are trimmed), while one interrupted after last.pt keeps it.
        """
        state, run = self.loop.state, RunDir(self.run_dir)
        append_metrics(run.metrics, record)
        extras_line = self.extras.save_best(state.eval_model, self.run_dir, record)
        if improved:
            ckpt_io.save_checkpoint(run.best, checkpoint_dict(state.eval_model, self.cfg, **self._common()))
        ckpt_io.save_last(run.last, state, self.cfg, self._common())
        if self.writer is not None:
            for key in ("train_loss", "val_nme", "lr"):
                self.writer.add_scalar(key, record[key], record["epoch"])
        self.log(f"epoch {record['epoch']}/{self.cfg.train.epochs}  train_loss {record['train_loss']:.5f}  "
                 f"val_nme {record['val_nme']:.4f}  lr {record['lr']:.2e}  {record['seconds']:.1f} s"
                 + ("  (best)" if improved else "") + extras_line)

    def _common(self) -> dict[str, Any]:
        """What best.pt and last.pt record beside the weights after state.epoch epochs (with
        data.sets, each extra scheme's best val NME and epoch)."""
        return {"epoch": self.loop.state.epoch, "val_nme": self.val_nme, "data_root": str(self.data_root),
                "data_fingerprint": self.fingerprints, **self.extras.state()}


def _summary(state: TrainState, record: dict[str, Any], baseline: float, run_dir: Path) -> dict[str, Any]:
    """What train() returns: where the run stands after its last epoch."""
    return {"epoch": state.epoch, "train_loss": record.get("train_loss"), "val_nme": record.get("val_nme"),
            "best_val_nme": state.best_val_nme, "best_epoch": state.best_epoch,
            "mean_shape_val_nme": baseline, "run_dir": str(run_dir)}


def _resumed(run_dir: Path, cfg: Config, log) -> tuple[dict[str, Any], list[str]]:
    """RUN/last.pt, checked against `cfg` -> (the checkpoint, the config keys that changed)."""
    saved = ckpt_io.load_checkpoint_file(RunDir(run_dir).last)
    changed = ckpt_io.check_resume_config(saved["config"], cfg, RunDir(run_dir).last)
    steps = ckpt_io.interrupted_progress(saved, changed).steps
    log(f"resuming {run_dir} after epoch {saved['epoch']}" + (f", step {steps}" if steps else "")
        + (f" (changed: {', '.join(changed)})" if changed else ""))
    return saved, changed


def _open_run(run_dir: Path, cfg: Config, data_root: Path, dataset, val_set, baseline: float,
              saved: dict[str, Any] | None, completed: int, log) -> dict[str, Any]:
    """The main process's start: the run folder and its data record written, what the run trains
    on said -> the data fingerprints (_record_data)."""
    _prepare_run_dir(run_dir, cfg, completed)
    fingerprints = _record_data(data_root, run_dir, dataset.samples, cfg, saved)
    log(f"{len(dataset)} training faces, {len(val_set)} validation faces; mean-shape val NME "
        f"{baseline:.4f} (the score of predicting the mean training face)")
    log(f"threads: {torch.get_num_threads()} for the model, {cfg.data.workers} data workers "
        f"(train.threads, data.workers)")
    return fingerprints


def _wrap(model: nn.Module, process: Process) -> nn.Module:
    if process.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [process.local_rank] if process.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _prepare_run_dir(run_dir: Path, cfg: Config, completed: int) -> None:
    """config.yaml beside the weights; on resume, drop metrics of epochs after the checkpoint and
    what a killed run left half-written."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sweep_partials(run_dir)
    save_config(cfg, RunDir(run_dir).config)
    trim_metrics(RunDir(run_dir).metrics, completed)


def _record_data(data_root: Path, run_dir: Path, samples, cfg: Config, saved: dict[str, Any] | None
                 ) -> dict[str, dict[str, Any]]:
    """Fingerprint the training faces, the val split and the held-out splits into
    RUN/data_fingerprint.json -> {split: fingerprint}; on resume, warn if the data changed."""
    used = {"train": fingerprint_samples(data_root, "train", samples, cfg.data),
            "val": fingerprint_split(data_root, "val", cfg.data)}
    fingerprints = record_run_data(run_dir, data_root, used, cfg.data)
    before = (saved or {}).get("data_fingerprint") or {}
    for split in used:
        warn_if_changed(before.get(split), fingerprints[split], "the data this run was trained on so far")
    return fingerprints


def _tensorboard(run_dir: Path):
    """A SummaryWriter in RUN/tensorboard when the tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
