"""Faces tracked across video frames, each with a stable id and temporally filtered landmarks.

    tracker = Tracker(landmarker, load_config().predict, fps=30.0)
    for frame in frames:                           # (H, W, 3) uint8 RGB
        for face in tracker.step(frame):           # TrackedFace, by id
            face.id, face.landmarks, face.filtered # (P, 2) image pixels, raw and filtered

Tracking (`predict.track: true`), as phone face pipelines do (MediaPipe's): frame t's crop of a face
is the landmark box of its frame t-1 landmarks, codec.crop_matrix(codec.landmark_box(points)) with
the crop margin, the landmark-box crop that training draws half of the time and that the refinement's
later passes use (facemark/runtime/refine.py). The detector, which costs far more than the landmark
model, runs on the first frame, every `redetect_every` frames (to find new faces and drop vanished
ones), on every frame while there is no face, and on a frame where a face is lost.

Lost: a tracked face whose new landmark box overlaps the box it was cropped from less than
`lost_iou`, whose landmark box centre left the frame, or whose landmarks are not finite. On a face
the model re-centres its points in the crop it was given, so consecutive landmark boxes overlap
closely (the measured IoU is in docs/streaming.md); when the face is gone or jumped, the points
collapse or scatter. A lost face is looked for on the same frame by the detector: a detection
overlapping its last box by `match_iou` continues it with the same id (filter restarted).

Ids: a detection continues the track whose box it overlaps most (at least `match_iou`, greedy by
IoU); the others start new tracks with the next integer id. `predict.track: false` is
detect-every-frame: every crop comes from a detection, matched to the tracks the same way, so ids
and the filter work alike. Filter: facemark.filters, one per track, speed measured in face sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from facemark.codec import box_iou, landmark_box
from facemark.filters import PointFilter, create_filter

# (H, W, 3) uint8 RGB -> [(box (4,) image pixels, score)], largest first: Landmarker.detect or given boxes
Detect = Callable[[np.ndarray], list[tuple[np.ndarray, float]]]


@dataclass(frozen=True)
class TrackedFace:
    """One face of one frame, all in image pixels."""

    id: int
    box: np.ndarray         # (4,) x0 y0 x1 y1 this frame was cropped from (a detection or the last landmark box)
    score: float            # the detector's score when the track was last matched
    detected: bool          # `box` is this frame's detection
    landmarks: np.ndarray   # (P, 2) the model's (refined) landmarks
    filtered: np.ndarray    # (P, 2) the same after the temporal filter

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: pixels rounded to 1/1000, score to 5 decimals."""
        return {"id": self.id, "box": [round(float(v), 3) for v in self.box], "score": round(float(self.score), 5),
                "detected": self.detected, "landmarks": np.round(self.landmarks, 3).tolist(),
                "filtered": np.round(self.filtered, 3).tolist()}


@dataclass(eq=False)   # tracks compare by identity
class _Track:
    id: int
    box: np.ndarray         # (4,) the crop box of the next frame
    score: float
    detected: bool          # `box` is a detection (no lost check on it: a detector box is not a landmark box)
    filter: PointFilter


