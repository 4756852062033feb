"""The training pipeline keeps pixels and landmarks together through box jitter, warp and augmentation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark import codec
from facemark.config import load_config
from facemark.data.crops import to_input
from facemark.data.layout import Sample, write_landmarks
from facemark.errors import DataError
from facemark.train.augment import TrainFaces, build_crop_augment, normalise_crop, shift_box
from facemark.weights import HALF, IMAGENET, Normalisation

IMAGE = 128
SIZE = 96
POINTS = 68


def _points(seed: int = 0) -> np.ndarray:
    """(68, 2) image pixels on an ellipse around the image centre (a face-sized box of ~80 px)."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0.0, 2.0 * np.pi, POINTS, endpoint=False)
    pts = np.stack([64 + 36 * np.cos(angles), 62 + 42 * np.sin(angles)], axis=1)
    return pts + rng.uniform(-1.5, 1.5, pts.shape)


def _write_face(folder: Path, stem: str, image_rgb: np.ndarray, points: np.ndarray) -> Sample:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    image_path = folder / "images" / f"{stem}.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    marks = folder / "landmarks" / f"{stem}.txt"
    marks.parent.mkdir(parents=True, exist_ok=True)
    write_landmarks(marks, points)
    return Sample("train", stem, image_path, marks)


def _marker_image(point: np.ndarray, sigma: float = 1.6) -> np.ndarray:
    """Black image with a bright Gaussian spot centred exactly on `point` (sub-pixel)."""
    ys, xs = np.mgrid[0:IMAGE, 0:IMAGE]
    spot = np.exp(-((xs - point[0]) ** 2 + (ys - point[1]) ** 2) / (2 * sigma**2))
    return np.repeat((230 * spot).astype(np.uint8)[..., None], 3, axis=2)


