"""Latency figures and the machine they were measured on.

What is timed: the model call alone at batch 1 (Runner.latency), after `validate.warmup` untimed
calls, `validate.runs` times, with a fixed thread count (default 1: a phone app rarely gets more
than one big core to itself, and one thread makes rows comparable). Preprocessing (uint8 crop ->
normalised float tensor) is timed once, separately, because it is the same for every float
artifact. The settings recorded with each figure say what produced it: runtime and version,
delegate, threads, CPU model and its SIMD/int8 ISA flags, machine architecture.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from facemark.data.crops import to_input
from facemark.weights import Normalisation

# ISA flags that decide int8/float speed: AVX2/AVX-512 and VNNI (int8 dot products) on x86,
# dot-product / i8mm / fp16 on ARM (the phones' side).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
             "asimd", "asimddp", "i8mm", "fphp", "asimdhp", "sve")
X86 = ("x86_64", "amd64", "i386", "i686")
X86_BANNER = ("measured on x86: int8 speed on x86 does not predict ARM phones (different int8 kernels, "
              "VNNI vs dot-product); use these latencies to compare artifacts, not to promise phone speed")


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


def available_cores() -> int:
    """Cores this process may use: the accuracy passes (not timed) run one process per core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """(CPU model, ISA flags of interest) from /proc/cpuinfo; ("", []) where there is none."""
    try:
        text = path.read_text()
    except OSError:
        return "", []
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, [flag for flag in ISA_FLAGS if flag in flags]


def machine_settings() -> dict[str, Any]:
    """Where the latencies were measured: machine, CPU model, ISA flags, OS, Python, cores."""
    model, isa = _cpuinfo()
    return {"machine": platform.machine(), "cpu": model or platform.processor() or "unknown", "isa": isa,
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "cores_available": available_cores()}


def x86_banner(machine: str | None = None) -> str | None:
    """The warning printed above latencies measured on x86, None on other machines."""
    return X86_BANNER if (machine or platform.machine()).lower() in X86 else None
