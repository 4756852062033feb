"""Landmark stability: how far an artifact's landmarks move when its input moves a little.

Phone apps run landmarks on camera streams, where jitter shows as much as error, and int8 models
can jitter more than their float source. For each of F test faces (the first F of the split)
and K draws of each kind, seeded (STABILITY_SEED):
- "shift": the face box moved by up to `shift` x its side in x and y and resized by up to
  `shift` (uniform), as a detector's box jitters from frame to frame; the crop is taken again
  from the photo;
- "noise": Gaussian sensor noise of sigma `noise` uint8 levels added to the crop (rounded, clipped).
Each perturbed prediction is mapped to image pixels through its own crop matrix and compared with
the same artifact's prediction on the unperturbed crop. A face's figure is the RMS point movement
over its P points and K draws divided by its ground-truth inter-pupil distance; the reported
`stability` is the median over faces of both kinds together (`shift`, `noise`: each kind alone;
`p90`: 90th percentile over faces). 0 is perfectly stable; lower is better.

`facemark predict` on a video reports the frame-to-frame counterpart (facemark.metrics.frame_motion),
which also contains the face's real motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from facemark import codec

STABILITY_SEED = 0
KINDS = ("shift", "noise")


@dataclass
class Perturbations:
    """M = F x 2K perturbed crops of F faces. crops (M, S, S, 3) uint8 RGB; matrices (M, 2, 3)
    image -> crop of each; face (M,) index into the F faces; kind (M,) index into KINDS."""

    crops: np.ndarray
    matrices: np.ndarray
    face: np.ndarray
    kind: np.ndarray
    settings: dict[str, Any]


def shifted_matrix(matrix: np.ndarray, size: int, margin: float, dx: float, dy: float, grow: float) -> np.ndarray:
    """The (2, 3) image -> crop affine of the crop box moved by (dx, dy) box sides and scaled by
    (1 + grow); `matrix` is codec.crop_matrix's (scale s, crop centre at image point c)."""
    scale = float(matrix[0, 0])
    centre = (size / 2.0 - matrix[:, 2]) / scale        # image pixels
    box_side = size / scale / (1.0 + margin)             # the face box, without the crop margin
    centre = centre + np.array([dx, dy]) * box_side
    new_scale = scale / (1.0 + grow)
    return np.array([[new_scale, 0.0, size / 2.0 - new_scale * centre[0]],
                     [0.0, new_scale, size / 2.0 - new_scale * centre[1]]])


def perturb(images: list[np.ndarray], crops: np.ndarray, matrices: np.ndarray, size: int, margin: float,
            draws: int, shift: float, noise: float) -> Perturbations:
    """Perturbed crops of F faces: `images` the F photos ((H, W, 3) uint8 RGB), `crops`
    (F, S, S, 3) and `matrices` (F, 2, 3) their evaluation crops; `draws` K of each kind."""
    rng = np.random.default_rng(STABILITY_SEED)
    out_crops, out_matrices, face, kind = [], [], [], []
    for i, image in enumerate(images):
        for _ in range(draws):
            dx, dy, grow = rng.uniform(-shift, shift, 3)
            matrix = shifted_matrix(matrices[i], size, margin, dx, dy, grow)
            out_crops.append(codec.warp_crop(image, matrix, size))
            out_matrices.append(matrix)
            face.append(i)
            kind.append(0)
        for _ in range(draws):
            noisy = crops[i].astype(np.float64) + rng.normal(0.0, noise, crops[i].shape)
            out_crops.append(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
            out_matrices.append(matrices[i])
            face.append(i)
            kind.append(1)
    settings = {"faces": len(images), "draws": draws, "shift_fraction": shift, "noise_sigma": noise,
                "seed": STABILITY_SEED}
    return Perturbations(np.stack(out_crops), np.stack(out_matrices), np.asarray(face), np.asarray(kind), settings)


def stability(base_norm: np.ndarray, base_matrices: np.ndarray, perturbed_norm: np.ndarray,
              perturbations: Perturbations, ipd_px: np.ndarray, size: int) -> dict[str, Any]:
    """The stability figures of one artifact (see the module docstring).

    base_norm (F, P, 2) and perturbed_norm (M, P, 2): normalised predictions on the F evaluation
    crops (matrices base_matrices (F, 2, 3)) and on the M perturbed crops; ipd_px (F,) inter-pupil
    distances in image pixels.
    """
    base = codec.to_image(base_norm, base_matrices, size)
    moved = codec.to_image(perturbed_norm, perturbations.matrices, size)
    squared = ((moved - base[perturbations.face]) ** 2).sum(axis=-1).mean(axis=-1)   # (M,) mean over points
    faces = len(base)

    def per_face(mask: np.ndarray) -> np.ndarray:
        totals = np.bincount(perturbations.face[mask], weights=squared[mask], minlength=faces)
        counts = np.bincount(perturbations.face[mask], minlength=faces)
        return np.sqrt(totals / np.maximum(counts, 1)) / ipd_px

    both = per_face(np.ones(len(squared), dtype=bool))
    figures = {"stability": float(np.median(both)), "p90": float(np.percentile(both, 90))}
    figures.update({name: float(np.median(per_face(perturbations.kind == k))) for k, name in enumerate(KINDS)})
    return {**{key: round(value, 6) for key, value in figures.items()}, **perturbations.settings,
            "units": "RMS landmark movement / inter-pupil distance, median over faces"}
