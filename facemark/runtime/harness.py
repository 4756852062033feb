"""The one child-process harness: `python -m facemark.runtime.harness JOB.json` runs one artifact.

Some runtimes abort the whole process instead of raising (LiteRT/XNNPACK on some int8/int16
graphs hits a C++ check and calls abort()). Each artifact therefore runs in its own interpreter:
a crash becomes that artifact's row status (validate) or failed row (quantize) and the others still run. The child loads
only numpy, the codec and the one runtime it needs; it reads the shared crops memory-mapped
from one .npy file written once by the parent.

A job has a mode:
- "accuracy": predictions on every crop with `threads` threads; the parent runs several of
  these at once, one thread each (batch-1 inference of a small model scales better across
  processes than across intra-op threads);
- "latency": batch-1 model time with `threads` threads, `warmup` + `runs` runs, each calling the
  model once on each crop of `sequence` (indices into the crops; default [0], the first crop; a
  refinement's calls, facemark.runtime.refine.Refinement.latency_crops); the parent runs these one
  at a time, so nothing else of ours competes for the cores.

Job file (JSON): {"mode", "format", "artifact", "feed" (runner.Feed: layout, baked), "size", "crops"
(.npy of (N, S, S, 3) uint8), "threads", "warmup", "runs", "predictions" (.npy written in
accuracy mode: (N, P, 2) float32 normalised), "result" (.json written: {"settings", "io"} plus
"latency_ms" in latency mode: runs x len(sequence) nested lists), "sequence" (latency mode,
optional)}. `run_artifact` wraps the whole round trip for one set of crops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from facemark.errors import FacemarkError
from facemark.interrupt import run_child
from facemark.io import atomic_write_text
from facemark.runtime.runner import Feed
from facemark.weights import Normalisation
from facemark.status import Status

EXIT_USER_ERROR = 3   # a FacemarkError inside the child: its message is the last stderr line
# A child that runs longer is stopped: int16-activation TFLite files ran 25-35x slower than int8
# in the quantize stage; one pathological artifact must not hold the whole report hostage.
TIMEOUT_BASE_S, TIMEOUT_PER_FACE_S = 300.0, 0.5


class WorkerFailed(Exception):
    """The child did not produce a result; `status` is the row status to report."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def run_job(job: dict[str, Any]) -> None:
    """Run an "accuracy" or "latency" job (see the module docstring) and write its outputs."""
    from facemark.runtime.runners import create_runner

    crops = np.load(job["crops"], mmap_mode="r")
    norm = Normalisation.from_dict(job["norm"], "validate job")
    runner = create_runner(job["format"], Path(job["artifact"]), Feed(**job["feed"]), int(job["size"]), norm,
                           threads=int(job["threads"]), values=job.get("values"))
    result: dict[str, Any] = {"settings": runner.settings(), "io": runner.io()}
    if job["mode"] == "accuracy":
        np.save(job["predictions"], runner.predict(crops))
    elif job["mode"] == "latency":
        sequence = np.asarray(crops[list(job.get("sequence", [0]))])
        result["latency_ms"] = runner.latency_calls(sequence, int(job["warmup"]), int(job["runs"])).tolist()
    else:
        raise ValueError(f"unknown job mode {job['mode']!r}; valid: accuracy, latency")
    atomic_write_text(Path(job["result"]), json.dumps(result))


def run_isolated(job: dict[str, Any], job_path: Path) -> dict[str, Any]:
    """Run `job` in a child process -> its result: {"settings", "io"} plus "predictions" ((N, P, 2)
    float32, accuracy mode) or "latency_ms" (latency mode, runs x len(sequence)).

    Raises WorkerFailed with the row status when the child crashes, times out or reports an error.
    """
    atomic_write_text(job_path, json.dumps(job))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    faces = np.load(job["crops"], mmap_mode="r").shape[0]
    timeout = TIMEOUT_BASE_S + TIMEOUT_PER_FACE_S * faces
    try:
        proc = run_child([sys.executable, "-m", "facemark.runtime.harness", str(job_path)],
                         capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WorkerFailed(Status.FAILED.because(f"timed out after {timeout:.0f} s")) from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
        raise WorkerFailed(Status.FAILED.because(f"process aborted (signal {-proc.returncode}, {name})"))
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise WorkerFailed(Status.FAILED.because(detail.removeprefix('error: ')[:300]))
    result = json.loads(Path(job["result"]).read_text())
    if job["mode"] == "accuracy":
        result["predictions"] = np.load(job["predictions"])
    return result


def run_artifact(fmt: str, path: Path, feed: Feed, size: int, norm: Normalisation,
                 crops: np.ndarray, work_dir: Path, threads: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """Predict (N, S, S, 3) uint8 crops with one artifact in a child process -> ((N, P, 2) float32
    normalised crop coordinates, {"settings", "io"}). Files go to `work_dir` (the caller's
    temporary folder); a crash or timeout raises WorkerFailed."""
    work_dir.mkdir(parents=True, exist_ok=True)
    stem = work_dir / f"{Path(path).name}.accuracy"
    np.save(f"{stem}.crops.npy", np.ascontiguousarray(crops, dtype=np.uint8))
    job = {"mode": "accuracy", "format": fmt, "artifact": str(path), "feed": vars(feed), "size": int(size),
           "norm": norm.to_dict(), "crops": f"{stem}.crops.npy", "threads": int(threads), "warmup": 0, "runs": 0,
           "predictions": f"{stem}.npy", "result": f"{stem}.json"}
    result = run_isolated(job, Path(f"{stem}.job.json"))
    return result.pop("predictions"), result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m facemark.runtime.harness JOB.json", file=sys.stderr)
        return 2
    try:
        run_job(json.loads(Path(argv[0]).read_text()))
    except FacemarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
