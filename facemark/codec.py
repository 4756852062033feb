"""Crop geometry and the landmark codec shared by every stage.

Coordinate spaces (all (..., P, 2) arrays of x, y):
- image pixels: 0-based pixel coordinates of the original photo (pixel centres at integers);
- crop pixels: the same in the S x S crop, related to image pixels by a 2x3 affine `matrix`
  (image -> crop) that cv2.warpAffine also uses, so pixels and points move together exactly;
- normalised: (crop - S/2) / (S/2), the network's target and output; the crop centre is 0 and
  the crop borders are about -1 and +1.

A box is (x0, y0, x1, y1) in image pixels. The crop is the square of side max(w, h) * (1 + margin)
centred on the box.
"""

from __future__ import annotations

import cv2
import numpy as np


def square_box(box: np.ndarray, margin: float) -> tuple[float, float, float]:
    """(4,) box -> (cx, cy, side) of the margin-expanded square around it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 1.0) * (1.0 + margin)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, side


def crop_matrix(box: np.ndarray, size: int, margin: float) -> np.ndarray:
    """(2, 3) float64 affine mapping image pixels to the pixels of the S x S crop of `box`."""
    cx, cy, side = square_box(box, margin)
    scale = size / side
    return np.array([[scale, 0.0, size / 2.0 - scale * cx],
                     [0.0, scale, size / 2.0 - scale * cy]])


def warp_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Resample the (H, W, 3) uint8 image through `matrix` into a (S, S, 3) crop in one step.

    Area interpolation when shrinking a lot would be slightly sharper, but a single bilinear
    warp keeps pixels and landmarks related by exactly `matrix`; outside the photo is black.
    """
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., P, 2) points through a (2, 3) or (..., 2, 3) affine -> (..., P, 2)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear, offset = matrix[..., :, :2], matrix[..., :, 2]
    out = np.einsum("...ij,...pj->...pi", linear, points.astype(np.float64)) + offset[..., None, :]
    return out


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affines -> the (2, 3) affine applying `inner` first, then `outer`."""
    return np.asarray(outer, dtype=np.float64) @ np.vstack([inner, [0.0, 0.0, 1.0]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (..., 2, 3) affine, as (..., 2, 3)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear_inv = np.linalg.inv(matrix[..., :, :2])
    offset = -np.einsum("...ij,...j->...i", linear_inv, matrix[..., :, 2])
    return np.concatenate([linear_inv, offset[..., None]], axis=-1)


def normalise(crop_points: np.ndarray, size: int) -> np.ndarray:
    """Crop pixels -> normalised: (P - S/2) / (S/2)."""
    half = size / 2.0
    return (crop_points - half) / half


def denormalise(norm_points: np.ndarray, size: int) -> np.ndarray:
    """Normalised -> crop pixels: P * S/2 + S/2."""
    half = size / 2.0
    return norm_points * half + half


def to_image(norm_points: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Network output back to the original photo: (N, P, 2) normalised + (N, 2, 3) image->crop
    matrices -> (N, P, 2) image pixels. The one inverse mapping every stage uses."""
    return apply_affine(denormalise(np.asarray(norm_points, dtype=np.float64), size), invert_affine(matrix))


def landmark_box(points: np.ndarray) -> np.ndarray:
    """(P, 2) image-pixel landmarks -> (4,) tight box (x0, y0, x1, y1)."""
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (4,) boxes (x0, y0, x1, y1); 0.0 when either is empty."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
