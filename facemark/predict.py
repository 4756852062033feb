"""`facemark predict [MODEL] INPUTS... --out DIR`: landmarks of every face on photos and videos,
written as JSON and overlays; a thin verb over facemark.landmarker.Landmarker.

The model (left out: base.yaml's predict.model, the shipped 68-point model) is a shipped model's
name (`facemark models`), a packaged model folder, an artifact file of an export folder (its manifest gives the contract and its
sha256 is checked), a RUN folder (RUN/export's `onnx_fp32` when it is exported and verified, else
RUN/best.pt in PyTorch) or a checkpoint. The Landmarker runs it in-process through the runtime
layer exactly as `facemark validate` does, refined as the manifest's `infer` section says
(`--set infer.KEY=VALUE` overrides).

Inputs: image files (.jpg/.jpeg/.png, turned upright by their EXIF orientation), video files
(OpenCV: .mp4/.mov/.avi/.mkv/.webm/.m4v) and folders of those (not recursive). Faces: every
detection of the predict.detector scoring at least predict.min_score, or one given box (--box),
or the box cache of `facemark boxes` (--boxes FOLDER of STEM.txt).

Videos go through facemark.tracking.Tracker (facemark/predict_video.py, docs/streaming.md): with
`predict.track` (the default) each frame's crop is the landmark box of the face's last landmarks and
the detector runs only every `predict.redetect_every` frames and when a face is lost; `--no-track`
(or given boxes) crops every frame from a detection. The landmarks are filtered (`predict.filter`,
One Euro).

Outputs in DIR, per input STEM: STEM.json (schema facemark-predict-v1: image size, artifact
name/file/sha256, the refinement it ran (`infer`: flip, passes, model_calls, label), and per face
its box, score and landmarks in image pixels; for a video the same per frame with each face's `id`,
`detected` and `filtered` landmarks, whether the detector ran, the tracker's settings and counts
(`tracking`), `ms_per_frame`, and `frame_motion` / `filtered_motion`, the frame-to-frame landmark
movement of the main face, see facemark.metrics) and STEM.overlay.jpg (STEM.overlay.mp4 for a
video, the filtered points); and index.json
(schema facemark-predict-index-v1): the artifact, the inputs written and those skipped, with why.

A batch keeps going: an input that cannot be read (empty, not an image, truncated, too large for
data.max_image_pixels, unsupported codec; a video that does not open) is skipped with one line on
stderr, and a video that stops decoding before its announced frame count keeps the frames read so
far (its JSON says `incomplete`) and is listed too; the exit code is then 1. `strict` stops at the
first instead (a DataError: exit code 2).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facemark.data.layout import file_kind
from facemark.errors import DataError
from facemark.io import atomic_path, atomic_write_text
from facemark.landmarker import Face, Landmarker

SCHEMA = "facemark-predict-v1"
INDEX_SCHEMA = "facemark-predict-index-v1"
INDEX_NAME = "index"   # OUT/index.json; an input named index.* writes index_2.json
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class FaceBoxes:
    """Where predict's faces come from: the landmarker's detector, one given box, or a box cache."""

    def __init__(self, landmarker: Landmarker, box: np.ndarray | None, boxes_dir: Path | None) -> None:
        self.box, self.boxes_dir = box, boxes_dir
        self.label = ("given box" if box is not None else f"box cache {boxes_dir}" if boxes_dir is not None
                      else landmarker.detector_name)

    def boxes(self, stem: str) -> np.ndarray | None:
        """The (F, 4) boxes of input `stem` in image pixels, or None: detect them."""
        if self.box is not None:
            return self.box[None]
        if self.boxes_dir is not None:
            from facemark.data.boxes import read_box

            box = read_box(self.boxes_dir / f"{stem}.txt")
            return np.zeros((0, 4)) if box is None else box[None]
        return None


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files and folders -> the image and video files to read, in order; anything else is a DataError."""
    known = IMAGE_SUFFIXES + VIDEO_SUFFIXES
    files = []
    for item in map(Path, inputs):
        if item.is_dir():   # what is not a regular file (FIFOs, device links) is not listed
            files += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in known)
        elif item.exists() and not item.is_file():
            raise DataError(f"{item}: {file_kind(item.stat().st_mode)}, not an image, a video or a folder of them")
        elif not item.is_file():
            raise DataError(f"{item}: no such file or folder")
        elif item.suffix.lower() not in known:
            raise DataError(f"{item}: not an image or video ({', '.join(known)})")
        else:
            files.append(item)
    if not files:
        raise DataError(f"{', '.join(map(str, inputs))}: no images or videos found ({', '.join(known)})")
    return files


