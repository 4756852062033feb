"""Shared test settings (single-threaded torch for stable timings on 2 shared cores, no hub access)
and the fixtures several test files use; helpers they share are modules beside this one
(drawn_faces.py, java_core.py, margins.py).

FACEMARK_TEST_THREADS changes torch's thread count, for the margin audit (benchmarks/test_margins.py)."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("FACEMARK_TEST_THREADS", "1")))


@pytest.fixture(scope="module")
def core_classes(tmp_path_factory) -> Path:
    """android-demo/core compiled with javac (tests/java_core.py), once per test module."""
    from java_core import compile_core

    return compile_core(tmp_path_factory.mktemp("core_classes"))
