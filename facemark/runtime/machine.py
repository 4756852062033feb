"""The machine a latency was measured on, and the x86 warning: int8 speed on x86 (VNNI kernels)
does not predict ARM phones (dot-product kernels), so every verb that times or quantises says so once."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

# ISA flags that decide int8/float speed: AVX2/AVX-512 and VNNI (int8 dot products) on x86,
# dot-product / i8mm / fp16 on ARM (the phones' side).
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
             "asimd", "asimddp", "i8mm", "fphp", "asimdhp", "sve")
X86 = ("x86_64", "amd64", "i386", "i686", "x86")
X86_BANNER = ("measured on x86: int8 speed on x86 does not predict ARM phones (different int8 kernels, "
              "VNNI vs dot-product); use these latencies to compare artifacts, not to promise phone speed")


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


def is_x86(machine: str | None = None) -> bool:
    """Whether `machine` (default: this one, platform.machine()) is an x86 CPU."""
    return (machine or platform.machine()).lower() in X86


def x86_banner(machine: str | None = None) -> str | None:
    """The warning printed above latencies measured on x86, None on other machines."""
    return X86_BANNER if is_x86(machine) else None
