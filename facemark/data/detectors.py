"""Offline face detectors behind one interface, used once by `facemark boxes` to fill the cache.

A detector is built by name from DETECTORS and has one method:
    detect(image_rgb: (H, W, 3) uint8 RGB) -> list[(box (4,) float64 x0 y0 x1 y1 image pixels, score)]

- `mtcnn`: facenet-pytorch's MTCNN on the CPU; its weights ship inside the wheel, so nothing is
  downloaded. Score = face probability in [0, 1].
- `haar`: OpenCV's frontal-face Haar cascade (the XML ships with opencv-python). Score = the
  number of merged neighbour windows (a confidence that grows with evidence), 1.0 if unknown.

Choosing one detection (the datasets have one annotated face per image, usually the main one):
    keep the boxes whose area is at least MIN_AREA_FRACTION (25 %) of the largest box's area,
    then take the highest score among them; equal scores go to the larger box.
The area filter drops small background faces and false positives even when they score high
(MTCNN gives 0.99+ to many small faces); the score then picks between comparable candidates
such as a face and a slightly larger false box around it. No detection is a miss, written as
`miss` in the cache.

`synth` is not a detector: the synthetic generator writes its simulated boxes under that name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

import numpy as np

from facemark.errors import ConfigError

Detection = tuple[np.ndarray, float]
MIN_AREA_FRACTION = 0.25
SELECTION_RULE = ("the highest score among boxes with at least 25% of the largest box's area "
                  "(ties: larger box)")


class Detector(Protocol):
    name: str

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """(H, W, 3) uint8 RGB -> every detection as ((4,) x0 y0 x1 y1 image pixels, score)."""


def _threads() -> int:
    # A few threads help MTCNN's larger pyramid levels; more only fight other processes.
    return max(1, min(4, os.cpu_count() or 1))


class MtcnnDetector:
    name = "mtcnn"

    def __init__(self) -> None:
        import torch
        from facenet_pytorch import MTCNN

        torch.set_num_threads(_threads())
        # keep_all: every face, so the documented rule (not MTCNN's own) picks one
        self._model = MTCNN(keep_all=True, select_largest=False, device="cpu")

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        boxes, probs = self._model.detect(np.ascontiguousarray(image_rgb))
        if boxes is None:
            return []
        return [(np.asarray(box, dtype=np.float64), float(prob)) for box, prob in zip(boxes, probs)]


class HaarDetector:
    name = "haar"

    def __init__(self) -> None:
        import cv2

        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ConfigError(f"{path}: cannot load the Haar cascade shipped with OpenCV")

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY))
        rects, neighbours = self._cascade.detectMultiScale2(gray, scaleFactor=1.1, minNeighbors=3,
                                                            minSize=(24, 24))
        detections = []
        for (x, y, w, h), count in zip(np.asarray(rects).reshape(-1, 4), np.asarray(neighbours).reshape(-1)):
            box = np.array([x, y, x + w, y + h], dtype=np.float64)
            detections.append((box, float(count) if count > 0 else 1.0))
        return detections


DETECTORS: dict[str, Callable[[], Detector]] = {
    "mtcnn": MtcnnDetector,
    "haar": HaarDetector,
}


def create_detector(name: str) -> Detector:
    """Build a detector by name; `synth` and unknown names raise ConfigError listing the valid ones."""
    valid = ", ".join(sorted(DETECTORS))
    if name == "synth":
        raise ConfigError("'synth' is not a detector: its boxes are written by `facemark synth` "
                          f"together with the synthetic dataset; detectors: {valid}")
    if name not in DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; available: {valid}")
    return DETECTORS[name]()


def select_detection(detections: list[Detection]) -> Detection | None:
    """The one detection to cache, by the rule in the module docstring; None if there is none."""
    if not detections:
        return None
    areas = [max(0.0, float(b[2] - b[0])) * max(0.0, float(b[3] - b[1])) for b, _ in detections]
    floor = MIN_AREA_FRACTION * max(areas)
    candidates = [i for i, area in enumerate(areas) if area >= floor]
    best = max(candidates, key=lambda i: (detections[i][1], areas[i]))
    return detections[best]
