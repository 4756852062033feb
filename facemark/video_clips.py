"""Video clips with known landmarks on every frame, and the figures a tracker earns on them.

- still_clip: one photo held still, with fresh Gaussian sensor noise on every frame: any frame-to-
  frame landmark movement is jitter;
- moving_clip: the photo panned, rotated and zoomed about the face along a smooth known path (slow
  sines), each frame one affine warp of the photo and the true landmarks moved by the same affine;
- encoded: a clip through an mp4 file (OpenCV's mp4v) and back, the compression a camera stream
  has; the decoded frames are what gets measured;
- ClipDetector: detections from the truth, biased and jittered per frame the way MTCNN's boxes are
  (facemark.data.synth.simulate_detector_box), for drawn faces that real detectors do not fire on;
- play + score: a Tracker over a clip -> jitter (median frame-to-frame RMS / inter-pupil distance),
  NME against the truth, lag (facemark.metrics.trajectory_lag) and frames per second.

Used by benchmarks/streaming.py (real and drawn faces) and by `facemark validate`'s video row.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facemark.errors import DataError
from facemark.metrics import frame_motion, nme, trajectory_lag
from facemark.schemes import Scheme

FPS = 30.0


@dataclass(frozen=True)
class Clip:
    """frames (T, H, W, 3) uint8 RGB; truth (T, P, 2) image pixels of the one face; fps."""

    name: str
    frames: np.ndarray
    truth: np.ndarray
    fps: float = FPS


def still_clip(image: np.ndarray, points: np.ndarray, count: int, noise: float, seed: int = 0,
               name: str = "still") -> Clip:
    """(H, W, 3) uint8 RGB photo and its (P, 2) landmarks -> `count` frames of the photo with
    N(0, noise) uint8-level sensor noise each; the truth is the same on every frame."""
    rng = np.random.default_rng(seed)
    frames = np.stack([np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)
                       for _ in range(count)])
    return Clip(name, frames, np.repeat(np.asarray(points, np.float64)[None], count, axis=0))


def path_affines(count: int, centre: np.ndarray, size: tuple[int, int], pan: float, degrees: float,
                 zoom: float, cycles: float) -> np.ndarray:
    """(count, 2, 3) affines of a smooth camera path about `centre` (x, y pixels) in a W x H frame:
    a pan of up to `pan` x the frame size, a roll of up to `degrees`, a zoom in of up to `zoom`,
    each a sine of its own period, `cycles` periods of the pan along the clip."""
    width, height = size
    phase = 2 * np.pi * cycles * np.arange(count) / count
    matrices = []
    for u in phase:
        shift = np.array([pan * width * np.sin(u), pan * height * np.sin(0.7 * u + 1.0)])
        angle = degrees * np.sin(0.5 * u)
        scale = 1.0 + zoom * (0.5 - 0.5 * np.cos(0.8 * u))
        rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(angle), float(scale))
        rotation[:, 2] += shift
        matrices.append(rotation)
    return np.stack(matrices)


def moving_clip(image: np.ndarray, points: np.ndarray, count: int, pan: float = 0.08, degrees: float = 10.0,
                zoom: float = 0.15, cycles: float = 1.5, name: str = "moving") -> Clip:
    """(H, W, 3) uint8 RGB photo and its (P, 2) landmarks -> `count` frames along path_affines about
    the face centre (edges replicated where the warp reaches past the photo), truth moved alike."""
    from facemark.codec import apply_affine

    points = np.asarray(points, np.float64)
    height, width = image.shape[:2]
    affines = path_affines(count, points.mean(axis=0), (width, height), pan, degrees, zoom, cycles)
    frames = np.stack([cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE) for matrix in affines])
    return Clip(name, frames, np.stack([apply_affine(points, matrix) for matrix in affines]))


def encoded(clip: Clip, path: Path) -> Clip:
    """The clip written to `path` (mp4, OpenCV's mp4v at its default quality) and decoded again."""
    height, width = clip.frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), clip.fps, (width, height))
    if not writer.isOpened():
        raise DataError(f"{path}: OpenCV cannot write an mp4v video here")
    for frame in clip.frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    if len(frames) != len(clip.frames):
        raise DataError(f"{path}: wrote {len(clip.frames)} frames, decoded {len(frames)}")
    return dataclasses.replace(clip, frames=np.stack(frames))


class ClipDetector:
    """A detector for a clip's own frames: the simulated MTCNN-like box of the frame's truth, with
    noise drawn per frame (seeded by the frame index); frames are recognised by their pixels."""

    def __init__(self, clip: Clip, seed: int = 0) -> None:
        self.clip, self.seed = clip, seed
        self._index = {zlib.crc32(frame.tobytes()): i for i, frame in enumerate(clip.frames)}

    def __call__(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        from facemark.data.synth import simulate_detector_box

        index = self._index.get(zlib.crc32(np.ascontiguousarray(image).tobytes()))
        if index is None:
            raise ValueError("ClipDetector: an image that is not a frame of its clip")
        box, score = simulate_detector_box(self.clip.truth[index], np.random.default_rng([self.seed, index]))
        return [] if box is None else [(box, score)]


@dataclass
class ClipRun:
    """A tracker over a clip: the main face's (T, P, 2) raw and filtered landmarks (NaN on frames
    without it), detector runs, wall seconds of the loop."""

    raw: np.ndarray
    filtered: np.ndarray
    detector_calls: int
    seconds: float


def play(clip: Clip, landmarker: Any, cfg: Any, detect: Any = None) -> ClipRun:
    """Run a facemark.tracking.Tracker (predict config section `cfg`; `detect` None: the
    landmarker's detector) over the clip's frames; the main face is the one nearest the truth."""
    from facemark.tracking import Tracker

    tracker = Tracker(landmarker, cfg, clip.fps, detect)
    shape = clip.truth.shape
    raw, filtered = np.full(shape, np.nan), np.full(shape, np.nan)
    start = time.perf_counter()
    for i, frame in enumerate(clip.frames):
        faces = tracker.step(frame)
        if faces:
            face = min(faces, key=lambda f: np.abs(f.landmarks.mean(0) - clip.truth[i].mean(0)).sum())
            raw[i], filtered[i] = face.landmarks, face.filtered
    return ClipRun(raw, filtered, tracker.detector_calls, time.perf_counter() - start)


def score(points: np.ndarray, clip: Clip, scheme: Scheme, lag: bool) -> dict[str, Any]:
    """(T, P, 2) landmarks of the main face (NaN: not found) on `clip` -> {"jitter": median
    frame-to-frame RMS / inter-pupil distance, "nme": mean inter-pupil NME over found frames,
    "lag": frames behind the truth (None unless `lag` and every frame found), "found": frames}."""
    found = np.isfinite(points).all(axis=(1, 2))
    if not found.any():
        return {"jitter": None, "nme": None, "lag": None, "found": 0}
    listed = [p if ok else None for p, ok in zip(points, found)]
    ipd = [float(scheme.interpupil(t)) for t in clip.truth]
    motion = frame_motion(listed, ipd)
    return {"jitter": None if motion is None else motion["median"],
            "nme": float(nme(points[found], clip.truth[found], scheme).mean()),
            "lag": trajectory_lag(points, clip.truth) if lag and found.all() else None,
            "found": int(found.sum())}
