"""Export time, artifact size and PyTorch parity of every backbone through every format.

    .venv/bin/python benchmarks/export_all.py --data /work/shared/data/datatang106 --split train
    .venv/bin/python benchmarks/export_all.py --arch mobilenetv3_large_100 --format onnx --format tflite

Goes through the real driver (`facemark.convert.export.export_run`) for each backbone at 224 px on
real faces of a LaPa-layout folder. The folder needs no box cache: a temporary dataset links its
images/ and landmarks/ and caches the landmark box of each face under the detector name
"landmarks" (the documented detector-miss fallback), so the crops are real faces.

Weights: no ImageNet weights are available offline for most backbones, so each model is timm's
random init plus seeded noise (timm zero-initialises some BatchNorm gammas), with BatchNorm
statistics recomputed on the real crops and the classifier scaled so outputs spread like
landmarks (std ~0.3 normalised units). By default the parity bounds are lifted during the run
(--gate keeps them), so every artifact is written and its error measured; the table then says
whether each artifact is within the bound of its precision (formats.PARITY_BOUND).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facemark.codec import landmark_box
from facemark.config import load_config, save_config
from facemark.convert.export import export_run
from facemark.backends import FORMATS
from facemark.convert.formats import PARITY_BOUND
from facemark.data.boxes import box_dir, write_box
from facemark.data.crops import load_crop_set, to_input
from facemark.data.layout import list_split, read_landmarks
from facemark.manifest import load_manifest
from facemark.model import build_model, checkpoint_dict, weights_source
from facemark.schemes import load_scheme

ARCHS = ["resnet18", "mobilenetv2_100", "efficientnet_b0", "mobilenetv3_large_100", "mobilevit_s"]
DETECTOR = "landmarks"


def linked_dataset(source: Path, split: str, target: Path, count: int) -> Path:
    """target/val/{images,landmarks} linked to source/<split>/, boxes/landmarks/ = landmark boxes
    of the first `count` faces (export reads only those)."""
    val = target / "val"
    val.mkdir(parents=True)
    for folder in ("images", "landmarks"):
        os.symlink((source / split / folder).resolve(), val / folder)
    for sample in list_split(target, "val")[:count]:
        write_box(box_dir(target, "val", DETECTOR) / f"{sample.stem}.txt",
                  landmark_box(read_landmarks(sample.landmarks_path)))
    return target


@torch.no_grad()
def conditioned_model(cfg, num_points: int, crops: np.ndarray) -> torch.nn.Module:
    """Random init + noise, BatchNorm statistics from the real crops, outputs scaled to std 0.3."""
    torch.manual_seed(0)
    model = build_model(cfg.model, num_points)
    for parameter in model.parameters():
        parameter.add_(torch.randn_like(parameter) * 0.02)
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for module in batchnorms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration batch
    inputs = torch.from_numpy(to_input(crops, weights_source(model).norm, "NCHW"))
    model.train()(inputs)
    for module in batchnorms:
        module.momentum = 0.1
    model.eval()
    head = model.get_classifier()
    outputs = model(inputs)
    head.weight.mul_(0.3 / float(outputs.std()))
    head.bias.zero_()
    return model


def export_arch(arch: str, data_root: Path, base: Path, args: argparse.Namespace) -> dict:
    overrides = [f"model.arch={arch}", "model.pretrained=false", f"data.input_size={args.size}",
                 f"data.scheme={args.scheme}", f"data.detector={DETECTOR}", f"export.parity_images={args.images}"]
    cfg = load_config(None, overrides)
    crops = load_crop_set(data_root, "val", cfg.data, limit=args.images, workers=2).crops
    model = conditioned_model(cfg, load_scheme(args.scheme).num_points, crops)
    run = base / arch
    run.mkdir()
    torch.save(checkpoint_dict(model, cfg, data_root=str(data_root)), run / "best.pt")
    save_config(cfg, run / "config.yaml")
    start = time.perf_counter()
    code = export_run(run, formats=args.format, data_root=None, bake=args.bake, golden=False)
    print(f"{arch}: exit code {code}, {time.perf_counter() - start:.0f} s in all")
    return load_manifest(run / "export").artifacts


def print_table(results: dict[str, dict]) -> None:
    header = (f"{'arch':<22} {'artifact':<18} {'MB':>7} {'sec':>6} {'max err':>9} {'mean px':>8} "
              f"{'max px':>7} {'% IPD':>7} {'bound':>7} {'ok':>3}")
    print(f"\n{header}\n{'-' * len(header)}")
    for arch, artifacts in results.items():
        for name, entry in artifacts.items():
            parity = entry.parity
            if parity is None:
                figures = f"{'-':>9} {'-':>8} {'-':>7} {'-':>7} {'-':>7} {'-':>3}"
            else:
                bound = PARITY_BOUND[entry.precision]
                ok = "yes" if parity["max_abs"] <= bound else "NO"
                figures = (f"{parity['max_abs']:>9.2e} {parity['mean_px']:>8.4f} {parity['max_px']:>7.4f} "
                           f"{parity['nme_ipd']:>7.3%} {bound:>7.0e} {ok:>3}")
            print(f"{arch:<22} {name:<18} {entry.size_bytes / 1e6:>7.2f} {entry.seconds or 0:>6.1f} {figures}")
    print("max err: normalised crop units vs PyTorch (the bound's unit); px: point distances in crop pixels, "
          "% IPD: their mean over the inter-pupil distance; sec: seconds per artifact")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/datatang106"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--scheme", default="datatang106")
    parser.add_argument("--arch", action="append", choices=ARCHS, help="repeatable; default: all five")
    parser.add_argument("--format", action="append", choices=[*FORMATS, "all"], help="repeatable; default: all")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--bake", action="store_true", help="also write the *_baked variants")
    parser.add_argument("--gate", action="store_true", help="keep the parity bounds (fail artifacts over them)")
    parser.add_argument("--json", type=Path, help="also write the manifests' artifact entries here")
    args = parser.parse_args()
    args.format = args.format or ["all"]
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    bounds = dict(PARITY_BOUND)
    if not args.gate:
        PARITY_BOUND.update({key: float("inf") for key in PARITY_BOUND})
    results = {}
    with tempfile.TemporaryDirectory(prefix="facemark-bench-export-") as work:
        data_root = linked_dataset(args.data, args.split, Path(work) / "data", args.images)
        for arch in args.arch or ARCHS:
            results[arch] = export_arch(arch, data_root, Path(work), args)
    PARITY_BOUND.update(bounds)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
