"""Tiny LaPa-layout datasets for the data tests: real files written with cv2 and write_landmarks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facemark.data.layout import write_landmarks

SIZE = 64


def face_points(num_points: int, seed: int) -> np.ndarray:
    """(P, 2) float image pixels on an ellipse inside a SIZE x SIZE image, jittered by `seed`."""
    rng = np.random.default_rng(seed)
    angles = np.linspace(0.0, 2.0 * np.pi, num_points, endpoint=False)
    points = np.stack([32 + 20 * np.cos(angles), 32 + 24 * np.sin(angles)], axis=1)
    return points + rng.uniform(-1.0, 1.0, points.shape)


def write_image(path: Path, seed: int, size: int = SIZE) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cv2 could not write {path}")


def make_split(root: Path, split: str, count: int, num_points: int, suffix: str = ".png") -> list[str]:
    """Write `count` clean faces into ROOT/<split>/; returns their stems in order."""
    (root / split / "landmarks").mkdir(parents=True, exist_ok=True)
    stems = [f"face{i:03d}" for i in range(count)]
    for i, stem in enumerate(stems):
        write_image(root / split / "images" / f"{stem}{suffix}", seed=i)
        write_landmarks(root / split / "landmarks" / f"{stem}.txt", face_points(num_points, seed=i))
    return stems


def grace_hopper_rgb(width: int = 128) -> np.ndarray:
    """A real face photo shipped with matplotlib, resized to `width` -> (H, W, 3) uint8 RGB."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        data = np.frombuffer(handle.read(), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    height = round(bgr.shape[0] * width / bgr.shape[1])
    bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
