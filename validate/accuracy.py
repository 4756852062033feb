"""Accuracy of one artifact's predictions: NME in image pixels, and parity with PyTorch in crop pixels.

Inputs are the runners' output, (N, P, 2) normalised crop coordinates, and the CropSet they were
computed on. NME is measured where the paper measures it, in the original photo: predictions go
back through each crop's matrix (codec.to_image) and are compared with the image-pixel ground
truth by facemark.metrics.summarize. Parity is how far an artifact moved each landmark from
PyTorch's on the same crop, in crop pixels, which is what a converter or quantiser changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facemark import codec, metrics
from facemark.data.crops import CropSet
from facemark.schemes import Scheme

WORST_IMAGES = 5   # images listed per artifact, largest landmark deviation from PyTorch first


def image_points(pred_norm: np.ndarray, crop_set: CropSet, size: int) -> np.ndarray:
    """(N, P, 2) normalised -> (N, P, 2) image pixels through the crop matrices."""
    return codec.to_image(pred_norm, crop_set.matrices, size)


def accuracy(pred_norm: np.ndarray, crop_set: CropSet, scheme: Scheme, size: int) -> tuple[dict[str, Any], np.ndarray]:
    """-> (metrics.summarize of the image-pixel predictions, (N,) per-face inter-pupil NME).

    The summary holds nme_pupil, nme_corner, fr@0.1, auc@0.1 (and @0.08), p50/p90/p95/p99,
    regions and count. Non-finite predictions raise ArtifactError (from facemark.metrics).
    """
    pred = image_points(pred_norm, crop_set, size)
    return metrics.summarize(pred, crop_set.points, scheme), metrics.nme(pred, crop_set.points, scheme, "pupil")


def parity(pred_norm: np.ndarray, reference_norm: np.ndarray, stems: list[str], size: int,
           worst: int = WORST_IMAGES) -> dict[str, Any]:
    """Per-image landmark deviation from the reference, in crop pixels.

    For each image: the mean and the max over its P points of |pred - reference|. Reported: the
    mean of the per-image means, the 99th percentile of all N x P point deviations (p99_px), the
    max of the per-image maxima, and the `worst` images by their max deviation (stem and px), so a
    regression can be looked at image by image.
    """
    half = size / 2.0   # normalised -> crop pixels is a scale by S/2 (the offset cancels)
    deviation = np.linalg.norm((np.asarray(pred_norm, np.float64) - reference_norm) * half, axis=-1)
    per_image_mean, per_image_max = deviation.mean(axis=1), deviation.max(axis=1)
    order = np.argsort(-per_image_max, kind="stable")[:worst]
    return {"mean_px": float(per_image_mean.mean()), "p99_px": float(np.percentile(deviation, 99)),
            "max_px": float(per_image_max.max()),
            "worst": [{"stem": stems[i], "max_px": float(per_image_max[i]),
                       "mean_px": float(per_image_mean[i])} for i in order]}


def delta(nme: float, reference_nme: float, reference: str) -> dict[str, Any]:
    """NME difference to a reference row: absolute and relative ((nme - ref) / ref; None when the
    reference is a perfect 0, which no real model reaches)."""
    return {"reference": reference, "reference_nme": reference_nme, "abs": nme - reference_nme,
            "rel": (nme - reference_nme) / reference_nme if reference_nme > 0 else None}
