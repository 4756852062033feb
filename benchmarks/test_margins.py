"""How far each learned or measured test bound is from failing, across seeds, threads and CPU kernels.

Runs the test files that state bounds through tests/margins.py (`below` / `above`) once per variant,
with FACEMARK_MARGIN_LOG collecting every checked value, then prints one row per check: the bound,
the smallest and largest value seen, the variation (max - min), the worst margin (distance of the
worst value from the bound) and margin / variation. A check is robust here when its worst margin is
at least twice the variation (column "ok").

Variants (pick with --variants; each runs under every --seeds value, the seed shifting the drawn
faces, the random models and the training seed):
  t1      torch and OpenMP on 1 thread (what `make test` uses)
  t2      2 threads
  avx2    torch's kernels capped at AVX2 (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2): a CPU
          without AVX-512 or AMX
  sse     the generic kernels (ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41)
onnxruntime and XNNPACK pick their kernels by themselves; the ISA variants move torch only, which is
where training and every PyTorch reference run.

    .venv/bin/python benchmarks/test_margins.py [--seeds 0 1 2] [--variants t1 t2 avx2 sse]
        [--tests tests/test_train.py ...] [--out DIR] [--pytest-args "-m 'not slow'"]
    .venv/bin/python benchmarks/test_margins.py --out DIR --summarise-only   # every log already in DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "t1": {"FACEMARK_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"},
    "t2": {"FACEMARK_TEST_THREADS": "2", "OMP_NUM_THREADS": "2"},
    "avx2": {"FACEMARK_TEST_THREADS": "1", "OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "sse": {"FACEMARK_TEST_THREADS": "1", "OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default",
            "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def files_with_bounds() -> list[str]:
    """The test files that import tests/margins.py."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "from margins import" in p.read_text())


def run_variant(variant: str, seed: int, tests: list[str], pytest_args: list[str], out: Path) -> Path:
    """One pytest run -> the JSON-lines log of its checks (a failing test still logs its value)."""
    log = out / f"{variant}_seed{seed}.jsonl"
    log.unlink(missing_ok=True)
    env = {**os.environ, **VARIANTS[variant], "FACEMARK_TEST_SEED": str(seed), "FACEMARK_MARGIN_LOG": str(log)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, *tests],
                          cwd=REPO, env=env, capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    print(f"{variant:5s} seed {seed}: {summary} ({time.monotonic() - started:.0f} s)", flush=True)
    (out / f"{variant}_seed{seed}.log").write_text(done.stdout + done.stderr)
    return log


def summarise(logs: list[Path]) -> list[dict]:
    """Per check: bound, side, min, max, variation, worst margin, margin / variation."""
    values: dict[tuple[str, float, str], list[float]] = defaultdict(list)
    for log in logs:
        if log.exists():
            for line in log.read_text().splitlines():
                record = json.loads(line)
                values[(record["check"], record["bound"], record["side"])].append(record["value"])
    rows = []
    for (check, bound, side), seen in sorted(values.items()):
        low, high = min(seen), max(seen)
        worst = bound - high if side == "below" else low - bound
        variation = high - low
        rows.append({"check": check, "side": side, "bound": bound, "min": low, "max": high, "runs": len(seen),
                     "variation": variation, "worst_margin": worst,
                     "margin_over_variation": worst / variation if variation > 0 else float("inf")})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| check | bound | min | max | variation | worst margin | margin / variation | ok |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = row["margin_over_variation"]
        lines.append(f"| {row['check']} | {'<' if row['side'] == 'below' else '>'} {row['bound']:.3g} "
                     f"| {row['min']:.4g} | {row['max']:.4g} | {row['variation']:.3g} | {row['worst_margin']:.3g} "
                     f"| {'inf' if ratio == float('inf') else f'{ratio:.1f}'} "
                     f"| {'yes' if row['worst_margin'] > 0 and ratio >= 2 else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["t1", "t2", "avx2", "sse"], choices=sorted(VARIANTS))
    parser.add_argument("--tests", nargs="+", default=None, help="test files or node ids (default: every file "
                        "that states bounds through tests/margins.py)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, one shell-quoted string")
    parser.add_argument("--out", type=Path, default=Path("runs/test_margins"))
    parser.add_argument("--summarise-only", action="store_true",
                        help="run nothing; summarise every *.jsonl log already in --out (audits split over calls)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.summarise_only:
        logs = sorted(args.out.glob("*.jsonl"))
    else:
        tests = args.tests or files_with_bounds()
        logs = [run_variant(variant, seed, tests, shlex.split(args.pytest_args), args.out)
                for variant in args.variants for seed in args.seeds]
    rows = summarise(logs)
    (args.out / "margins.json").write_text(json.dumps(rows, indent=2))
    table = markdown(rows)
    (args.out / "margins.md").write_text(table + "\n")
    print(table)
    return 0 if all(row["worst_margin"] > 0 and row["margin_over_variation"] >= 2 for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
