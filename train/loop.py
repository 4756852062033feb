"""The one epoch loop of facemark, run by `facemark train` (train/engine.py) and `facemark qat`
(quantize/qat.py) with their own model, schedule and checkpoints.

A run gives `run_epochs` its `Loop` (the TrainState: model, optimiser, schedule, scaler, EMA,
completed epochs, best val NME and the epoch in progress; its loader, loss and process) and an
`EpochHooks` strategy for what differs: what happens before an epoch's steps (QAT measures its
fake-quant ranges, self-training picks a teacher), how the model is validated, what the end of an
epoch writes, and what an interruption saves. Both verbs so behave the same: optimiser steps run
under facemark.interrupt (a Ctrl-C or SIGTERM lands between two steps, and the hooks save last.pt
after it, from which a resumed run continues with the next step: `EpochProgress`), one progress bar,
one metrics line per epoch (`append_metrics`; lines after a resumed checkpoint trimmed by
`trim_metrics`), and the best epoch judged by validation NME.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from facemark import interrupt
from facemark.errors import DataError
from facemark.io import atomic_write_text
from facemark.train.checkpoint import EpochProgress
from facemark.train.selftrain import Teacher


@dataclass
class Process:
    """Where this process sits in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_CPU = Process(0, 1, 0, torch.device("cpu"))


@dataclass
class TrainState:
    """Everything that changes while training; last.pt holds all of it."""

    model: nn.Module                 # the bare model (never the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any                   # a timm scheduler: step() per epoch, step_update() per optimiser step
    scaler: torch.amp.GradScaler
    ema: Any = None                  # timm.utils.ModelEmaV3 or None
    epoch: int = 0                   # completed epochs
    best_val_nme: float = float("inf")
    best_epoch: int = 0
    steps_per_epoch: int = 0         # optimiser steps in one epoch of this process's shard
    progress: EpochProgress = dataclasses.field(default_factory=EpochProgress)   # the epoch in progress

    @property
    def updates(self) -> int:
        """Optimiser steps completed so far (the per-step schedule's and the EMA warm-up's clock)."""
        return self.epoch * self.steps_per_epoch

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and exported: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model


@dataclass
class Loop:
    """What the loop runs: `model` is what a step calls (state.model, or its DDP wrapper); the loss
    maps (model output, targets[, pseudo-labels]) to a scalar; `loader` is a train.data.TrainLoader."""

    state: TrainState
    model: nn.Module
    loader: Any
    loss_fn: nn.Module
    process: Process
    epochs: int                      # the run's total (progress shows epoch k/epochs)
    channels_last: bool = False      # NHWC batches (train.channels_last)
    use_amp: bool = False            # float16 autocast (CUDA)


class EpochHooks(Protocol):
    """What a verb adds to the loop (see the module docstring)."""

    label: str   # "epoch" or "qat epoch": the progress bar's and the log's word

    def start_epoch(self, epoch: int) -> Teacher | None:
        """Before the steps of `epoch` (0-based) -> the self-training teacher of its batches, or None."""

    def train_mode(self) -> None:
        """Put the model in training mode (called before every epoch's steps)."""

    def validate(self) -> float:
        """Validation NME after an epoch (every process gets the same value)."""

    def end_epoch(self, record: dict[str, Any], improved: bool) -> None:
        """The epoch's record written, checkpoints saved, its line printed."""

    def save_interrupted(self) -> None:
        """An interruption inside an epoch: save what --resume (or the next call) continues from."""


def run_epochs(loop: Loop, hooks: EpochHooks, last: int) -> dict[str, Any] | None:
    """Train epochs state.epoch .. `last` - 1 -> the record of the last one (None if none ran)."""
    state, record = loop.state, None
    for epoch in range(state.epoch, last):
        start, done = time.perf_counter(), state.progress
        done.lr = state.optimizer.param_groups[0]["lr"] if done.lr is None else done.lr
        teacher = hooks.start_epoch(epoch)
        try:
            train_loss = train_epoch(loop, hooks, epoch, teacher)
        except KeyboardInterrupt:   # Ctrl-C or SIGTERM: keep the steps done, then stop
            done.seconds += time.perf_counter() - start
            hooks.save_interrupted()
            raise
        val_nme = hooks.validate()
        state.scheduler.step(epoch + 1, val_nme)
        state.epoch, state.progress = epoch + 1, EpochProgress()
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val_nme": val_nme, "lr": done.lr,
                  "seconds": round(done.seconds + time.perf_counter() - start, 3),
                  "threads": torch.get_num_threads()}
        improved = val_nme < state.best_val_nme
        if improved:
            state.best_val_nme, state.best_epoch = val_nme, epoch + 1
        hooks.end_epoch(record, improved)
    return record


def train_epoch(loop: Loop, hooks: EpochHooks, epoch: int, teacher: Teacher | None) -> float:
    """One pass over this process's shard (the steps after state.progress's, which it advances)
    -> mean training loss over all processes. `teacher`: self-training's, labelling each batch."""
    state, process = loop.state, loop.process
    hooks.train_mode()
    done = state.progress
    batches = loop.loader.epoch(epoch, done.steps)
    bar = tqdm(interrupt.deferred_items(batches), desc=f"{hooks.label} {epoch + 1}/{loop.epochs}", unit="batch",
               leave=False, disable=not process.is_main, total=len(batches), initial=done.steps)
    try:
        for images, targets in bar:
            if loop.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            # a signal arriving during the step is raised after it: weights, optimiser, schedule
            # and EMA always belong to the same step when an interrupted run saves them
            with interrupt.deferred():
                done.in_step = True
                loss = train_step(loop.model, state, images, targets, loop.loss_fn, process.device, loop.use_amp,
                                  step=state.updates + done.steps + 1, teacher=teacher)
                done.steps, done.loss_sum, done.faces = done.steps + 1, done.loss_sum + loss * len(images), \
                    done.faces + len(images)
                done.in_step = False
            bar.set_postfix(loss=f"{loss:.4f}")
    except DataError as exc:   # raised in a DataLoader worker: keep the reader's one-line message
        raise DataError(str(exc).strip().splitlines()[-1].removeprefix("facemark.errors.DataError: ")) from None
    total = torch.tensor([done.loss_sum, done.faces], dtype=torch.float64, device=process.device)
    if process.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])


def train_step(model: nn.Module, state: TrainState, images: torch.Tensor, targets: torch.Tensor,
               loss_fn: nn.Module, device: torch.device, use_amp: bool, step: int, teacher: Teacher | None = None
               ) -> float:
    """Optimiser step number `step` (counted from 1 over the run) on a batch, then the schedule's
    per-step update (a no-op when it moves per epoch) and the EMA's -> the batch's loss.
    With a `teacher` (data.sets' packed targets), the loss also reads its pseudo-labels of the batch."""
    images = images.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
        preds = model(images)
        pseudo = teacher(images, targets[:, -1].round().long()) if teacher is not None else None
    loss = loss_fn(preds.float(), targets) if pseudo is None else loss_fn(preds.float(), targets, pseudo)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step_update(step)
    if state.ema is not None:
        state.ema.update(state.model, step=step)
    return loss.item()


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """One epoch's line of a metrics.jsonl."""
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def trim_metrics(path: Path, completed: int) -> None:
    """Drop the lines of epochs after `completed` from a metrics.jsonl (a resumed run's checkpoint
    is older than a line written before an interruption)."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] <= completed]
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
