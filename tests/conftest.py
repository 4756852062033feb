"""Shared test settings: single-threaded torch for stable timings on 2 shared cores, no hub access.

FACEMARK_TEST_THREADS changes torch's thread count, for the margin audit (benchmarks/test_margins.py)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("FACEMARK_TEST_THREADS", "1")))