class Tracker:
    """Faces of consecutive frames (see the module docstring). `landmarker`: a Landmarker (its
    `landmarks(image, boxes)` and, unless `detect` is given, `detect(image)`); `cfg`: the predict
    config section (track, redetect_every, lost_iou, match_iou, filter and its parameters); `fps`:
    frames per second, the filter's clock."""

    def __init__(self, landmarker: Any, cfg: Any, fps: float, detect: Detect | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.landmarker, self.cfg, self.fps = landmarker, cfg, fps
        self.detect = detect or landmarker.detect
        self.tracks: list[_Track] = []
        self.frame = 0                 # index of the next frame
        self.detector_calls = 0
        self.lost = 0                  # faces judged lost so far
        self._last_detection = -1      # frame index of the last detector run
        self._next_id = 0

    def step(self, image: np.ndarray) -> list[TrackedFace]:
        """The next frame, (H, W, 3) uint8 RGB -> its faces, by id."""
        time_s = self.frame / self.fps
        detections = None
        if self._due():
            detections = self._run_detector(image)
            self._match(detections, lost=[], drop_unmatched=True)
        faces, lost = self._advance(image, self.tracks, time_s)
        if lost:   # look for them again on this frame
            self.lost += len(lost)
            self.tracks = [track for track in self.tracks if track not in lost]
            detections = self._run_detector(image) if detections is None else detections
            fresh = self._match(detections, lost, drop_unmatched=False)
            more, broken = self._advance(image, fresh, time_s)   # detection boxes: lost only if not finite
            faces += more
            self.tracks = [track for track in self.tracks if track not in broken]
        self.frame += 1
        return sorted(faces, key=lambda face: face.id)

    def stats(self) -> dict[str, int]:
        """Frames seen, detector runs, faces lost."""
        return {"frames": self.frame, "detector_calls": self.detector_calls, "lost": self.lost}

    def _due(self) -> bool:
        return (not self.cfg.track or not self.tracks or self._last_detection < 0
                or self.frame - self._last_detection >= self.cfg.redetect_every)

    def _run_detector(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        self.detector_calls += 1
        self._last_detection = self.frame
        return [(np.asarray(box, np.float64), float(score)) for box, score in self.detect(image)]

    def _match(self, detections: list[tuple[np.ndarray, float]], lost: list[_Track],
               drop_unmatched: bool) -> list[_Track]:
        """Detections -> live tracks, then the `lost` ones, by IoU; new tracks for the rest. A
        matched live track keeps its landmark-box crop when tracking (the smoother box); a lost one
        restarts from the detection. `drop_unmatched`: live tracks no detection matched end.
        Returns the tracks whose next crop is now a detection (re-found lost ones and new ones)."""
        pool = self.tracks + lost
        pairs = sorted(((box_iou(track.box, box), t, d) for t, track in enumerate(pool)
                        for d, (box, _) in enumerate(detections)), reverse=True)
        matched: dict[int, int] = {}   # track index -> detection index
        for iou, t, d in pairs:
            if iou >= self.cfg.match_iou and t not in matched and d not in matched.values():
                matched[t] = d
        fresh = []
        for t, track in enumerate(pool):
            if t in matched:
                track.score = detections[matched[t]][1]
                if t >= len(self.tracks) or not self.cfg.track:
                    track.box, track.detected = detections[matched[t]][0], True
                if t >= len(self.tracks):
                    track.filter.reset()
                    fresh.append(track)
        kept = [track for t, track in enumerate(self.tracks) if t in matched or not drop_unmatched]
        taken = set(matched.values())
        for d, (box, score) in enumerate(detections):
            if d not in taken:
                fresh.append(_Track(self._next_id, box, score, True, create_filter(self.cfg)))
                self._next_id += 1
        self.tracks = kept + fresh
        return fresh

    def _advance(self, image: np.ndarray, tracks: list[_Track], time_s: float
                 ) -> tuple[list[TrackedFace], list[_Track]]:
        """Landmarks of `tracks` on this frame -> (their faces, the tracks judged lost); when
        tracking, each kept track's next crop box becomes its landmark box."""
        if not tracks:
            return [], []
        points = self.landmarker.landmarks(image, np.stack([track.box for track in tracks]))
        faces, lost = [], []
        for track, face_points in zip(tracks, points):
            if self._is_lost(track, face_points, image.shape):
                lost.append(track)
                continue
            box = landmark_box(face_points)
            scale = max(box[2] - box[0], box[3] - box[1])
            filtered = track.filter(face_points, time_s, scale)
            faces.append(TrackedFace(track.id, track.box, track.score, track.detected, face_points, filtered))
            if self.cfg.track:   # detect-every-frame matches the next detections against this one instead
                track.box, track.detected = box, False
        return faces, lost

    def _is_lost(self, track: _Track, points: np.ndarray, shape: tuple[int, ...]) -> bool:
        """(P, 2) landmarks cropped from track.box -> whether tracking lost the face (module docstring)."""
        if not np.isfinite(points).all():
            return True
        if track.detected:
            return False
        box = landmark_box(points)
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        if not (0.0 <= cx < shape[1] and 0.0 <= cy < shape[0]):
            return True
        return box_iou(box, track.box) < self.cfg.lost_iou
