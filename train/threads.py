"""The training process's thread budget (train.threads).

PyTorch starts one intra-op thread per core, and every DataLoader worker is a process that wants a
core of its own. On a 2-core machine with 2 workers that is 4 busy threads on 2 cores: OpenMP's
threads spin-wait for each other at every parallel region, and an epoch beside one other busy
process took 13x its time alone. The budget gives the model the cores the workers leave.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from facemark.config import Config
from facemark.runtime.machine import available_cores


def thread_budget(cfg: Config) -> int:
    """train.threads, or when it is null the cores of this machine split among its torchrun
    processes (LOCAL_WORLD_SIZE) less this process's data.workers, at least 1."""
    if cfg.train.threads is not None:
        return cfg.train.threads
    per_process = available_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, per_process - cfg.data.workers)


@contextlib.contextmanager
def training_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for the duration (restored after: train() is
    also called in-process, by ablate and the tests)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
