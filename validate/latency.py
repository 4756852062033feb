"""Latency figures (the machine they were measured on: facemark.runtime.machine).

What is timed: the model call alone at batch 1 (Runner.latency), after `validate.warmup` untimed
calls, `validate.runs` times, with a fixed thread count (default 1: a phone app rarely gets more
than one big core to itself, and one thread makes rows comparable). Preprocessing (uint8 crop ->
normalised float tensor) is timed once, separately, because it is the same for every float
artifact. The settings recorded with each figure say what produced it: runtime and version,
delegate, threads, CPU model and its SIMD/int8 ISA flags, machine architecture.
"""

from __future__ import annotations

import time

import numpy as np

from facemark.data.crops import to_input
from facemark.weights import Normalisation

def stats(times_ms: np.ndarray | list[float]) -> dict[str, float | int]:
    """Timed runs (ms) -> {median_ms, p90_ms, mean_ms, min_ms, runs}."""
    times = np.asarray(times_ms, dtype=np.float64)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(times.mean()), "min_ms": float(times.min()), "runs": int(times.size)}


def preprocess_latency(crop: np.ndarray, norm: Normalisation, warmup: int, runs: int) -> dict[str, float | int]:
    """Time of to_input on one (S, S, 3) uint8 crop (-> (1, 3, S, S) float32), in ms."""
    batch = crop[None]
    for _ in range(warmup):
        to_input(batch, norm)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        to_input(batch, norm)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return stats(times)
