"""`facemark predict` on a video: frame by frame through facemark.tracking.Tracker, written as
STEM.json (faces per frame, the tracker's settings and counts, the main face's frame-to-frame
motion) and STEM.overlay.mp4 (the filtered landmarks); the record schema and the batch around it
are facemark.predict's."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facemark.errors import DataError
from facemark.io import atomic_write_text
from facemark.landmarker import Face, Landmarker
from facemark.metrics import frame_motion
from facemark.predict import SCHEMA, FaceBoxes, draw_overlay

# A video that ends this many frames (at least 2, or this fraction of them) before the frame
# count its container announces stopped decoding; OpenCV's count is the container's figure, or
# duration x fps where there is none, which can be a frame or two off on a healthy file
VIDEO_SHORTFALL = (2, 0.02)


def _open_video(path: Path, max_pixels: int | None) -> cv2.VideoCapture:
    """An opened capture, its frame size checked against `max_pixels` before any frame is decoded."""
    from facemark.data.layout import default_max_pixels

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DataError(f"{path}: OpenCV cannot open this video (truncated, not a video, or a codec its "
                        f"FFmpeg lacks)")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    limit = default_max_pixels() if max_pixels is None else max_pixels
    if width * height > limit:
        capture.release()
        raise DataError(f"{path}: video too large: its frames are {width}x{height} = {width * height:,} pixels, "
                        f"above data.max_image_pixels = {limit:,}; not decoded")
    return capture


def _shortfall(path: Path, read: int, announced: int | None) -> str | None:
    """Why a video that yielded `read` frames of `announced` stopped early, None if it did not."""
    if announced is None or announced - read < max(VIDEO_SHORTFALL[0], VIDEO_SHORTFALL[1] * announced):
        return None
    return f"{path}: video stopped decoding after {read} of {announced} frames (truncated or corrupt)"


def predict_video(landmarker: Landmarker, boxes: FaceBoxes, path: Path, out_dir: Path, stem: str,
                  progress: bool, max_pixels: int | None = None, stream: Any = None) -> dict[str, Any]:
    """One video, frame by frame through a facemark.tracking.Tracker -> its JSON record (faces per
    frame with id, box, raw and filtered landmarks; the tracker's settings and counts; frame_motion
    of the main face, raw and filtered); writes STEM.json and STEM.overlay.mp4 (same size and frame
    rate, the filtered landmarks) into out_dir. `stream`: the predict config section (None:
    base.yaml's); given boxes (--box, --boxes) crop every frame, so they turn tracking off. A video
    that does not open, has frames above `max_pixels` or yields no frame is a DataError; one that
    stops before its announced frame count keeps what was read and says so in `incomplete`."""
    from tqdm import tqdm

    from facemark.tracking import Tracker

    fixed = boxes.boxes(path.stem)
    settings = _stream_settings(stream, fixed is not None)
    capture = _open_video(path, max_pixels)
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    tracker = Tracker(landmarker, settings, fps, None if fixed is None else lambda _: [(b, 1.0) for b in fixed])
    frames, writer, frame_size, seconds = [], None, [0, 0], 0.0
    target = out_dir / f"{stem}.overlay.mp4"
    partial = out_dir / f".{stem}.overlay.partial.mp4"
    try:
        with tqdm(total=total, desc=path.name, unit="frame", leave=False, disable=not progress) as bar:
            while True:
                start = time.perf_counter()
                ok, frame_bgr = capture.read()
                if not ok:
                    break
                calls = tracker.detector_calls
                faces = tracker.step(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
                frames.append({"index": len(frames), "time_s": round(len(frames) / fps, 4),
                               "detector": tracker.detector_calls > calls, "faces": [face.to_dict() for face in faces]})
                if writer is None:
                    frame_size = [frame_bgr.shape[1], frame_bgr.shape[0]]
                    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, tuple(frame_size))
                writer.write(draw_overlay(frame_bgr, [Face(f.box, f.score, f.filtered) for f in faces]))
                seconds += time.perf_counter() - start
                bar.update(1)
    except BaseException:   # an error or an interruption: no half-written overlay is left behind
        partial.unlink(missing_ok=True)
        raise
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise DataError(f"{path}: no frame could be decoded")
    partial.replace(target)
    record = {"schema": SCHEMA, "input": str(path), "kind": "video", "image_size": frame_size, "fps": fps,
              "frame_count": len(frames), "artifact": landmarker.identity, "infer": landmarker.refinement.record(),
              "faces_from": boxes.label, "tracking": {**_settings_record(settings), **tracker.stats()},
              "ms_per_frame": round(1000.0 * seconds / len(frames), 3),
              **_main_face_motion(frames, landmarker), "frames": frames}
    stopped = _shortfall(path, len(frames), total)
    if stopped:
        record["incomplete"] = stopped
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(record, indent=1) + "\n")
    return record


def _stream_settings(stream: Any, given_boxes: bool) -> Any:
    """The predict section a video runs with: `stream` (None: base.yaml's), tracking off for given boxes."""
    if stream is None:
        from facemark.config import load_config

        stream = load_config().predict
    return dataclasses.replace(stream, track=False) if given_boxes else stream


def _settings_record(settings: Any) -> dict[str, Any]:
    keys = ("track", "redetect_every", "lost_iou", "match_iou", "filter")
    record = {key: getattr(settings, key) for key in keys}
    if settings.filter == "one_euro":
        record.update(min_cutoff=settings.min_cutoff, beta=settings.beta, d_cutoff=settings.d_cutoff)
    return record


def _main_face_motion(frames: list[dict[str, Any]], landmarker: Landmarker) -> dict[str, Any]:
    """frame_motion and filtered_motion (facemark.metrics.frame_motion) of the main face: the id
    seen on the most frames (the lowest such id on a tie); `main_face_id` None without faces."""
    seen: dict[int, int] = {}
    for frame in frames:
        for face in frame["faces"]:
            seen[face["id"]] = seen.get(face["id"], 0) + 1
    main = min(seen, key=lambda i: (-seen[i], i)) if seen else None
    motion = {"main_face_id": main}
    for key, field in (("frame_motion", "landmarks"), ("filtered_motion", "filtered")):
        points = [next((np.asarray(f[field]) for f in frame["faces"] if f["id"] == main), None) for frame in frames]
        ipd = [None if p is None else float(landmarker.scheme.interpupil(p)) for p in points]
        motion[key] = frame_motion(points, ipd)
    return motion
