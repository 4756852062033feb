"""The video figures of `facemark validate`: each artifact tracked and filtered on a drawn clip.

Float and int8 artifacts differ most where the product runs, on camera streams, so every row that
ran gets them (facemark.video_clips, facemark.tracking, facemark.filters; settings from the run's
predict section): a drawn face (facemark.data.synth.render_face, seed 0, the run's scheme) as a
still clip with sensor noise and as a moving clip (pan, roll, zoom), each `validate.video_frames`
frames through an mp4 file and back. Boxes come from the truth with MTCNN-like bias and per-frame
noise (video_clips.ClipDetector): real detectors do not fire on drawn faces. Figures: `jitter` of
the filtered points on the still clip (median frame-to-frame RMS / inter-pupil distance; `raw_jitter`
before the filter), `lag` (frames behind the truth) and `nme` of the filtered points on the moving
clip, `detector_calls` of the moving clip. In-process, through the Landmarker: a few dozen frames.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facemark.video_clips import ClipDetector, encoded, moving_clip, play, score, still_clip

NOISE = 3.0      # sensor noise sigma, uint8 levels (as benchmarks/streaming.py)
SEED = 0


def drawn_clips(scheme: str, frames: int, work: Path) -> dict[str, Any] | None:
    """{"still", "moving"} clips of the drawn face in `scheme` (None: the generator has no such scheme)."""
    from facemark.data.synth import render_face
    from facemark.data.synth_schemes import SCHEME_TABLES

    if scheme not in SCHEME_TABLES:
        return None
    face = render_face(SEED, "test", 0, scheme)
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(face.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return {"still": encoded(still_clip(image, face.points, frames, NOISE, seed=SEED + 1), work / "still.mp4"),
            "moving": encoded(moving_clip(image, face.points, frames), work / "moving.mp4")}


def video_figures(landmarker: Any, clips: dict[str, Any], predict_cfg: Any) -> dict[str, Any]:
    """The figures of one artifact (its Landmarker) on drawn_clips, tracking on, predict_cfg's filter."""
    cfg = dataclasses.replace(predict_cfg, track=True)
    still, moving = clips["still"], clips["moving"]
    calm = play(still, landmarker, cfg, ClipDetector(still))
    busy = play(moving, landmarker, cfg, ClipDetector(moving))
    filtered = score(busy.filtered, moving, landmarker.scheme, lag=True)
    return {"jitter": score(calm.filtered, still, landmarker.scheme, lag=False)["jitter"],
            "raw_jitter": score(calm.raw, still, landmarker.scheme, lag=False)["jitter"],
            "lag": filtered["lag"], "nme": filtered["nme"], "found": filtered["found"],
            "detector_calls": busy.detector_calls, "frames": len(moving.frames), "filter": cfg.filter,
            "units": "jitter: median frame-to-frame RMS / inter-pupil (still clip); lag: frames behind the "
                     "truth; nme: inter-pupil (moving clip)"}
