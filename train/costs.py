"""What a model costs to run: parameters, GFLOPs, and batch-1 latency on CPU and (when present) GPU.

GFLOPs come from torch.utils.flop_counter.FlopCounterMode, which counts a multiply-add as 2
FLOPs (so GFLOPs = 2 x GMACs, the unit many papers call "FLOPs"). Latency is the median of
`runs` timed forward passes after `warmup` untimed ones, batch 1, in inference mode; the CPU
figure uses exactly `threads` intra-op threads so numbers are comparable between models.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


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


def _median_ms(step, warmup: int, runs: int, sync=lambda: None) -> float:
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        sync()   # CUDA launches are asynchronous: time to completion, not to the return
        times.append(1000.0 * (time.perf_counter() - start))
    return statistics.median(times)


def cpu_latency_ms(model: nn.Module, input_size: int, threads: int, warmup: int, runs: int) -> float:
    """Median batch-1 CPU latency in ms with `threads` intra-op threads (restored afterwards)."""
    model = model.cpu().eval()
    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return _median_ms(lambda: model(x), warmup, runs)
    finally:
        torch.set_num_threads(previous)


def gpu_latency_ms(model: nn.Module, input_size: int, warmup: int, runs: int) -> float | None:
    """Median batch-1 CUDA latency in ms (float32), or None when no GPU is available."""
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    model = model.to(device).eval()
    x = torch.randn(1, 3, input_size, input_size, device=device)
    try:
        with torch.inference_mode():
            return _median_ms(lambda: model(x), warmup, runs, sync=torch.cuda.synchronize)
    finally:
        model.cpu()


def measure_costs(model: nn.Module, input_size: int, threads: int, warmup: int, runs: int) -> dict:
    """-> {params, gflops, cpu_ms, cpu_threads, gpu_ms (None without CUDA), gpu_name, warmup, runs}."""
    return {
        "params": count_params(model), "gflops": count_gflops(model, input_size),
        "cpu_ms": cpu_latency_ms(model, input_size, threads, warmup, runs), "cpu_threads": threads,
        "gpu_ms": gpu_latency_ms(model, input_size, warmup, runs),
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "warmup": warmup, "runs": runs,
    }
