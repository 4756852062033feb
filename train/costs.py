"""What a model costs to run: parameters, GFLOPs, and batch-1 latency on CPU and (when present) GPU.

GFLOPs come from torch.utils.flop_counter.FlopCounterMode, which counts a multiply-add as 2
FLOPs (so GFLOPs = 2 x GMACs, the unit many papers call "FLOPs"). Latency is the median of
`runs` timed forward passes after `warmup` untimed ones, batch 1, in inference mode, timed by the
runtime layer's TorchRunner as every latency in facemark is; the CPU figure uses exactly
`threads` intra-op threads so numbers are comparable between models (the normalisation of the
input does not change the time: ImageNet's).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facemark.runtime import TorchRunner
from facemark.weights import IMAGENET


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, input_size: int) -> float:
    """Forward FLOPs of one (1, 3, S, S) input, in units of 1e9 (multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.cpu().eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, input_size, input_size))
    return counter.get_total_flops() / 1e9


def latency_ms(model: nn.Module, input_size: int, threads: int, warmup: int, runs: int,
               device: str = "cpu") -> float:
    """Median batch-1 latency in ms through the runtime layer's TorchRunner (float32; on the CPU
    with exactly `threads` intra-op threads, restored afterwards). The model stays on the CPU."""
    crop = np.zeros((input_size, input_size, 3), np.uint8)   # the input's values do not change the time
    try:
        runner = TorchRunner(model, input_size, IMAGENET, threads, device=device)
        return float(np.median(runner.latency(crop, warmup, runs)))
    finally:
        model.cpu()


def measure_costs(model: nn.Module, input_size: int, threads: int, warmup: int, runs: int) -> dict:
    """-> {params, gflops, cpu_ms, cpu_threads, gpu_ms (None without CUDA), gpu_name, warmup, runs}."""
    return {
        "params": count_params(model), "gflops": count_gflops(model, input_size),
        "cpu_ms": latency_ms(model, input_size, threads, warmup, runs), "cpu_threads": threads,
        "gpu_ms": latency_ms(model, input_size, threads, warmup, runs, "cuda") if torch.cuda.is_available() else None,
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "warmup": warmup, "runs": runs,
    }