def draw_overlay(image_bgr: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A copy of the BGR image with each face's box (green) and landmarks (red dots) drawn."""
    canvas = image_bgr.copy()
    for face in faces:
        x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
        thickness = max(1, (x1 - x0) // 150)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 200, 0), thickness)
        for x, y in face.landmarks:
            cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, (0, 0, 255), -1)
    return canvas


def predict_image(landmarker: Landmarker, boxes: FaceBoxes, path: Path, out_dir: Path, stem: str,
                  max_pixels: int | None = None) -> dict[str, Any]:
    """One photo -> its JSON record; writes STEM.json and STEM.overlay.jpg into out_dir. A photo
    that cannot be read (or claims more than `max_pixels`, see read_image) is a DataError."""
    from facemark.data.layout import read_photo

    image = read_photo(path, max_pixels)
    faces = landmarker.predict(image, boxes.boxes(path.stem))
    record = {"schema": SCHEMA, "input": str(path), "kind": "image", "image_size": [image.shape[1], image.shape[0]],
              "artifact": landmarker.identity, "infer": landmarker.refinement.record(), "faces_from": boxes.label,
              "faces": [face.to_dict() for face in faces]}
    overlay = draw_overlay(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), faces)
    encoded, jpeg = cv2.imencode(".jpg", overlay, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not encoded:
        raise DataError(f"{path}: cannot encode the overlay image")
    with atomic_path(out_dir / f"{stem}.overlay.jpg") as tmp:
        tmp.write_bytes(jpeg.tobytes())
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(record, indent=1) + "\n")
    return record


def _unique_stems(files: list[Path]) -> list[str]:
    """Output stems: the file stem, with _2, _3, ... when two inputs share one (or it is index.json's)."""
    seen: dict[str, int] = {INDEX_NAME: 1}
    stems = []
    for path in files:
        seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if seen[path.stem] == 1 else f"{path.stem}_{seen[path.stem]}")
    return stems


@dataclass
class PredictResult:
    """What predict_files did: the JSON records written, the inputs skipped, the index file."""

    records: list[dict[str, Any]]
    skipped: list[dict[str, Any]]            # {"input", "reason"} (+ "frames_kept" for a video cut short)
    index: Path
    artifact: dict[str, Any]                 # Landmarker.identity
    infer: dict[str, Any]                    # the refinement run: Refinement.record()


def _predict_one(landmarker: Landmarker, boxes: FaceBoxes, path: Path, out_dir: Path, stem: str, progress: bool,
                 max_pixels: int | None, stream: Any) -> dict[str, Any]:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        from facemark.predict_video import predict_video   # tracking and filters load for videos only

        return predict_video(landmarker, boxes, path, out_dir, stem, progress, max_pixels, stream)
    return predict_image(landmarker, boxes, path, out_dir, stem, max_pixels)


def _skip(path: Path, reason: str, strict: bool, frames_kept: int | None = None) -> dict[str, Any]:
    """One input skipped (or a video cut short: `frames_kept`): DataError under `strict`, else one
    line on stderr -> its index entry."""
    from tqdm import tqdm

    if strict:
        raise DataError(reason)
    kept = "" if frames_kept is None else f"; its {frames_kept} frames read are kept"
    tqdm.write(f"facemark predict: {'skipped' if frames_kept is None else 'incomplete'} {reason}{kept}",
               file=sys.stderr)
    entry = {"input": str(path), "reason": reason.removeprefix(f"{path}: ")}
    return entry if frames_kept is None else {**entry, "frames_kept": frames_kept}


