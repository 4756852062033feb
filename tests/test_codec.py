"""Crop geometry: pixels and landmarks move together; normalised <-> image round trip."""

import numpy as np

from facemark import codec


def test_crop_matrix_maps_square_to_crop():
    box = np.array([100.0, 50.0, 200.0, 130.0])  # 100 x 80
    matrix = codec.crop_matrix(box, size=224, margin=0.2)
    cx, cy, side = codec.square_box(box, 0.2)
    assert side == 120.0
    corners = np.array([[[cx - side / 2, cy - side / 2], [cx + side / 2, cy + side / 2], [cx, cy]]])
    np.testing.assert_allclose(codec.apply_affine(corners, matrix)[0], [[0, 0], [224, 224], [112, 112]])


def test_normalise_is_the_papers_mapping():
    np.testing.assert_allclose(codec.normalise(np.array([[112.0, 0.0], [224.0, 56.0]]), 224),
                               [[0.0, -1.0], [1.0, -0.5]])
    pts = np.random.default_rng(0).uniform(0, 224, (5, 2))
    np.testing.assert_allclose(codec.denormalise(codec.normalise(pts, 224), 224), pts)


def test_round_trip_image_to_normalised_and_back():
    rng = np.random.default_rng(1)
    points = rng.uniform(40, 300, (3, 106, 2))
    matrices = np.stack([codec.crop_matrix(codec.landmark_box(p), 96, 0.25) for p in points])
    norm = codec.normalise(codec.apply_affine(points, matrices), 96)
    assert np.abs(norm).max() < 1.0
    np.testing.assert_allclose(codec.to_image(norm, matrices, 96), points, atol=1e-9)


def test_warp_moves_pixels_with_points():
    image = np.zeros((300, 400, 3), np.uint8)
    image[150, 250] = 255  # one bright pixel at x=250, y=150
    matrix = codec.crop_matrix(np.array([200.0, 100.0, 300.0, 200.0]), 100, 0.0)
    crop = codec.warp_crop(image, matrix, 100)
    expected = codec.apply_affine(np.array([[250.0, 150.0]]), matrix)[0]
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert abs(x - expected[0]) <= 0.5 and abs(y - expected[1]) <= 0.5


def test_invert_affine_batched():
    m = np.stack([codec.crop_matrix(np.array([0, 0, 10 + i, 20]), 64, 0.1) for i in range(4)])
    inv = codec.invert_affine(m)
    pts = np.random.default_rng(2).uniform(0, 64, (4, 7, 2))
    np.testing.assert_allclose(codec.apply_affine(codec.apply_affine(pts, inv), m), pts, atol=1e-9)
