"""facemark.console: third-party noise (Python warnings, logging, C-level writes to fds 1/2, child
processes, progress bars printed inside `captured()`) goes to the log; facemark's own lines stay
on the terminal. Run in a child process, whose stdout/stderr are the real descriptors."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import logging, os, subprocess, sys, warnings
from pathlib import Path
from facemark.console import captured, quiet_console

with quiet_console(Path(sys.argv[1]), ["export", "RUN"]):
    print("facemark: own line")
    print("facemark: own error", file=sys.stderr)
    warnings.warn("torch.jit.trace is deprecated", FutureWarning)
    logging.getLogger("coremltools").warning("Failed to load _MLModelProxy")
    os.write(2, b"I0000 cpu_feature_guard.cc] TensorFlow C++ log\n\n")
    subprocess.run([sys.executable, "-c", "print('child chatter')"])
    with captured():
        print("Running MIL default pipeline: 100%")

    class HalfBuilt:   # what a Ctrl-C inside tqdm's constructor leaves behind
        def __del__(self):
            raise AttributeError("'tqdm' object has no attribute 'pos'")

    HalfBuilt()
print("facemark: after")
"""


def test_third_party_output_goes_to_the_log(tmp_path):
    log = tmp_path / "facemark.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["facemark: own line", "facemark: after"]
    assert done.stderr.splitlines() == ["facemark: own error"]
    text = log.read_text()
    assert text.startswith("== ") and "facemark export RUN" in text.splitlines()[0]
    for noise in ("FutureWarning: torch.jit.trace is deprecated", "WARNING coremltools: Failed to load _MLModelProxy",
                  "TensorFlow C++ log", "child chatter", "Running MIL default pipeline",
                  "Exception ignored in", "AttributeError: 'tqdm' object has no attribute 'pos'"):
        assert noise in text, noise
    assert "own line" not in text


def test_nothing_logged_leaves_no_file(tmp_path):
    script = "import sys; from pathlib import Path; from facemark.console import quiet_console\n" \
             "with quiet_console(Path(sys.argv[1]), ['validate', 'RUN']): print('only ours')\n"
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "facemark.log")], capture_output=True,
                          text=True, timeout=60)
    assert done.stdout == "only ours\n" and not (tmp_path / "facemark.log").exists()
    missing = tmp_path / "no-run" / "facemark.log"   # a refused command's run folder is never made
    subprocess.run([sys.executable, "-c", script.replace("print('only ours')", "print(1, file=sys.__stderr__)"),
                    str(missing)], capture_output=True, text=True, timeout=60)
    assert not missing.parent.exists()