def predict_files(model: Path | str | None, inputs: list[Path], out_dir: Path, detector: str, min_score: float,
                  box: np.ndarray | None = None, boxes_dir: Path | None = None, progress: bool = True,
                  overrides: list[str] | None = None, strict: bool = False,
                  max_pixels: int | None = None, stream: Any = None) -> PredictResult:
    """Landmarks of every face in `inputs` (files or folders) with the model of `model` (ARTIFACT
    or RUN), refined as it records unless `overrides` (`--set infer.KEY=VALUE`) say otherwise: the
    JSON records and index.json written to out_dir (see the module docstring). `max_pixels`:
    read_image's limit (None: base.yaml's data.max_image_pixels). `stream`: the predict config
    section for videos (tracking and filter; None: base.yaml's)."""
    from tqdm import tqdm

    files = expand_inputs(inputs)
    if boxes_dir is not None and not Path(boxes_dir).is_dir():
        raise DataError(f"{boxes_dir}: box cache folder not found")
    landmarker = Landmarker(model, detector, min_score, overrides, max_pixels)
    faces_from = FaceBoxes(landmarker, box, None if boxes_dir is None else Path(boxes_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records, written, skipped = [], [], []
    for path, stem in tqdm(list(zip(files, _unique_stems(files))), desc="predict", unit="file",
                           disable=not progress or len(files) < 2):
        try:
            record = _predict_one(landmarker, faces_from, path, out_dir, stem, progress, max_pixels, stream)
        except DataError as exc:   # this input only: the next one may be fine
            skipped.append(_skip(path, str(exc), strict))
            continue
        records.append(record)
        written.append({"input": str(path), "kind": record["kind"], "json": str(out_dir / f"{stem}.json")})
        if record.get("incomplete"):
            skipped.append(_skip(path, record["incomplete"], strict, frames_kept=record["frame_count"]))
    index = out_dir / f"{INDEX_NAME}.json"
    atomic_write_text(index, json.dumps({"schema": INDEX_SCHEMA, "artifact": landmarker.identity,
                                         "infer": landmarker.refinement.record(),
                                         "faces_from": faces_from.label, "inputs": len(files), "written": written,
                                         "skipped": skipped}, indent=1) + "\n")
    return PredictResult(records, skipped, index, landmarker.identity, landmarker.refinement.record())


def split_model(paths: list[Path]) -> tuple[Path | None, list[Path]]:
    """The verb's positional paths -> (model, inputs): the first names the model when it is one
    (landmarker.names_a_model) and inputs follow; otherwise all are inputs and the model is
    base.yaml's predict.model (None)."""
    from facemark.landmarker import names_a_model

    if names_a_model(paths[0]):
        if len(paths) == 1:
            raise DataError(f"{paths[0]} names a model but no input follows: give photos, videos or folders")
        return paths[0], paths[1:]
    return None, paths


def run_predict(model: Path | None, inputs: list[Path], out_dir: Path, detector: str | None, min_score: float | None,
                box: list[float] | None, boxes_dir: Path | None, overrides: list[str] | None = None,
                strict: bool = False, max_pixels: int | None = None) -> int:
    """The CLI verb: defaults from base.yaml's predict section; `overrides`: `--set` items, infer.*
    (the refinement) and predict.* (tracking and filter on videos); one summary line per input,
    then the skipped ones -> 0, or 1 when an input was skipped."""
    from facemark.config import check_value, load_config
    from facemark.data.check import PRINT_LIMIT

    overrides = overrides or []
    streaming = [item for item in overrides if item.strip().startswith("predict.")]
    cfg = load_config(overrides=streaming).predict
    for flag, dotted, value in (("--detector", "predict.detector", detector), ("--min-score", "predict.min_score",
                                                                              min_score)):
        if value is not None:
            check_value(dotted, value, origin=f"{flag} {value}")
    given = None if box is None else _given_box(box)
    result = predict_files(model, inputs, out_dir, detector or cfg.detector,
                           cfg.min_score if min_score is None else min_score, given, boxes_dir,
                           overrides=[item for item in overrides if item not in streaming], strict=strict,
                           max_pixels=max_pixels, stream=cfg)
    for record in result.records:
        video = record["kind"] == "video"
        print(_video_line(record) if video else f"{record['input']}: {len(record['faces'])} face(s)")
    print(f"wrote {len(result.records)} JSON file(s) and overlays to {out_dir} "
          f"({result.artifact['name']}, {result.artifact['file']}; {result.infer['label']})")
    if result.skipped:
        print(f"skipped {len(result.skipped)} input(s), listed in {result.index}:")
        for entry in result.skipped[:PRINT_LIMIT]:
            print(f"  {entry['input']}: {entry['reason']}")
        if len(result.skipped) > PRINT_LIMIT:
            print(f"  ... and {len(result.skipped) - PRINT_LIMIT} more")
    return 1 if result.skipped else 0


def _video_line(record: dict[str, Any]) -> str:
    """One video's summary: frames, faces, detector runs, main-face motion raw -> filtered, time."""
    def median(key: str) -> str:
        return "-" if record[key] is None else f"{record[key]['median']:.4f}"

    tracking = record["tracking"]
    mode = "tracking" if tracking["track"] else "detect every frame"
    faces = sum(1 for frame in record["frames"] if frame["faces"])
    return (f"{record['input']}: {record['frame_count']} frames, a face in {faces}, {mode}: detector on "
            f"{tracking['detector_calls']}, lost {tracking['lost']}; frame-to-frame motion {median('frame_motion')} "
            f"raw, {median('filtered_motion')} filtered ({tracking['filter']}; median RMS / inter-pupil); "
            f"{record['ms_per_frame']:.1f} ms per frame")


def _given_box(values: list[float]) -> np.ndarray:
    box = np.asarray(values, dtype=np.float64)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise DataError(f"--box {' '.join(f'{v:g}' for v in values)}: expected X0 Y0 X1 Y1 with X1 > X0 and Y1 > Y0")
    return box
