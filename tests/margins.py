"""Bounds on numbers that a CPU can move (learned quality, quantisation error, parity), with margins.

Floating-point kernels differ between CPUs (AVX2, AVX-512, AMX, arm64), thread counts and library
builds, and short training amplifies the difference. A test that asserts such a number states it
through `below` or `above`: they assert as usual and, when FACEMARK_MARGIN_LOG names a file, append
one JSON line (check name, value, bound, side) to it. `benchmarks/test_margins.py` runs the tests
under several seeds, thread counts and instruction sets and prints, for every check, how far its
worst value stays from the bound against how much the value varied.

FACEMARK_TEST_SEED shifts the seed of every drawn dataset and training run (default 0), so the same
audit can vary the data as well as the machine.
"""

from __future__ import annotations

import json
import os

DATA_SEED = int(os.environ.get("FACEMARK_TEST_SEED", "0"))


def below(name: str, value: float, bound: float) -> None:
    """Assert value < bound, recording the check."""
    _record(name, value, bound, "below")
    assert value < bound, f"{name}: {value:.6g} is not below {bound:.6g}"


def above(name: str, value: float, bound: float) -> None:
    """Assert value > bound, recording the check."""
    _record(name, value, bound, "above")
    assert value > bound, f"{name}: {value:.6g} is not above {bound:.6g}"


def _record(name: str, value: float, bound: float, side: str) -> None:
    log = os.environ.get("FACEMARK_MARGIN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"check": name, "value": float(value), "bound": float(bound), "side": side,
                                     "seed": DATA_SEED}) + "\n")
