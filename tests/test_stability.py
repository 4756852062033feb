"""validate/stability.py: the crop shifts and sensor noise of the stability column, and its figures
from known movements."""

from __future__ import annotations

import numpy as np


def test_stability_figures_from_known_movements():
    """Zero shift keeps the crop matrix; a prediction moved by d crop pixels on every noise draw
    gives d / (crop scale x inter-pupil distance) for the noise kind and 0 for the shift kind."""
    from facemark import codec
    from facemark.validate.stability import perturb, shifted_matrix, stability

    size, margin = 64, 0.2
    matrix = codec.crop_matrix(np.array([10.0, 20.0, 50.0, 70.0]), size, margin)
    np.testing.assert_allclose(shifted_matrix(matrix, size, margin, 0.0, 0.0, 0.0), matrix, atol=1e-12)
    moved = shifted_matrix(matrix, size, margin, 0.02, 0.0, 0.0)   # 2 % of the 50 px box side = 1 px
    np.testing.assert_allclose(codec.apply_affine(np.array([[31.0, 45.0]]), moved),
                               codec.apply_affine(np.array([[30.0, 45.0]]), matrix), atol=1e-9)
    image = np.zeros((96, 96, 3), np.uint8)
    pert = perturb([image, image], np.zeros((2, size, size, 3), np.uint8), np.stack([matrix, matrix]),
                   size, margin, draws=3, shift=0.0, noise=2.0)
    assert len(pert.crops) == 2 * 2 * 3 and list(pert.kind[:6]) == [0, 0, 0, 1, 1, 1]
    base = np.zeros((2, 4, 2))
    perturbed = base[pert.face].copy()
    perturbed[pert.kind == 1] += 0.1   # normalised units: 0.1 * S/2 = 3.2 crop px in x and y
    ipd = np.array([20.0, 40.0])
    figures = stability(base, np.stack([matrix, matrix]), perturbed, pert, ipd, size)
    step_px = 0.1 * size / 2 / matrix[0, 0] * np.sqrt(2)        # image pixels moved by every point
    assert figures["shift"] < 1e-6
    np.testing.assert_allclose(figures["noise"], np.median(step_px / ipd), rtol=1e-5)
