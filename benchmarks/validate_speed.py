"""Wall time of `facemark validate` on every artifact of a run (6+) and 2000 crops, on 2 cores.

Setup (not timed, reused when --work already holds it): a synthetic dataset (facemark synth,
train 64 / val 16 / test --faces), an untrained --arch checkpoint with a perturbed head at
--size px, `facemark export` (onnx, tflite, coreml) and `facemark quantize` (tflite, onnx,
coreml). Timed: validate_run with --runs latency runs (fewer than validate.runs, the accuracy
pass is what scales with the faces), pinned to the first --cores CPUs. Prints the report, the
seconds spent per row and the total.

    .venv/bin/python benchmarks/validate_speed.py [--faces 2000] [--size 224] [--cores 2] [--runs 10]
        [--arch mobilenetv3_large_100] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import torch


def build_run(work: Path, faces: int, size: int, arch: str, runs: int, warmup: int) -> Path:
    """work/data (synthetic) + work/run/{best.pt, export/} with float and int8 artifacts."""
    from facemark.config import load_config
    from facemark.convert.export import export_run
    from facemark.data.synth import DETECTOR, generate_dataset
    from facemark.model import build_model, checkpoint_dict
    from facemark.quantize.run import quantize_run
    from facemark.schemes import load_scheme

    data, run = work / "data", work / "run"
    generate_dataset(data, "lapa106", {"train": 64, "val": 16, "test": faces}, seed=0, workers=1)
    cfg = load_config(overrides=["model.pretrained=false", f"model.arch={arch}", f"data.input_size={size}",
                                 f"data.detector={DETECTOR}", f"validate.runs={runs}", f"validate.warmup={warmup}",
                                 "quantize.calibration_count=32"])
    torch.manual_seed(0)
    model = build_model(cfg.model, load_scheme(cfg.data.scheme).num_points).eval()
    with torch.no_grad():   # an untrained head outputs ~0 for every face; make it depend on the face
        model.get_classifier().weight.normal_(0.0, 0.02)
    run.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_dict(model, cfg, epoch=0, data_root=str(data)), run / "best.pt")
    export_run(run, ["all"], data_root=None, bake=False, golden=False)
    quantize_run(run, ["all"], data_root=None, calibration_count=32)
    return run


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the artifact workers):
    on a shared machine this, unlike wall time, does not grow with other people's load."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--arch", default="mobilenetv3_large_100")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep (and reuse) the dataset and run here")
    args = parser.parse_args()
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:args.cores]))   # children inherit it
    torch.set_num_threads(args.cores)
    work = args.work or Path(tempfile.mkdtemp(prefix="facemark-validate-speed-"))
    run = work / "run"
    if not (run / "export" / "manifest.json").is_file():
        started = time.perf_counter()
        build_run(work, args.faces, args.size, args.arch, args.runs, args.warmup)
        print(f"setup (synth, export, quantize): {time.perf_counter() - started:.0f} s")
    from facemark.validate.run import validate_run
    from facemark.validation_row import read_rows

    cpu_before, started = _cpu_seconds(), time.perf_counter()
    code = validate_run(run, None, "test", threads=1, max_nme_increase=None, max_nme=None, baseline=None, limit=None)
    total, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
    path = run / "validation" / "validation.json"
    report = json.loads(path.read_text())
    rows = read_rows(report, path)
    evaluated = [row for row in rows if row.evaluated and row.name != "pytorch"]
    print("\nper row: " + ", ".join(f"{row.name} {row.seconds:.1f} s" for row in rows))
    print(f"validate: {len(report['rows']) - 1} artifacts ({len(evaluated)} evaluated) on "
          f"{report['data']['count']} faces at {args.size} px, {args.arch}, {args.cores} cores, "
          f"{args.runs} latency runs: {total:.1f} s wall, {cpu:.1f} s CPU incl. workers (exit {code}); "
          f"work dir {work}")


if __name__ == "__main__":
    main()
