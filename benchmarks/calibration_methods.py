"""ONNX static int8 of an exported run under several activation-range methods, val and test NME side by side.

    python benchmarks/calibration_methods.py runs/300w_v2 --data /data/300w minmax percentile:99.99 percentile:99.999

Each method re-quantises the run's verified onnx_fp32 (quant_pre_process'd) with onnxruntime's
quantize_static on the run's calibration crops (quantize.calibration_count training faces, the
same draw as `facemark quantize`), u8s8 QDQ with per-channel weights, then runs it on the val and
test splits (detector boxes, as `facemark validate`). Prints the float NME and, per method, the NME
and its change against the float model. Nothing is written to the run's manifest: the candidate
files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def parse_method(text: str) -> tuple[str, float | None]:
    """"minmax", "entropy" or "percentile:99.99" -> (method, percentile)."""
    method, _, value = text.partition(":")
    return method, float(value) if value else (99.99 if method == "percentile" else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an exported run (RUN/export/manifest.json)")
    parser.add_argument("methods", nargs="+", help="minmax | entropy | percentile:P")
    parser.add_argument("--data", type=Path, help="dataset root (default: the run's)")
    args = parser.parse_args(argv)

    from facemark.quantize.mixed import EvalFaces
    from facemark.quantize.onnx_int8 import preprocessed_float, write_qdq
    from facemark.quantize.run import build_job
    from facemark.runtime import Feed, create_runner

    job = build_job(args.run, args.data, None, verb="benchmark")
    try:
        source = preprocessed_float(job)
        splits = {split: EvalFaces(job, job.data_root, split, every_face=True) for split in ("val", "test")}
        print(f"{'method':18s}" + "".join(f"  {split} NME (change)    " for split in splits))
        print(f"{'float':18s}" + "".join(f"  {faces.float_nme:.5f}            " for faces in splits.values()))
        with tempfile.TemporaryDirectory(prefix="facemark-calibration-") as work:
            for text in args.methods:
                method, percentile = parse_method(text)
                path, started = Path(work) / f"{method}_{percentile}.onnx", time.perf_counter()
                write_qdq(source, path, job.calibration.inputs("NCHW"), job.cfg.quantize.onnx_activation, method,
                          float_decode=job.cfg.quantize.float_decode, percentile=percentile)
                runner = create_runner("onnx", path, Feed("NCHW"), job.size, job.norm, threads=1)
                cells = []
                for faces in splits.values():
                    value = faces.nme(runner.predict(faces.crops.crops).reshape(len(faces.crops), -1))
                    cells.append(f"  {value:.5f} ({value / faces.float_nme - 1:+.2%})  ")
                print(f"{text:18s}" + "".join(cells) + f"  {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        import shutil

        shutil.rmtree(job.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
