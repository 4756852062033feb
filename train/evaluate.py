"""`facemark eval`: a checkpoint's NME, FR, AUC, percentiles and CED plot on one split.

The faces are the split's evaluation CropSet (cached detector boxes, no augmentation), the
same crops every later stage uses; the metrics are computed in image pixels, after mapping the
network's normalised output back through each face's crop matrix. The model runs through the
runtime layer's TorchRunner, as in `facemark validate`, so both report the same numbers.
With the run's `infer:` settings (flip averaging, more passes; facemark.runtime.refine) the refined
figures are reported beside the single pass's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from facemark import codec
from facemark.data.crops import CropSet, SplitImages, load_crop_set
from facemark.data.fingerprint import fingerprint_split, warn_if_changed
from facemark.io import atomic_write_text, sha256_of
from facemark.metrics import FR_THRESHOLDS, nme, summarize
from facemark.schemes import load_scheme

CED_THRESHOLD = 0.1


def evaluate_predictions(norm_points: np.ndarray, crop_set: CropSet, scheme_name: str,
                         input_size: int) -> tuple[dict, np.ndarray]:
    """(N, P, 2) normalised predictions -> (summarize() dict in image pixels, (N,) per-face pupil NME)."""
    scheme = load_scheme(scheme_name)
    pred_image = codec.to_image(norm_points, crop_set.matrices, input_size)
    return summarize(pred_image, crop_set.points, scheme), nme(pred_image, crop_set.points, scheme, "pupil")


def format_table(summary: dict, title: str, refined: tuple[str, dict] | None = None) -> str:
    """A small fixed-width table of the headline numbers and the per-region NME; with `refined`
    (label, its summary) a second column beside the 1-pass one."""
    columns = [summary] if refined is None else [summary, refined[1]]

    def cells(fmt) -> list[str]:
        return [fmt(column) for column in columns]

    rows = [("", ["1 pass", refined[0]] if refined else [""]), ("faces", cells(lambda c: f"{c['count']}")),
            ("NME inter-pupil", cells(lambda c: f"{c['nme_pupil']:.4f}")),
            ("NME outer-corner", cells(lambda c: f"{c['nme_corner']:.4f}"))]
    for t in FR_THRESHOLDS:
        rows.append((f"FR@{t:g} / AUC@{t:g}", cells(lambda c: f"{c[f'fr@{t:g}']:.4f} / {c[f'auc@{t:g}']:.4f}")))
    rows.append(("NME p50/p90/p95/p99",
                 cells(lambda c: " / ".join(f"{c[k]:.4f}" for k in ("p50", "p90", "p95", "p99")))))
    rows.append(("NME per region", [""] * len(columns)))
    rows += [(f"  {region}", cells(lambda c: f"{c['regions'][region]:.4f}")) for region in summary["regions"]]
    rows = rows if refined else rows[1:]
    width = max(len(name) for name, _ in rows)
    widths = [max(len(values[i]) for _, values in rows) for i in range(len(columns))]
    lines = [f"  {name:<{width}}  " + "  ".join(v.ljust(w) for v, w in zip(values, widths)) for name, values in rows]
    return "\n".join([title] + [line.rstrip() for line in lines])


def evaluate_checkpoint(ckpt: Path, data_root: Path, split: str, out_dir: Path | None,
                        batch_size: int | None = None, overrides: list[str] | None = None) -> dict:
    """Evaluate a checkpoint on ROOT/<split> with the detector boxes of its config.

    Writes OUT/metrics_<split>.json and OUT/ced_<split>.png (OUT defaults to the checkpoint's
    folder), prints a table, and returns the JSON dict: metrics (the single pass, see
    metrics.summarize, image pixels), refined (when the config's infer section, with `overrides`
    (`--set infer.KEY=VALUE`), asks for flip averaging or more passes: {"infer", "metrics",
    "nme_pupil" per face}; else null), checkpoint (path, sha256, epoch, val_nme, arch, weights:
    where the initial weights came from, input: mean/std), data (root, split, detector, scheme,
    input_size, on_miss, limit, faces, misses, skipped, fingerprint), inference (device, batch_size,
    precision, infer), per_face (stems and 1-pass pupil NME). Warns on stderr when the split's data
    fingerprint differs from the one the checkpoint recorded at training time (facemark.data.fingerprint).
    """
    from facemark.model import load_checkpoint, weights_source
    from facemark.runtime import TorchRunner
    from facemark.runtime.refine import from_config
    from facemark.train.engine import resolve_device

    ckpt = Path(ckpt)
    model, cfg, raw = load_checkpoint(ckpt)
    refinement = from_config(cfg, overrides, "eval", str(ckpt))
    fingerprint = fingerprint_split(Path(data_root), split, cfg.data)
    warn_if_changed((raw.get("data_fingerprint") or {}).get(split), fingerprint, f"the one {ckpt} recorded")
    crop_set = load_crop_set(Path(data_root), split, cfg.data)
    device = resolve_device(cfg.train.device)
    batch_size = batch_size or cfg.validate.batch
    predict = TorchRunner(model, cfg.data.input_size, device=device, batch=batch_size).predict
    first = predict(refinement.pass_crops(crop_set.crops))
    summary, per_face = evaluate_predictions(first[:len(crop_set)], crop_set, cfg.data.scheme, cfg.data.input_size)
    refined = None
    if refinement.active:
        images = SplitImages(Path(data_root), crop_set, cfg.data.max_image_pixels)
        norm = refinement.run(predict, crop_set.crops, crop_set.matrices, images, first=first)
        refined_summary, refined_face = evaluate_predictions(norm, crop_set, cfg.data.scheme, cfg.data.input_size)
        refined = {"infer": refinement.record(), "metrics": refined_summary,
                   "nme_pupil": [float(v) for v in refined_face]}
    result = {
        "metrics": summary,
        "refined": refined,
        "checkpoint": {"path": str(ckpt), "sha256": sha256_of(ckpt), "epoch": raw.get("epoch"),
                       "val_nme": raw.get("val_nme"), "arch": cfg.model.arch,
                       "weights": weights_source(model).record(), "input": weights_source(model).norm.to_dict()},
        "data": {"root": str(data_root), "split": split, "detector": crop_set.detector,
                 "scheme": cfg.data.scheme, "input_size": cfg.data.input_size, "on_miss": cfg.data.on_miss,
                 "limit": cfg.data.limit, "faces": len(crop_set), "misses": len(crop_set.misses),
                 "skipped": len(crop_set.skipped), "fingerprint": fingerprint},
        # float32 on this device; CUDA and CPU kernels agree to ~1e-6 relative, not bit for bit
        "inference": {"device": str(device), "batch_size": batch_size, "precision": "float32",
                      "infer": refinement.record()},
        "per_face": {"stems": crop_set.stems, "nme_pupil": [float(v) for v in per_face]},
    }
    _write_outputs(result, ckpt, out_dir, cfg.model.arch, refinement.label, crop_set)
    return result


def _write_outputs(result: dict[str, Any], ckpt: Path, out_dir: Path | None, arch: str, refined_label: str,
                   crop_set) -> None:
    """OUT/metrics_<split>.json, OUT/ced_<split>.png (OUT: `out_dir`, else the checkpoint's folder)
    and the table on the terminal."""
    from facemark.plots import plot_ced

    split, refined = result["data"]["split"], result["refined"]
    out_dir = Path(out_dir) if out_dir is not None else ckpt.parent
    metrics_path = out_dir / f"metrics_{split}.json"
    atomic_write_text(metrics_path, json.dumps(result, indent=2) + "\n")
    curves = {f"{arch} ({split})": np.asarray(result["per_face"]["nme_pupil"])}
    if refined is not None:
        curves[f"{arch} ({split}, {refined_label})"] = np.asarray(refined["nme_pupil"])
    plot_path = plot_ced(curves, CED_THRESHOLD, out_dir / f"ced_{split}.png")
    title = (f"{ckpt} on {Path(result['data']['root']) / split} (detector {crop_set.detector}: "
             f"{len(crop_set.misses)} misses, {len(crop_set.skipped)} skipped)")
    print(format_table(result["metrics"], title, None if refined is None else (refined_label, refined["metrics"])))
    print(f"wrote {metrics_path} and {plot_path}")
