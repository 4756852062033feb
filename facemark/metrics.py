"""Landmark accuracy metrics, pure numpy: NME, failure rate, CED and its AUC, percentiles, regions.

All functions take predictions and ground truth as (N, P, 2) arrays in the SAME units (image
pixels everywhere in facemark), and normalise each face's mean point-to-point error by a distance
measured on the ground truth:
- "pupil": the inter-pupil distance (Scheme.interpupil; a pupil is the mean of a group of points,
  so iBUG 68 uses the eye-contour centres). This is the paper's metric.
- "corner": the outer-eye-corner distance (the 300-W / WFLW "inter-ocular" convention).

A prediction that is NaN or infinite is refused (ArtifactError): averaging it away, or letting it
turn the mean into NaN that a later `<` comparison silently treats as "not worse", would let a
broken model report a plausible number.

`frame_motion` is the video counterpart: landmark movement between consecutive frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from facemark.errors import ArtifactError, DataError
from facemark.schemes import Scheme

FR_THRESHOLDS = (0.1, 0.08)
PERCENTILES = (50, 90, 95, 99)


def _normalisers(scheme: Scheme) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    return {"pupil": scheme.interpupil, "corner": scheme.intercorner}


def _checked(pred: np.ndarray, gt: np.ndarray, scheme: Scheme) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and finiteness -> (pred, gt) as float64 (N, P, 2)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    expected = f"(N, {scheme.num_points}, 2) for scheme {scheme.name}"
    if gt.ndim != 3 or gt.shape[1:] != (scheme.num_points, 2):
        raise DataError(f"ground truth has shape {gt.shape}, expected {expected}")
    if pred.shape != gt.shape:
        raise ArtifactError(f"predictions have shape {pred.shape}, ground truth {gt.shape}; expected {expected}")
    if len(gt) == 0:
        raise DataError("no faces to evaluate (0 ground-truth faces)")
    bad = np.flatnonzero(~np.isfinite(pred).all(axis=(1, 2)))
    if bad.size:
        raise ArtifactError(f"predictions contain NaN/inf for {bad.size} of {len(pred)} faces (first: face "
                            f"{int(bad[0])}); the model or artifact is broken, refusing to report an NME")
    if not np.isfinite(gt).all():
        raise DataError("ground truth contains NaN/inf landmarks")
    return pred, gt


def _norm_distance(gt: np.ndarray, scheme: Scheme, norm: str) -> np.ndarray:
    """(N, P, 2) ground truth -> (N,) normalising distance; zero distance is a data error."""
    normalisers = _normalisers(scheme)
    if norm not in normalisers:
        raise ValueError(f"unknown NME normalisation {norm!r}; valid: {', '.join(normalisers)}")
    dist = normalisers[norm](gt)
    zero = np.flatnonzero(dist <= 0)
    if zero.size:
        raise DataError(f"{norm} distance is zero for {zero.size} faces (first: face {int(zero[0])}); "
                        f"the ground truth is degenerate")
    return dist


def point_errors(pred: np.ndarray, gt: np.ndarray, scheme: Scheme, norm: str = "pupil") -> np.ndarray:
    """(N, P, 2) pred and gt -> (N, P) point-to-point distances divided by each face's norm distance."""
    pred, gt = _checked(pred, gt, scheme)
    dist = _norm_distance(gt, scheme, norm)
    return np.linalg.norm(pred - gt, axis=-1) / dist[:, None]


def nme(pred: np.ndarray, gt: np.ndarray, scheme: Scheme, norm: str = "pupil") -> np.ndarray:
    """Per-face NME -> (N,): mean over the P points of |pred - gt|, divided by the `norm` distance
    ("pupil" or "corner") of the ground truth. Unitless; pred and gt (N, P, 2) in the same units."""
    return point_errors(pred, gt, scheme, norm).mean(axis=1)


def _checked_nmes(nmes: np.ndarray, threshold: float) -> np.ndarray:
    nmes = np.asarray(nmes, dtype=np.float64).reshape(-1)
    if nmes.size == 0:
        raise ValueError("no NME values given")
    if not np.isfinite(nmes).all():
        raise ArtifactError("per-face NME contains NaN/inf; refusing to summarise it")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    return nmes


def failure_rate(nmes: np.ndarray, threshold: float = 0.1) -> float:
    """Fraction of faces whose NME is above `threshold` (a face exactly at it is not a failure)."""
    nmes = _checked_nmes(nmes, threshold)
    return float(np.mean(nmes > threshold))


