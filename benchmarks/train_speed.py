"""Training images per second per core of a recipe's model step: forward, loss, backward, AdamW,
schedule and EMA (facemark.train.engine's own step), A/B over memory layouts, interleaved.

    .venv/bin/python benchmarks/train_speed.py --config configs/real/300w_cpu.yaml [--threads 2]
        [--variants nchw channels_last channels_last+bf16] [--rounds 5] [--steps 10]

Batches are fixed random tensors of the recipe's batch size and input size, so the figure is the
model step alone; the data pipeline has its own benchmark (benchmarks/data_pipeline.py) and runs
in DataLoader workers beside it. Each round times every variant once, in turn, so a busy machine
slows all of them alike; the table gives each variant's median over rounds and its ratio to the first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from facemark.config import load_config
from facemark.schemes import load_scheme
from facemark.train.engine import _build_scheduler, _build_state
from facemark.train.loop import train_step
from facemark.train.losses import build_training_loss

VARIANTS = ("nchw", "channels_last", "channels_last+bf16", "nchw+bf16")


def _step_runner(config: Path, variant: str, steps: int):
    """-> a function that runs `steps` optimiser steps of `variant` and returns images per second."""
    layout = "channels_last" if variant.startswith("channels_last") else "nchw"
    cfg = load_config(config, [f"train.channels_last={layout == 'channels_last'}", "train.device=cpu"])
    points = load_scheme(cfg.data.scheme).num_points
    state = _build_state(cfg, points, torch.device("cpu"), None)
    _build_scheduler(cfg, state, steps_per_epoch=1000)
    loss_fn = build_training_loss(cfg.train, state.model)
    generator = torch.Generator().manual_seed(0)
    size, batch = cfg.data.input_size, cfg.train.batch_size
    images = torch.randn(batch, 3, size, size, generator=generator)
    if layout == "channels_last":
        images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.rand(batch, 2 * points, generator=generator) * 1.6 - 0.8
    bf16 = variant.endswith("+bf16")
    state.model.train()
    counter = iter(range(1, 10**9))

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                train_step(state.model, state, images, targets, loss_fn, torch.device("cpu"), False,
                            step=next(counter))
        return steps * batch / (time.perf_counter() - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/real/300w_cpu.yaml"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["nchw", "channels_last"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps per timed round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runners = {variant: _step_runner(args.config, variant, args.steps) for variant in args.variants}
    for run in runners.values():   # warm-up: oneDNN primitive creation, allocator
        run()
    rates: dict[str, list[float]] = {variant: [] for variant in runners}
    for _ in range(args.rounds):
        for variant, run in runners.items():
            rates[variant].append(run())
    first = statistics.median(rates[args.variants[0]])
    print(f"{args.config}: training step, {args.threads} thread(s), median of {args.rounds} interleaved rounds "
          f"of {args.steps} steps")
    print("| variant | images/s | images/s per core | vs " + args.variants[0] + " |")
    print("|---|---|---|---|")
    for variant, values in rates.items():
        median = statistics.median(values)
        print(f"| {variant} | {median:.1f} | {median / args.threads:.1f} | {median / first:.2f}x |")


if __name__ == "__main__":
    main()
