"""Offline face detectors behind one interface, used once by `facemark boxes` to fill the cache.

A detector is built by name from DETECTORS and has one method:
    detect(image_rgb: (H, W, 3) uint8 RGB) -> list[(box (4,) float64 x0 y0 x1 y1 image pixels, score)]

- `mtcnn`: facenet-pytorch's MTCNN on the CPU; its weights ship inside the wheel, so nothing is
  downloaded. Score = face probability in [0, 1].
- `mtcnn_onnx`: the same MTCNN on onnxruntime, no torch (facemark.data.mtcnn_onnx; its nets ship in
  facemark/pretrained/mtcnn/): the runtime's default (predict.detector). Same boxes as `mtcnn` up to
  float rounding (docs/models.md measures recall, IoU and the landmark NME on its boxes).
- `haar`: OpenCV's frontal-face Haar cascade (the XML ships with opencv-python). Score = the
  number of merged neighbour windows (a confidence that grows with evidence), 1.0 if unknown.

Choosing one detection (the datasets have one annotated face per image: the photo's subject,
large and near the centre):
    1. keep the boxes whose area is at least 25 % of the largest box's area (MIN_AREA_FRACTION);
    2. of those, keep the ones scoring at least 95 % of the best score (SCORE_FRACTION);
    3. take the one whose centre is nearest the image centre; equal distances go to the larger box.
Step 1 drops small background faces and false positives even when they score high. Step 3
exists because MTCNN's scores saturate: on 300-W, 8 of the 10 chosen boxes that missed the
annotated face (IoU < 0.3) had lost a tie at probability 1.0 against a neighbour's face of
similar size; the annotated face is the central one. A miss (no detection) is written as `miss`
in the cache.

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
SCORE_FRACTION = 0.95
SELECTION_RULE = ("among boxes with >= 25% of the largest box's area and >= 95% of the best score, "
                  "the one nearest the image centre (ties: larger box)")


class Detector(Protocol):
    name: str

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        """(H, W, 3) uint8 RGB -> every detection as ((4,) x0 y0 x1 y1 image pixels, score)."""


# MTCNN runs many small convolutions: a second torch thread buys little, and on a busy CPU the
# threads' spin-waits made it 14x slower (0.5 s -> 7 s per 448 px image, measured with 2 threads).
MTCNN_THREADS = 1


class MtcnnDetector:
    name = "mtcnn"

    def __init__(self) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise ConfigError("detector 'mtcnn' needs torch and facenet-pytorch (the full install); "
                              "'mtcnn_onnx' gives the same boxes on onnxruntime") from None

        # keep_all: every face, so the documented rule (not MTCNN's own) picks one
        self._model = MTCNN(keep_all=True, select_largest=False, device="cpu")
        self._threads = MTCNN_THREADS

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        import torch

        # our thread count only while detecting: the caller's torch setting is left as it was
        previous = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            boxes, probs = self._model.detect(np.ascontiguousarray(image_rgb))
        finally:
            torch.set_num_threads(previous)
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


def _onnx_mtcnn() -> Detector:
    from facemark.data.mtcnn_onnx import OnnxMtcnnDetector

    return OnnxMtcnnDetector()


DETECTORS: dict[str, Callable[[], Detector]] = {
    "mtcnn": MtcnnDetector,
    "mtcnn_onnx": _onnx_mtcnn,
    "haar": HaarDetector,
}


def detector_factory(name: str) -> Callable[[], Detector]:
    """The factory of a detector name (cheap: builds nothing); `synth` and unknown names raise
    ConfigError listing the valid ones."""
    valid = ", ".join(sorted(DETECTORS))
    if name == "synth":
        raise ConfigError("'synth' is not a detector: its boxes are written by `facemark synth` "
                          f"together with the synthetic dataset; detectors: {valid}")
    if name not in DETECTORS:
        raise ConfigError(f"unknown face detector {name!r}; available: {valid}")
    return DETECTORS[name]


def create_detector(name: str) -> Detector:
    """Build a detector by name (loads its weights)."""
    return detector_factory(name)()


def select_detection(detections: list[Detection], image_size: tuple[int, int]) -> Detection | None:
    """The one detection to cache, by the rule in the module docstring; None if there is none.

    `image_size` is (width, height) in pixels, the space of the boxes.
    """
    if not detections:
        return None
    areas = [max(0.0, float(b[2] - b[0])) * max(0.0, float(b[3] - b[1])) for b, _ in detections]
    large = [i for i, area in enumerate(areas) if area >= MIN_AREA_FRACTION * max(areas)]
    best_score = max(detections[i][1] for i in large)
    confident = [i for i in large if detections[i][1] >= SCORE_FRACTION * best_score]
    centre = np.array(image_size, dtype=np.float64) / 2.0

    def distance(i: int) -> float:
        box = detections[i][0]
        return float(np.hypot((box[0] + box[2]) / 2.0 - centre[0], (box[1] + box[3]) / 2.0 - centre[1]))

    return detections[min(confident, key=lambda i: (distance(i), -areas[i]))]
