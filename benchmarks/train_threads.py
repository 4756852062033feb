"""A training recipe's epoch time at each thread setting, alone and beside one busy process.

    python benchmarks/train_threads.py --config configs/real/300w_cpu.yaml --data data/300w \
        --threads auto 2 --epochs 3 --limit 256

For each --threads value (auto: train.threads null, facemark's default; N: train.threads=N, the old
default being one thread per core) the recipe is trained twice from scratch for --epochs epochs on
the first --limit training faces, exactly as `facemark train` runs it (a child process, no
environment variables): once alone, once beside a busy process (one pure-Python loop, one core).
Printed per row: the median epoch time from metrics.jsonl (start-up and validation-set loading
excluded), the CPU seconds of the whole command (its data workers included), and the slow-down
beside the busy process over alone. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "while True: pass"


def run_once(args: argparse.Namespace, threads: str, busy: bool, run: Path) -> tuple[float, float, float]:
    """Train once -> (median epoch seconds, wall seconds, CPU seconds of the training command)."""
    command = [sys.executable, "-m", "facemark", "train", "--config", args.config, "--data", args.data,
               "--run", str(run), "--set", f"train.epochs={args.epochs}", "--set", "train.warmup_epochs=1",
               "--set", f"data.limit={args.limit}",
               "--set", f"train.threads={'null' if threads == 'auto' else threads}"]
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:   # the child's progress bars are noise; its last lines say why it failed
            raise SystemExit(f"{' '.join(command)} failed:\n" + "\n".join(done.stderr.splitlines()[-5:]))
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)   # before the neighbour is reaped
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    epochs = [json.loads(line)["seconds"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(epochs), wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", nargs="+", default=["auto"], help="auto or a number, each a row pair")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=256, help="training faces (data.limit)")
    args = parser.parse_args()
    print(f"{args.config}: {args.epochs} epochs of {args.limit} faces")
    print(f"{'train.threads':>13} {'neighbour':>9} {'epoch s':>8} {'wall s':>7} {'CPU s':>7} {'slow-down':>9}")
    with tempfile.TemporaryDirectory(prefix="train-threads-") as tmp:
        for threads in args.threads:
            alone = None
            for busy in (False, True):
                epoch, wall, cpu = run_once(args, threads, busy, Path(tmp) / f"{threads}-{busy}")
                alone = epoch if alone is None else alone
                ratio = f"{epoch / alone:.2f}x" if busy else "-"
                print(f"{threads:>13} {'busy' if busy else 'none':>9} {epoch:8.2f} {wall:7.1f} {cpu:7.1f} {ratio:>9}",
                      flush=True)


if __name__ == "__main__":
    main()
