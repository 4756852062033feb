"""A tiny LaPa-layout dataset of cartoon faces drawn with cv2, with a box cache, for eval/benchmark tests.

The 106 LaPa points sit on the drawn features (contour, brows, nose, eyes, mouth, pupils) under a
random similarity transform, so a model can learn something and inter-pupil distances are
realistic (about 0.7 x the outer-corner distance, as in LaPa).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from facemark.codec import box_iou, landmark_box
from facemark.data.boxes import box_dir, write_box
from facemark.data.layout import write_landmarks
from margins import DATA_SEED

IMAGE_SIZE = 96


def _ellipse(cx: float, cy: float, rx: float, ry: float, count: int, start: float, stop: float) -> np.ndarray:
    angles = np.linspace(start, stop, count, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def template() -> np.ndarray:
    """(106, 2) LaPa-ordered points in a unit face frame (y down, face about [-0.8, 0.8] x [-0.5, 0.9])."""
    contour = _ellipse(0, 0, 0.8, 0.9, 33, np.pi, 0)                 # 0-32: through the chin
    contour[-1] = [0.8, 0.0]
    brows = np.concatenate([np.stack([np.linspace(-0.6, -0.15, 9), np.full(9, -0.5)], 1),
                            np.stack([np.linspace(0.15, 0.6, 9), np.full(9, -0.5)], 1)])   # 33-50
    nose = np.concatenate([np.stack([np.zeros(4), np.linspace(-0.3, 0.0, 4)], 1),
                           np.stack([np.linspace(-0.2, 0.2, 11), np.full(11, 0.15)], 1)])  # 51-65
    left_eye = np.concatenate([_ellipse(-0.35, -0.25, 0.15, 0.06, 8, np.pi, 3 * np.pi), [[-0.35, -0.25]]])
    right_eye = np.concatenate([_ellipse(0.35, -0.25, 0.15, 0.06, 8, np.pi, 3 * np.pi), [[0.35, -0.25]]])
    mouth = _ellipse(0, 0.45, 0.3, 0.1, 20, np.pi, 3 * np.pi)                                   # 84-103
    pupils = np.array([[-0.35, -0.25], [0.35, -0.25]])                                         # 104, 105
    return np.concatenate([contour, brows, nose, left_eye, right_eye, mouth, pupils])


def draw_face(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> ((IMAGE_SIZE, IMAGE_SIZE, 3) uint8 BGR image, (106, 2) image-pixel landmarks)."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(rng.uniform(-15, 15))
    scale = rng.uniform(22, 30)
    centre = IMAGE_SIZE / 2 + rng.uniform(-6, 6, 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = template() @ rotation.T * scale + centre
    image = rng.integers(40, 90, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    skin = tuple(int(v) for v in rng.integers(150, 230, 3))
    cv2.fillPoly(image, [np.round(np.concatenate([points[0:33], points[33:51][::-1]])).astype(np.int32)], skin)
    for group in (slice(33, 42), slice(42, 51), slice(51, 55), slice(55, 66)):
        cv2.polylines(image, [np.round(points[group]).astype(np.int32)], False, (60, 40, 30), 1)
    for group, colour in ((slice(66, 74), (250, 250, 250)), (slice(75, 83), (250, 250, 250)),
                          (slice(84, 104), (60, 60, 170))):
        cv2.fillPoly(image, [np.round(points[group]).astype(np.int32)], colour)
    for pupil in points[104:106]:
        cv2.circle(image, tuple(int(v) for v in np.round(pupil)), 2, (20, 20, 20), -1)
    return image, points


def make_drawn_split(root: Path, split: str, count: int, detector: str = "drawn", misses: tuple[int, ...] = (),
                     seed: int = 0) -> list[str]:
    """Write `count` drawn faces to ROOT/<split>/ and a box cache under boxes/<detector>/: the
    landmark box jittered by a few pixels, or `miss` for the indices in `misses`. Returns stems.
    FACEMARK_TEST_SEED (margins.DATA_SEED) shifts `seed`, so a margin audit can draw other faces."""
    seed += DATA_SEED
    rng = np.random.default_rng(seed + 1000)
    stems = []
    for i in range(count):
        stem = f"{split}{i:03d}"
        image, points = draw_face(seed * 100003 + zlib.crc32(split.encode()) % 1000 * 101 + i)
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "landmarks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / split / "images" / f"{stem}.png"), image)
        write_landmarks(root / split / "landmarks" / f"{stem}.txt", points)
        box = None if i in misses else landmark_box(points) + rng.uniform(-2, 2, 4)
        write_box(box_dir(root, split, detector) / f"{stem}.txt", box, score=0.99)
        stems.append(stem)
    return stems


def make_drawn_root(root: Path, train: int, val: int) -> Path:
    """ROOT with drawn train and val splits (`drawn` box caches): what quantize and qat tests share."""
    make_drawn_split(root, "train", train)
    make_drawn_split(root, "val", val)
    return root


def make_validation_root(root: Path, count: int) -> Path:
    """ROOT with a drawn test split (face 3 a detector miss) and a train split (calibration for
    `facemark quantize`), both with `drawn` box caches: what validate and predict tests share."""
    make_drawn_split(root, "test", count, detector="drawn", misses=(3,))
    make_drawn_split(root, "train", count, detector="drawn", seed=1)
    return root


def face_dependent_model(cfg, seed: int = 0):
    """A random model of cfg (eval mode) whose head is perturbed so its landmarks depend on the face."""
    import torch

    from facemark.model import build_model
    from facemark.schemes import load_scheme

    torch.manual_seed(seed + DATA_SEED)
    model = build_model(cfg.model, load_scheme(cfg.data.scheme).num_points).eval()
    with torch.no_grad():
        model.get_classifier().weight.normal_(0.0, 0.05)
    return model


def perturbed_model(cfg, seed: int | None = None):
    """A random model of cfg (eval mode) plus seeded noise on every weight; `seed` defaults to the
    audit seed (tests/margins.py)."""
    import torch

    from facemark.model import build_model
    from facemark.schemes import load_scheme

    torch.manual_seed(DATA_SEED if seed is None else seed)
    model = build_model(cfg.model, load_scheme(cfg.data.scheme).num_points).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def mean_face_model(cfg, seed: int = 0):
    """A random model of cfg (lapa106, eval mode) whose head outputs the drawn template filling
    1 / (1 + margin) of the crop, plus a small face-dependent part: its landmark box is the box it
    was cropped from, so a tracker keeps it (the lost check passes) without any training."""
    import torch

    model = face_dependent_model(cfg, seed)
    points = template()
    low, high = points.min(axis=0), points.max(axis=0)
    filled = (points - (low + high) / 2) / ((high - low).max() / 2) / (1.0 + cfg.data.margin)
    with torch.no_grad():
        model.get_classifier().weight.mul_(6.0)   # face-dependent movement of about 0.1 crop pixel
        model.get_classifier().bias.copy_(torch.tensor(filled.reshape(-1), dtype=torch.float32))
    return model


FRAME = np.zeros((240, 320, 3), np.uint8)   # the scripted scenes' frame: only its size matters
UNIT = np.array([[-1.0, -1.0], [1.0, -1.0], [0.0, 0.2], [-0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])


class ScriptedScene:
    """Faces per frame (their true (P, 2) points; None: not in this frame) and a fake landmarker
    and detector over them, for tracker tests (tests/test_tracking.py, the Java golden sequence):
    the model finds the face its crop overlaps by half (IoU) and collapses its points near the
    crop centre on a crop without one, as a landmark model does on background; the detector
    returns the faces whose centre is in view, a little off their landmark box."""

    def __init__(self, paths: list[list[np.ndarray]]) -> None:
        self.paths, self.frame = paths, 0
        self.detected_on: list[int] = []
        self.rng = np.random.default_rng(0)

    def truth(self) -> list[np.ndarray]:
        return [path[self.frame] for path in self.paths if path[self.frame] is not None]

    def detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        self.detected_on.append(self.frame)
        inside = [p for p in self.truth() if 0 <= p.mean(0)[0] < FRAME.shape[1]]   # most of the face in view
        boxes = [landmark_box(points) + np.array([-3.0, -6.0, 3.0, 2.0]) for points in inside]
        return sorted([(box, 0.99) for box in boxes], key=lambda d: -(d[0][2] - d[0][0]))

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = []
        for box in boxes:
            found = [p for p in self.truth() if box_iou(landmark_box(p), box) >= 0.5]
            centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            if found:
                out.append(found[0] + self.rng.normal(0.0, 0.3, found[0].shape))
            else:   # no face in the crop: the points collapse near its centre
                out.append(centre + 0.1 * UNIT * (box[2] - box[0]) / 2)
        return np.stack(out)


def face_path(start: tuple[float, float], velocity: tuple[float, float], frames: int, half: float = 30.0):
    return [np.array(start) + i * np.array(velocity) + half * UNIT for i in range(frames)]


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    """An MJPG .avi of (IMAGE_SIZE, IMAGE_SIZE, 3) BGR frames at 10 fps."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (IMAGE_SIZE, IMAGE_SIZE))
    for frame in frames:
        writer.write(frame)
    writer.release()


class DrawnFaceDetector:
    """Stands in for MTCNN (which does not fire on drawn faces): one fixed box, counted."""

    name = "mtcnn"
    calls = 0

    def detect(self, image):
        type(self).calls += 1
        return [(np.array([20.0, 18.0, 76.0, 80.0]), 0.99)]
