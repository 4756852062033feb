"""`facemark eval`: a checkpoint's NME, FR, AUC, percentiles and CED plot on one split.

The faces are the split's evaluation CropSet (cached detector boxes, no augmentation), the
same crops every later stage uses; the metrics are computed in image pixels, after mapping the
network's normalised output back through each face's crop matrix. `predict_torch` is the one
PyTorch inference path, so `facemark validate` reports exactly the numbers `facemark eval` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facemark import codec
from facemark.data.crops import CropSet, load_crop_set, to_input
from facemark.data.fingerprint import fingerprint_split, warn_if_changed
from facemark.io import atomic_write_text, sha256_of
from facemark.metrics import FR_THRESHOLDS, nme, summarize
from facemark.schemes import load_scheme

CED_THRESHOLD = 0.1


def predict_torch(model: nn.Module, crop_set: CropSet, batch_size: int = 64,
                  device: torch.device | str | None = None) -> np.ndarray:
    """Run `model` (eval mode, inference_mode) on every crop -> (N, P, 2) float32 normalised crop
    coordinates (see codec.py). Inputs go through crops.to_input (RGB/255, the mean/std of the
    model's weights source, NCHW).

    The model is moved to `device` (default: where its parameters already are).
    """
    from facemark.model import weights_source

    norm = weights_source(model).norm
    if device is None:
        device = next(model.parameters()).device
    model = model.to(device).eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(crop_set), batch_size):
            batch = torch.from_numpy(to_input(crop_set.crops[start:start + batch_size], norm)).to(device)
            outputs.append(model(batch).float().cpu().numpy())
    flat = np.concatenate(outputs, axis=0)
    return flat.reshape(len(flat), -1, 2)


def evaluate_predictions(norm_points: np.ndarray, crop_set: CropSet, scheme_name: str,
                         input_size: int) -> tuple[dict, np.ndarray]:
    """(N, P, 2) normalised predictions -> (summarize() dict in image pixels, (N,) per-face pupil NME)."""
    scheme = load_scheme(scheme_name)
    pred_image = codec.to_image(norm_points, crop_set.matrices, input_size)
    return summarize(pred_image, crop_set.points, scheme), nme(pred_image, crop_set.points, scheme, "pupil")


def format_table(summary: dict, title: str) -> str:
    """A small fixed-width table of the headline numbers and the per-region NME."""
    rows = [("faces", f"{summary['count']}"), ("NME inter-pupil", f"{summary['nme_pupil']:.4f}"),
            ("NME outer-corner", f"{summary['nme_corner']:.4f}")]
    for threshold in FR_THRESHOLDS:
        rows.append((f"FR@{threshold:g} / AUC@{threshold:g}",
                     f"{summary[f'fr@{threshold:g}']:.4f} / {summary[f'auc@{threshold:g}']:.4f}"))
    rows.append(("NME p50/p90/p95/p99", " / ".join(f"{summary[k]:.4f}" for k in ("p50", "p90", "p95", "p99"))))
    rows.append(("NME per region", ""))
    rows += [(f"  {region}", f"{value:.4f}") for region, value in summary["regions"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name:<{width}}  {value}" for name, value in rows])


def evaluate_checkpoint(ckpt: Path, data_root: Path, split: str, out_dir: Path | None,
                        batch_size: int = 64) -> dict:
    """Evaluate a checkpoint on ROOT/<split> with the detector boxes of its config.

    Writes OUT/metrics_<split>.json and OUT/ced_<split>.png (OUT defaults to the checkpoint's
    folder), prints a table, and returns the JSON dict: metrics (see metrics.summarize, image
    pixels), checkpoint (path, sha256, epoch, val_nme, arch, weights: where the initial weights came
    from, input: mean/std), data (root, split, detector, scheme, input_size, on_miss, limit, faces,
    misses, skipped, fingerprint), inference (device, batch_size, precision), per_face (stems and pupil
    NME). Warns on stderr when the split's data fingerprint differs from the one the checkpoint
    recorded at training time (facemark.data.fingerprint).
    """
    from facemark.model import load_checkpoint, weights_source
    from facemark.plots import plot_ced
    from facemark.train.engine import resolve_device

    ckpt = Path(ckpt)
    model, cfg, raw = load_checkpoint(ckpt)
    fingerprint = fingerprint_split(Path(data_root), split, cfg.data)
    warn_if_changed((raw.get("data_fingerprint") or {}).get(split), fingerprint, f"the one {ckpt} recorded")
    crop_set = load_crop_set(Path(data_root), split, cfg.data)
    device = resolve_device(cfg.train.device)
    norm_points = predict_torch(model, crop_set, batch_size, device)
    summary, per_face = evaluate_predictions(norm_points, crop_set, cfg.data.scheme, cfg.data.input_size)
    result = {
        "metrics": summary,
        "checkpoint": {"path": str(ckpt), "sha256": sha256_of(ckpt), "epoch": raw.get("epoch"),
                       "val_nme": raw.get("val_nme"), "arch": cfg.model.arch,
                       "weights": weights_source(model).record(), "input": weights_source(model).norm.to_dict()},
        "data": {"root": str(data_root), "split": split, "detector": crop_set.detector,
                 "scheme": cfg.data.scheme, "input_size": cfg.data.input_size, "on_miss": cfg.data.on_miss,
                 "limit": cfg.data.limit, "faces": len(crop_set), "misses": len(crop_set.misses),
                 "skipped": len(crop_set.skipped), "fingerprint": fingerprint},
        # float32 on this device; CUDA and CPU kernels agree to ~1e-6 relative, not bit for bit
        "inference": {"device": str(device), "batch_size": batch_size, "precision": "float32"},
        "per_face": {"stems": crop_set.stems, "nme_pupil": [float(v) for v in per_face]},
    }
    out_dir = Path(out_dir) if out_dir is not None else ckpt.parent
    metrics_path = out_dir / f"metrics_{split}.json"
    atomic_write_text(metrics_path, json.dumps(result, indent=2) + "\n")
    plot_path = plot_ced({f"{cfg.model.arch} ({split})": per_face}, CED_THRESHOLD, out_dir / f"ced_{split}.png")
    title = (f"{ckpt} on {Path(data_root) / split} (detector {crop_set.detector}: {len(crop_set.misses)} misses, "
             f"{len(crop_set.skipped)} skipped)")
    print(format_table(summary, title))
    print(f"wrote {metrics_path} and {plot_path}")
    return result
