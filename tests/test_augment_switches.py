"""Recipe switches beyond the paper: horizontal flip, scale and translation jitter of the crop box.

Each is checked for what it does to pixels and labels, and for doing nothing at its default of 0
(the paper's recipe keeps exactly its old matrices and random draws).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from drawn_faces import draw_face
from facemark import codec
from facemark.config import load_config
from facemark.data.layout import Sample, write_landmarks
from facemark.errors import ConfigError
from facemark.schemes import load_scheme
from facemark.weights import IMAGENET
from facemark.train.augment import (TrainFaces, augment_face, build_crop_augment, jitter_box, mirror_matrix,
                                    shift_box)

SIZE = 96
STILL = ("augment.rotate=0", "augment.box_shift=0", "augment.brightness=0", "augment.contrast=0",
         "augment.saturation=0", "augment.hue=0", "data.landmark_box_prob=1.0")


def _drawn_sample(folder: Path, seed: int = 4) -> tuple[Sample, np.ndarray, np.ndarray]:
    """A drawn LaPa-106 face on disk -> (sample, (H, W, 3) RGB image, (106, 2) image points)."""
    image_bgr, points = draw_face(seed)
    for sub in ("images", "landmarks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "images" / "face.png"), image_bgr)
    write_landmarks(folder / "landmarks" / "face.txt", points)
    sample = Sample("train", "face", folder / "images" / "face.png", folder / "landmarks" / "face.txt")
    rounded = np.loadtxt(sample.landmarks_path, skiprows=1)   # the file's 3-decimal values
    return sample, cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB), rounded


def _faces(sample: Sample, *overrides: str) -> TrainFaces:
    cfg = load_config(overrides=[f"data.input_size={SIZE}", "data.scheme=lapa106", "data.landmark_box_prob=1.0",
                                 *overrides])
    return TrainFaces([sample], 106, cfg.data, cfg.augment, detector_boxes=None, seed=0, norm=IMAGENET)


@pytest.mark.parametrize("scheme", ["ibug68", "lapa106", "wflw98", "datatang106"])
def test_flipping_twice_is_the_identity(scheme):
    flip = list(load_scheme(scheme).flip)
    twice = codec.compose_affine(mirror_matrix(SIZE), mirror_matrix(SIZE))
    assert np.array_equal(twice, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    points = np.random.default_rng(0).uniform(0, SIZE, (len(flip), 2))
    once = codec.apply_affine(points, mirror_matrix(SIZE))[flip]
    assert not np.allclose(once, points)
    np.testing.assert_allclose(codec.apply_affine(once, mirror_matrix(SIZE))[flip], points, rtol=0, atol=1e-12)


def test_flipped_labels_sit_on_the_mirrored_features(tmp_path):
    """Drawn face: pupils are dark disks, eyes white. After the flip, label 104 (image-left pupil)
    is on a dark pixel left of label 105, and the crop is the unflipped crop mirrored about S/2."""
    sample, _, _ = _drawn_sample(tmp_path)
    plain = _faces(sample, *STILL).face(0)
    flipped = _faces(sample, *STILL, "augment.flip=1.0").face(0)
    assert flipped.flipped and not plain.flipped
    gray = flipped.crop.astype(float).mean(axis=2)
    for pupil in (104, 105):
        x, y = np.round(flipped.crop_points[pupil]).astype(int)
        assert gray[y, x] < 60, (pupil, gray[y, x])
    assert flipped.crop_points[104, 0] < SIZE / 2 < flipped.crop_points[105, 0]
    for eye_corner in (66, 79):   # outer corners: image-left eye, then image-right eye
        side = np.sign(flipped.crop_points[eye_corner, 0] - SIZE / 2)
        assert side == (-1 if eye_corner == 66 else 1)
    # mirror about S/2: flipped column j samples the image where plain column S - j did (one warp)
    diff = np.abs(flipped.crop[:, 1:].astype(int) - plain.crop[:, :0:-1].astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3
    flip = list(load_scheme("lapa106").flip)
    expected = plain.crop_points[flip] * [-1, 1] + [SIZE, 0]
    np.testing.assert_allclose(flipped.crop_points, expected, atol=1e-9)


def test_flipped_target_maps_back_to_the_permuted_image_points(tmp_path):
    sample, _, points = _drawn_sample(tmp_path)
    faces = _faces(sample, "augment.flip=1.0", "augment.rotate=30", "data.landmark_box_prob=1.0")
    _, target = faces[0]
    face = faces.face(0)
    back = codec.to_image(target.numpy().reshape(1, 106, 2), face.matrix[None], SIZE)[0]
    np.testing.assert_allclose(back, points[list(load_scheme("lapa106").flip)], atol=1e-3)


def test_flip_probability_is_honoured(tmp_path):
    sample, _, _ = _drawn_sample(tmp_path)
    faces = _faces(sample, *STILL, "augment.flip=0.5")
    flips = []
    for epoch in range(200):
        faces.set_epoch(epoch)
        flips.append(faces.face(0).flipped)
    assert 0.38 < np.mean(flips) < 0.62
    never = _faces(sample, *STILL)
    for epoch in range(20):
        never.set_epoch(epoch)
        assert not never.face(0).flipped


def test_jitter_box_ranges_and_independence():
    box = np.array([10.0, 20.0, 110.0, 70.0])          # 100 wide, 50 high
    rng = np.random.default_rng(0)
    assert np.array_equal(jitter_box(box, 0.0, 0.0, rng), box)
    jittered = np.stack([jitter_box(box, 0.1, 0.05, rng) for _ in range(2000)])
    zoom_x = (jittered[:, 2] - jittered[:, 0]) / 100.0
    zoom_y = (jittered[:, 3] - jittered[:, 1]) / 50.0
    np.testing.assert_allclose(zoom_x, zoom_y)          # one zoom for both axes: the shape is kept
    assert 0.9 - 1e-9 <= zoom_x.min() < 0.905 and 1.095 < zoom_x.max() <= 1.1 + 1e-9
    shift = (jittered[:, :2] + jittered[:, 2:]) / 2.0 - [60.0, 45.0]
    assert np.all(np.abs(shift) <= [5.0 + 1e-9, 2.5 + 1e-9])          # 5 % of width / height
    assert np.all(np.abs(shift).max(axis=0) > [4.9, 2.45])            # the whole range is used
    for a, b in ((zoom_x, shift[:, 0]), (zoom_x, shift[:, 1]), (shift[:, 0], shift[:, 1])):
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.08                     # drawn independently


def test_scale_and_translate_live_in_the_one_crop_warp(tmp_path):
    """The stored matrix is a pure zoom + shift whose zoom is within [1/(1+s), 1/(1-s)] of the
    unjittered one, and the crop is exactly warp_crop through it (no second resampling)."""
    sample, image, points = _drawn_sample(tmp_path)
    faces = _faces(sample, *STILL, "augment.scale=0.2", "augment.translate=0.1")
    reference = codec.crop_matrix(codec.landmark_box(points.astype(np.float32)), SIZE, faces.data_cfg.margin)
    ratios, offsets = [], []
    for epoch in range(60):
        faces.set_epoch(epoch)
        face = faces.face(0)
        assert face.matrix[0, 1] == 0.0 and face.matrix[0, 0] == face.matrix[1, 1]
        assert np.array_equal(face.crop, codec.warp_crop(image, face.matrix, SIZE))
        ratios.append(face.matrix[0, 0] / reference[0, 0])
        offsets.append(codec.apply_affine(points.mean(axis=0, keepdims=True), face.matrix)[0] - SIZE / 2)
    assert 1 / 1.2 - 1e-9 <= min(ratios) and max(ratios) <= 1 / 0.8 + 1e-9
    assert max(ratios) - min(ratios) > 0.3                # the zoom really varies
    assert np.ptp(np.array(offsets), axis=0).min() > 5.0   # and so does the face's place in the crop


def test_occlusion_covers_part_of_the_crop_and_leaves_the_labels(tmp_path):
    """augment.occlusion 1: every crop has one noise rectangle of at most occlusion_area of it
    (the rest is the unoccluded crop, pixel for pixel), and the targets do not move."""
    sample, image, points = _drawn_sample(tmp_path)
    plain = _faces(sample, *STILL)
    hidden = _faces(sample, *STILL, "augment.occlusion=1.0", "augment.occlusion_area=0.25")
    covered = []
    for epoch in range(20):
        for faces in (plain, hidden):
            faces.set_epoch(epoch)
        clean, occluded = plain.face(0), hidden.face(0)
        assert np.array_equal(clean.crop_points, occluded.crop_points)
        changed = (clean.crop != occluded.crop).any(axis=2)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        assert rows.size and (np.ptp(rows) + 1) * (np.ptp(cols) + 1) <= 0.25 * SIZE * SIZE + 2 * SIZE
        covered.append(changed.mean())
    assert 0.001 < min(covered) and max(covered) <= 0.26


def test_blur_softens_the_crop(tmp_path):
    sample, _, _ = _drawn_sample(tmp_path)
    plain, blurred = _faces(sample, *STILL), _faces(sample, *STILL, "augment.blur=1.0")
    sharpness = [cv2.Laplacian(faces.face(0).crop, cv2.CV_64F).var() for faces in (plain, blurred)]
    assert sharpness[1] < 0.8 * sharpness[0]


def test_defaults_keep_the_old_matrices_and_random_draws(tmp_path):
    """Switches at 0: the matrix is crop_matrix(shift_box(box)) as before, and exactly the old
    draws were consumed (the next number from the generator is the same)."""
    sample, image, points = _drawn_sample(tmp_path)
    cfg = load_config(overrides=[f"data.input_size={SIZE}", "data.scheme=lapa106", "augment.rotate=0",
                                 "augment.brightness=0", "augment.contrast=0", "augment.saturation=0",
                                 "augment.hue=0"])
    assert (cfg.augment.flip, cfg.augment.scale, cfg.augment.translate) == (0.0, 0.0, 0.0)
    box = codec.landmark_box(points)
    rng, old_rng = np.random.default_rng(11), np.random.default_rng(11)
    face = augment_face(image, points, box, cfg.data, cfg.augment, build_crop_augment(cfg.augment), rng)
    old_matrix = codec.crop_matrix(shift_box(box, cfg.augment.box_shift, old_rng), SIZE, cfg.data.margin)
    assert np.array_equal(face.matrix, old_matrix) and not face.flipped
    assert np.array_equal(face.crop, codec.warp_crop(image, old_matrix, SIZE))
    assert rng.random() == old_rng.random()


@pytest.mark.parametrize("override, key", [("augment.flip=1.5", "augment.flip"), ("augment.scale=1.0", "augment.scale"),
                                           ("augment.translate=-0.1", "augment.translate")])
def test_out_of_range_switch_is_named(tmp_path, override, key):
    sample, _, _ = _drawn_sample(tmp_path)
    with pytest.raises(ConfigError, match=key):
        _faces(sample, override)


def test_flip_needs_the_dataset_scheme(tmp_path):
    sample, _, _ = _drawn_sample(tmp_path)
    cfg = load_config(overrides=["data.scheme=ibug68", "augment.flip=0.5", "data.landmark_box_prob=1.0"])
    with pytest.raises(ConfigError, match="augment.flip: scheme 'ibug68' has 68 points"):
        TrainFaces([sample], 106, cfg.data, cfg.augment, detector_boxes=None, seed=0, norm=IMAGENET)