def _spot_centroid(crop: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid of the bright spot, background (whatever contrast made of it) removed."""
    gray = crop.astype(np.float64).mean(axis=2)
    background = np.median(gray)
    weights = np.clip(gray - background, 0, None)
    weights[weights < 0.2 * weights.max()] = 0
    ys, xs = np.mgrid[0:crop.shape[0], 0:crop.shape[1]]
    return np.array([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def _cfg(*overrides: str):
    return load_config(overrides=[f"data.input_size={SIZE}", "data.scheme=ibug68", *overrides])


@pytest.mark.parametrize("landmark", [0, 17, 40])
def test_marker_follows_its_landmark_through_the_full_pipeline(tmp_path, landmark):
    """Box shift, warp, rotation up to 35 degrees and colour jitter: the drawn spot stays on the point."""
    cfg = _cfg("data.landmark_box_prob=1.0", "augment.rotate=35", "augment.box_shift=0.05")
    points = _points(landmark)
    sample = _write_face(tmp_path, "marker", _marker_image(points[landmark]), points)
    faces = TrainFaces([sample], POINTS, cfg.data, cfg.augment, detector_boxes=None, seed=3, norm=IMAGENET)
    errors = []
    for epoch in range(6):   # six different random draws of box shift, angle and colour
        faces.set_epoch(epoch)
        face = faces.face(0)
        errors.append(np.linalg.norm(_spot_centroid(face.crop) - face.crop_points[landmark]))
    assert max(errors) < 1.0, errors


@pytest.mark.parametrize("rotate", [0.0, 35.0])
def test_stored_matrix_maps_targets_back_to_image_points(tmp_path, rotate):
    cfg = _cfg("data.landmark_box_prob=1.0", f"augment.rotate={rotate}")
    points = _points(1)
    sample = _write_face(tmp_path, "face", np.full((IMAGE, IMAGE, 3), 90, np.uint8), points)
    faces = TrainFaces([sample], POINTS, cfg.data, cfg.augment, detector_boxes=None, seed=0, norm=IMAGENET)
    _, target = faces[0]
    face = faces.face(0)
    norm = target.numpy().reshape(1, POINTS, 2)
    back = codec.to_image(norm, face.matrix[None], SIZE)[0]
    assert np.abs(back - points).max() < 1e-3
    if rotate == 0.0:
        # no rotation: the matrix is exactly the crop matrix of some box, a pure scale + shift
        assert face.matrix[0, 1] == pytest.approx(0.0, abs=1e-9)
        assert face.matrix[0, 0] == pytest.approx(face.matrix[1, 1])


def test_item_is_normalised_image_and_flat_target(tmp_path):
    cfg = _cfg("data.landmark_box_prob=1.0")
    rng = np.random.default_rng(0)
    sample = _write_face(tmp_path, "noise", rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8), _points())
    image, target = TrainFaces([sample], POINTS, cfg.data, cfg.augment, None, seed=0, norm=IMAGENET)[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype.is_floating_point and str(image.dtype) == "torch.float32"
    assert target.shape == (2 * POINTS,) and str(target.dtype) == "torch.float32"
    assert -2.2 < float(image.min()) and float(image.max()) < 2.7   # ImageNet-normalised range
    crop = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for norm in (IMAGENET, HALF, Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))):   # ResNet, Lite, MobileViT
        assert np.abs(normalise_crop(crop, norm) - to_input(crop[None], norm)[0]).max() < 1e-5


def test_same_seed_epoch_index_gives_the_same_sample(tmp_path):
    cfg = _cfg("data.landmark_box_prob=1.0")
    sample = _write_face(tmp_path, "face", np.full((IMAGE, IMAGE, 3), 120, np.uint8), _points())
    faces = TrainFaces([sample], POINTS, cfg.data, cfg.augment, None, seed=5, norm=IMAGENET)
    first, again = faces[0], faces[0]
    assert np.array_equal(first[1].numpy(), again[1].numpy())
    faces.set_epoch(1)
    assert not np.array_equal(first[1].numpy(), faces[0][1].numpy())


def test_box_choice_detector_box_and_miss_fallback(tmp_path):
    """landmark_box_prob 0: the detector's box is used as is (no jitter here); a miss uses the landmarks."""
    cfg = _cfg("data.landmark_box_prob=0.0", "augment.box_shift=0", "augment.rotate=0")
    points = _points()
    samples = [_write_face(tmp_path, stem, np.zeros((IMAGE, IMAGE, 3), np.uint8), points) for stem in ("a", "b")]
    detector = np.array([20.0, 10.0, 110.0, 100.0])
    faces = TrainFaces(samples, POINTS, cfg.data, cfg.augment, {"a": detector, "b": None}, seed=0, norm=IMAGENET)
    margin = cfg.data.margin
    assert np.allclose(faces.face(0).matrix, codec.crop_matrix(detector, SIZE, margin))
    # landmark files hold rounded coordinates, hence the tolerance
    expected = codec.crop_matrix(codec.landmark_box(points), SIZE, margin)
    assert np.allclose(faces.face(1).matrix, expected, atol=1e-3)
    with pytest.raises(ValueError, match="detector_boxes"):
        TrainFaces(samples, POINTS, cfg.data, cfg.augment, None, seed=0, norm=IMAGENET)


def test_shift_box_moves_each_border_within_its_range():
    box = np.array([10.0, 20.0, 110.0, 70.0])          # 100 wide, 50 high
    rng = np.random.default_rng(0)
    assert np.array_equal(shift_box(box, 0.0, rng), box)
    moved = np.stack([shift_box(box, 0.1, rng) for _ in range(500)]) - box
    limits = np.array([10.0, 5.0, 10.0, 5.0])
    assert np.all(np.abs(moved) <= limits + 1e-9)
    assert np.all(np.abs(moved).max(axis=0) > 0.9 * limits)    # the whole range is used
    assert abs(np.corrcoef(moved[:, 0], moved[:, 2])[0, 1]) < 0.15   # borders move independently


def test_zero_strengths_disable_transforms():
    cfg = _cfg("augment.rotate=0", "augment.brightness=0", "augment.contrast=0", "augment.saturation=0",
               "augment.hue=0")
    assert len(build_crop_augment(cfg.augment).transforms) == 0
    assert len(build_crop_augment(_cfg().augment).transforms) == 2


def test_bad_landmark_file_is_refused_before_training(tmp_path):
    cfg = _cfg("data.landmark_box_prob=1.0")
    sample = _write_face(tmp_path, "bad", np.zeros((IMAGE, IMAGE, 3), np.uint8), _points())
    sample.landmarks_path.write_text("68\n1 2\n")
    with pytest.raises(DataError, match="bad.txt"):
        TrainFaces([sample], POINTS, cfg.data, cfg.augment, None, seed=0, norm=IMAGENET)
