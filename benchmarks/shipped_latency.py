"""The model call of every shipped artifact, batch 1, one thread, interleaved in one process.

    python benchmarks/shipped_latency.py                      # every artifact of every shipped model
    python benchmarks/shipped_latency.py --rounds 5 --calls 100

Each round times `--calls` calls of each artifact in turn (after `--warmup` untimed ones) through
`Landmarker("NAME:ARTIFACT").runner.latency_calls`, the timing loop `facemark validate` uses, on one
seeded random crop; the median over all rounds is printed per artifact, with its ratio to the
first. Interleaving puts every artifact under the same load of a shared machine, so the ratios
carry across days where the milliseconds do not.
"""

from __future__ import annotations

import argparse

import numpy as np

from facemark import Landmarker, pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    names = [f"{model}:{artifact}" for model in pretrained.model_names()
             for artifact in pretrained.read_card(pretrained.ROOT / model)["artifacts"]]
    marks = {name: Landmarker(name) for name in names}
    crops = {name: np.random.default_rng(0).integers(0, 256, (1, mark.size, mark.size, 3), dtype=np.uint8)
             for name, mark in marks.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, mark in marks.items():
            times[name] += mark.runner.latency_calls(crops[name], args.warmup, args.calls)[:, 0].tolist()
    first = float(np.median(times[names[0]]))
    for name in names:
        median = float(np.median(times[name]))
        print(f"{name:<28} {marks[name].size:>4} px  {marks[name].runner.threads} thread  "
              f"median {median:6.2f} ms  {median / first:5.2f}x")


if __name__ == "__main__":
    main()
