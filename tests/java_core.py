"""The Android app's plain-Java core (android-demo/core) for the tests that run it: compiled with the
JDK's javac (Java 11 language level, as Gradle), its checkers run with java. The compiled classes
are the `core_classes` fixture (conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ANDROID = REPO / "android-demo"
CORE = ANDROID / "core" / "src"

needs_jdk = pytest.mark.skipif(shutil.which("javac") is None or shutil.which("java") is None,
                               reason="javac/java not on PATH: the JDK is needed to compile android-demo/core")


def compile_core(out: Path) -> Path:
    """android-demo/core main + test sources compiled into `out` -> `out`."""
    sources = sorted(str(p) for p in CORE.rglob("*.java"))
    result = subprocess.run(["javac", "--release", "11", "-Xlint:all", "-Werror", "-d", str(out), *sources],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out


def run_checker(classes: Path, golden: Path) -> subprocess.CompletedProcess:
    """GoldenCheck on a golden-vector folder (exit 0: the Java core reproduces it)."""
    return subprocess.run(["java", "-cp", str(classes), "org.facemark.core.GoldenCheck", str(golden)],
                          capture_output=True, text=True, timeout=60)
