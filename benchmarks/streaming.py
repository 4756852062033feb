"""Tracking and filtering on video with ground truth: jitter, NME, lag and frames per second of
detect-every-frame, tracking and tracking + filter, per artifact (facemark.video_clips).

Clips, each written as mp4 (OpenCV mp4v) and decoded again, so they carry video compression:
- real: a 300-W photo and its 68 landmarks (--photo; default the first test face of --data), faces
  found by the predict.detector (MTCNN); drawn: a synthetic face (facemark.data.synth.render_face,
  in the artifact's scheme), boxes from the truth with MTCNN-like bias and per-frame noise;
- still: --frames frames of the photo with N(0, --noise) sensor noise each -> jitter;
- moving: --frames frames panned (8 % of the frame), rolled (10 degrees) and zoomed (15 %) along a
  smooth path -> NME, lag (frames behind the truth, velocity cross-correlation), fps end to end.

Rows: `detect` runs the detector on every frame; `track` crops each frame from the last landmarks;
`+ filter` is the same run's One Euro output (predict.filter parameters; the raw points are the
filter's input, so the pair differs by the filter alone). Then the lost signal: the IoU of
consecutive landmark boxes while tracking the real moving clip, against the IoU between a crop box
moved off the face by its own width (8 directions) and the landmark box the model returns in it.
With --cli, `facemark predict` itself on the real moving mp4, tracking and detect-every-frame:
its ms per frame (decode, detector, model, filter, overlay, JSON).

    .venv/bin/python benchmarks/streaming.py ARTIFACT [ARTIFACT ...] [--data /work/data/300w-split]
        [--photo NAME] [--frames 90] [--noise 3] [--cli] [--set predict.KEY=VALUE ...] [--work DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import cv2
import numpy as np

from facemark.codec import box_iou, landmark_box
from facemark.config import load_config
from facemark.data.layout import read_image, read_landmarks
from facemark.landmarker import Landmarker
from facemark.video_clips import ClipDetector, encoded, moving_clip, play, score, still_clip

COLUMNS = f"{'artifact':<24} {'clip':<6} {'mode':<16} {'jitter still':>12} {'NME moving':>10} {'lag fr':>7} " \
          f"{'fps':>6} {'det/frames':>10}"


def sources(landmarker: Landmarker, data: Path, photo: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"real": (RGB photo, (P, 2) landmarks), "drawn": (...)}; real only for an ibug68 artifact."""
    from facemark.data.synth import render_face

    drawn = render_face(0, "test", 0, landmarker.scheme.name)
    image = cv2.cvtColor(cv2.imdecode(np.frombuffer(drawn.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out = {"drawn": (image, drawn.points)}
    if landmarker.scheme.name == "ibug68":
        names = sorted((data / "test" / "images").iterdir())
        path = next(p for p in names if photo is None or p.stem == photo)
        out = {"real": (read_image(path), read_landmarks(data / "test" / "landmarks" / f"{path.stem}.txt", 68)),
               **out}
    return out


def rows(name: str, landmarker: Landmarker, clips: dict, cfg) -> list[str]:
    """Table lines of one source's clips; drawn faces get the truth's simulated detector."""
    still, moving = clips["still"], clips["moving"]
    lines = []
    for mode, track in (("detect", False), ("track", True)):
        mode_cfg = dataclasses.replace(cfg, track=track)
        calm, busy = (play(clip, landmarker, mode_cfg, ClipDetector(clip) if name == "drawn" else None)
                      for clip in (still, moving))
        for label, key in ((mode, "raw"), (f"{mode} + filter", "filtered")):
            jitter = score(getattr(calm, key), still, landmarker.scheme, lag=False)["jitter"]
            moved = score(getattr(busy, key), moving, landmarker.scheme, lag=True)
            lag = "-" if moved["lag"] is None else f"{moved['lag']:+.2f}"
            lines.append(f"{landmarker.identity['name']:<24} {name:<6} {label:<16} {_f(jitter):>12} "
                         f"{_f(moved['nme']):>10} {lag:>7} {len(moving.frames) / busy.seconds:>6.1f} "
                         f"{busy.detector_calls:>4}/{len(moving.frames):<5}")
    return lines


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.5f}"


def lost_signal(landmarker: Landmarker, clip, cfg) -> str:
    """IoU of consecutive landmark boxes on the tracked moving clip vs a crop moved off the face."""
    run = play(clip, landmarker, dataclasses.replace(cfg, track=True), None)
    boxes = [landmark_box(p) for p in run.raw if np.isfinite(p).all()]
    tracked = np.array([box_iou(a, b) for a, b in zip(boxes, boxes[1:])])
    gone = []
    for frame, truth in zip(clip.frames[::10], clip.truth[::10]):
        box = landmark_box(truth)
        side = box[2] - box[0]
        for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
            moved = box + side * np.array([dx, dy, dx, dy])
            gone.append(box_iou(landmark_box(landmarker.landmarks(frame, moved[None])[0]), moved))
    gone = np.array(gone)
    return (f"lost signal, IoU(new landmark box, crop box): face tracked (moving clip, {len(tracked)} frames) "
            f"min {tracked.min():.3f} p1 {np.percentile(tracked, 1):.3f} median {np.median(tracked):.3f}; "
            f"crop off the face ({len(gone)} crops) median {np.median(gone):.3f} p99 {np.percentile(gone, 99):.3f} "
            f"max {gone.max():.3f}; predict.lost_iou {cfg.lost_iou}")


def cli_rows(artifact: Path, video: Path, work: Path, cfg) -> list[str]:
    from facemark.predict import predict_files

    lines = []
    for track in (True, False):
        stream = dataclasses.replace(cfg, track=track)
        result = predict_files(artifact, [video], work / f"predict_{track}", cfg.detector, cfg.min_score,
                               progress=False, stream=stream)
        record = result.records[0]
        lines.append(f"facemark predict {video.name} ({'tracking' if track else 'detect every frame'}): "
                     f"{record['ms_per_frame']:.1f} ms per frame, detector on {record['tracking']['detector_calls']}"
                     f"/{record['frame_count']} frames, lost {record['tracking']['lost']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=Path("/work/data/300w-split"))
    parser.add_argument("--photo", help="stem of the real test photo (default: the first)")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--noise", type=float, default=3.0, help="sensor noise sigma, uint8 levels")
    parser.add_argument("--cli", action="store_true", help="also time `facemark predict` on the real moving clip")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="predict.KEY=VALUE")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    cfg = load_config(overrides=args.overrides).predict
    work = args.work or Path(tempfile.mkdtemp(prefix="streaming_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"predict: redetect_every {cfg.redetect_every}, lost_iou {cfg.lost_iou}, filter {cfg.filter} "
          f"(min_cutoff {cfg.min_cutoff} Hz, beta {cfg.beta}, d_cutoff {cfg.d_cutoff} Hz); {args.frames} frames "
          f"at 30 fps, noise {args.noise}; clips in {work}")
    print(COLUMNS)
    notes = []
    for artifact in args.artifacts:
        landmarker = Landmarker(artifact)
        for name, (image, points) in sources(landmarker, args.data, args.photo).items():
            clips = {"still": encoded(still_clip(image, points, args.frames, args.noise, seed=1),
                                      work / f"{name}_still.mp4"),
                     "moving": encoded(moving_clip(image, points, args.frames), work / f"{name}_moving.mp4")}
            for line in rows(name, landmarker, clips, cfg):
                print(line, flush=True)
            if name == "real" and artifact == args.artifacts[0]:
                notes.append(lost_signal(landmarker, clips["moving"], cfg))
                if args.cli:
                    notes += cli_rows(artifact, work / "real_moving.mp4", work, cfg)
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