def auc(nmes: np.ndarray, threshold: float = 0.1) -> float:
    """Area under the CED curve on [0, threshold], divided by threshold -> [0, 1].

    The CED is F(x) = fraction of faces with NME <= x. Its integral has a closed form: each face
    contributes max(0, threshold - nme) / N, so this is exact, where the usual WFLW code
    (Simpson's rule on a 1e-4 grid) approximates the same number to about 1e-4.
    """
    nmes = _checked_nmes(nmes, threshold)
    return float(np.mean(np.clip(threshold - nmes, 0.0, threshold)) / threshold)


def ced(nmes: np.ndarray, threshold: float = 0.1, steps: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution -> (xs (steps,) evenly spaced on [0, threshold],
    fractions (steps,) of faces with NME <= x)."""
    nmes = _checked_nmes(nmes, threshold)
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    xs = np.linspace(0.0, threshold, steps)
    fractions = (nmes[None, :] <= xs[:, None]).mean(axis=1)
    return xs, fractions


def region_nme(pred: np.ndarray, gt: np.ndarray, scheme: Scheme, norm: str = "pupil") -> dict[str, float]:
    """Mean NME of each scheme region (contour, brows, ...): for every face the mean normalised
    error over the region's points, then the mean over faces."""
    errors = point_errors(pred, gt, scheme, norm)
    return {region: float(errors[:, list(idx)].mean(axis=1).mean()) for region, idx in scheme.regions.items()}


def summarize(pred: np.ndarray, gt: np.ndarray, scheme: Scheme) -> dict:
    """Every reported number for (N, P, 2) pred and gt in the same units, as plain floats/ints.

    Keys: nme_pupil, nme_corner (means), fr@T and auc@T for T in FR_THRESHOLDS (on the pupil NME),
    p50/p90/p95/p99 (percentiles of the per-face pupil NME), regions ({region: pupil NME}), count.
    """
    per_face = nme(pred, gt, scheme, "pupil")
    summary: dict = {
        "nme_pupil": float(per_face.mean()),
        "nme_corner": float(nme(pred, gt, scheme, "corner").mean()),
    }
    for threshold in FR_THRESHOLDS:
        summary[f"fr@{threshold:g}"] = failure_rate(per_face, threshold)
        summary[f"auc@{threshold:g}"] = auc(per_face, threshold)
    for q in PERCENTILES:
        summary[f"p{q}"] = float(np.percentile(per_face, q))
    summary["regions"] = region_nme(pred, gt, scheme, "pupil")
    summary["count"] = int(len(per_face))
    return summary


def frame_motion(points: list[np.ndarray | None], ipd_px: list[float | None]) -> dict[str, Any] | None:
    """Frame-to-frame movement on a video: for consecutive frames that both have a face, the RMS
    movement of its (P, 2) image-pixel landmarks divided by the inter-pupil distance of the
    earlier frame -> {"median", "p90", "pairs"}, or None with fewer than two such frames."""
    moves = [float(np.sqrt(((b - a) ** 2).sum(axis=-1).mean())) / ipd
             for a, b, ipd in zip(points, points[1:], ipd_px)
             if a is not None and b is not None and ipd]
    if not moves:
        return None
    return {"median": round(float(np.median(moves)), 6), "p90": round(float(np.percentile(moves, 90)), 6),
            "pairs": len(moves), "units": "RMS landmark movement between consecutive frames / inter-pupil distance"}


def trajectory_lag(pred: np.ndarray, truth: np.ndarray, max_lag: int = 5) -> float:
    """How many frames a predicted landmark trajectory trails the true one: (T, P, 2) predicted and
    (T, P, 2) true image-pixel landmarks of one face on consecutive frames -> the shift k (frames;
    positive: the prediction is behind) maximising the mean of v_pred[t + k] . v_true[t] over t,
    the velocities of the two landmark centroids, refined to a fraction of a frame by the parabola
    through the peak and its neighbours. Velocities, not positions: a slow drift would otherwise
    dominate the correlation and blur the peak."""
    v_pred = np.diff(np.asarray(pred, np.float64).mean(axis=1), axis=0)
    v_true = np.diff(np.asarray(truth, np.float64).mean(axis=1), axis=0)
    if v_pred.shape != v_true.shape or len(v_true) < 2 * max_lag + 2:
        raise DataError(f"trajectory_lag: need two equal trajectories of more than {2 * max_lag + 2} frames, "
                        f"got {len(pred)} and {len(truth)}")
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.array([(v_pred[k:] * v_true[:len(v_true) - k]).sum(axis=1).mean() if k >= 0
                       else (v_pred[:k] * v_true[-k:]).sum(axis=1).mean() for k in lags])
    peak = int(np.argmax(scores))
    if 0 < peak < len(lags) - 1:
        left, mid, right = scores[peak - 1:peak + 2]
        curvature = left - 2 * mid + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        return float(lags[peak] + offset)
    return float(lags[peak])
