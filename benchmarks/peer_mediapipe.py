"""MediaPipe's rows of the peers table (benchmarks/peers.py): its face mesh on the same faces, inner 51 points.

    pip install --no-deps mediapipe==0.10.21   # only the wheel's files are read; its runtime is not used
    python benchmarks/peer_mediapipe.py ROOT --split val            # the crop-scale sweep, 1.1-1.8

The model is `mediapipe/modules/face_landmark/face_landmark.tflite` from the installed wheel (or
--mediapipe-model PATH): input (1, 192, 192, 3) float32 RGB in [0, 1], first output (1, 1, 1, 1404)
= 468 mesh points x (x, y, z), x and y in pixels of the 192 x 192 input. It runs in LiteRT through
facemark's own LiteRTRunner (the runner facemark's TFLite artifacts use; XNNPACK, `threads`), with
mean 0 and std 1 so its input is pixels / 255. No mediapipe runtime, no face detector of its own:
the crop is the square of side `scale` x the longer side of the cached detector box, centred on
it (codec.crop_matrix with margin scale - 1), not rotated (MediaPipe's own pipeline rotates its
ROI by the eye line and, in video, tracks it from the previous frame's mesh).

The mesh is not the iBUG 300-W convention: its jaw points lie elsewhere, so only the 51 inner iBUG
points (17-67, brows, nose, eyes, mouth) are read off it, through IBUG_INNER_FROM_MESH. Two rows:
- `MediaPipe`: the mapped points as they are;
- `MediaPipe, offset removed`: minus the mean per-point offset to the iBUG points, measured on
  another split (the training split: fair to a model trained on another convention). The offset
  is in each face's own frame, from the prediction alone (origin and axes from the predicted outer
  eye corners, unit = their distance), so it applies to a test face without its ground truth.
Size: the .tflite file. Licence: MediaPipe and its models are Apache-2.0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemark import codec
from facemark.data.crops import choose_box
from facemark.errors import ArtifactError, ConfigError, FacemarkError
from facemark.runtime import Feed, LiteRTRunner
from facemark.schemes import load_scheme
from facemark.weights import Normalisation
from peer_rows import INNER, SCHEME, Faces, Row, file_mb, inner_errors, load_faces

MEDIAPIPE_PIN = "mediapipe==0.10.21"
INSTALL_HINT = f"pip install --no-deps {MEDIAPIPE_PIN} (only its model file is used), or pass --mediapipe-model PATH"
MODEL_IN_WHEEL = Path("modules") / "face_landmark" / "face_landmark.tflite"
INPUT_SIZE = 192
MESH_POINTS = 468
UNIT_RANGE = Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))   # x = pixels / 255, MediaPipe's [0, 1] input
DEFAULT_SCALE = 1.3      # the best of 1.1-1.8 on 300-W val (docs/results.md, "Peers")

# The 51 inner iBUG 300-W points (0-based 17-67, in that order) as MediaPipe face-mesh indices; a
# pair is averaged. Read off PeizhiYan/Mediapipe_2_Dlib_Landmarks, mediapipe2dlib/mp2dlib.py
# (`mp2dlib_correspondence`, dlib points 18-68, commit db9e81e2bd432eaee4de90135cc1ad77d19c7db4).
IBUG_INNER_FROM_MESH: tuple[tuple[int, ...], ...] = (
    (70,), (63,), (105,), (66,), (107,),                               # 17-21 right brow (image left)
    (336,), (296,), (334,), (293,), (300,),                            # 22-26 left brow
    (168, 6), (197, 195), (5,), (4,),                                  # 27-30 nose bridge
    (75,), (97,), (2,), (326,), (305,),                                # 31-35 nostrils
    (33,), (160,), (158,), (133,), (153,), (144,),                     # 36-41 right eye
    (362,), (385,), (387,), (263,), (373,), (380,),                    # 42-47 left eye
    (61,), (39,), (37,), (0,), (267,), (269,), (291,),                 # 48-54 upper lip, outer
    (321,), (314,), (17,), (84,), (91,),                               # 55-59 lower lip, outer
    (78,), (82,), (13,), (312,), (308,),                               # 60-64 inner mouth, upper
    (317,), (14,), (87,),                                              # 65-67 inner mouth, lower
)
EYE_CORNERS = (36 - INNER.start, 45 - INNER.start)   # outer eye corners among the 51: the offset's frame


def default_model_path() -> Path:
    """face_landmark.tflite inside the installed mediapipe package, found without importing it
    (its __init__ needs its own dependencies, which are not installed)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"mediapipe (its {MODEL_IN_WHEEL.name}) is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_IN_WHEEL
    if not path.is_file():
        raise ConfigError(f"{path}: MediaPipe's face landmark model is missing from the mediapipe package; "
                          f"{INSTALL_HINT}")
    return path


def mediapipe_version() -> str:
    try:
        return importlib.metadata.version("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_mesh_runner(path: Path, threads: int) -> LiteRTRunner:
    """A LiteRTRunner on the face-mesh model at `path`, refused unless it takes (1, 192, 192, 3)
    and its first output holds 468 x 3 values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: MediaPipe face landmark model not found; {INSTALL_HINT}")
    runner = LiteRTRunner(path, Feed("NHWC"), INPUT_SIZE, UNIT_RANGE, threads)
    inputs, outputs = [int(v) for v in runner.input["shape"]], [int(v) for v in runner.output["shape"]]
    if inputs != [1, INPUT_SIZE, INPUT_SIZE, 3] or int(np.prod(outputs)) != MESH_POINTS * 3:
        raise ArtifactError(f"{path}: input {inputs}, first output {outputs}; MediaPipe's face mesh takes "
                            f"[1, {INPUT_SIZE}, {INPUT_SIZE}, 3] and gives {MESH_POINTS} x 3 values")
    return runner


def mesh_to_inner(mesh: np.ndarray) -> np.ndarray:
    """(N, 468, >=2) mesh points -> (N, 51, 2) inner iBUG points (x, y; pairs averaged), same units."""
    return np.stack([mesh[:, list(indices), :2].mean(axis=1) for indices in IBUG_INNER_FROM_MESH], axis=1)


def crops_of(faces: Faces, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The faces' 192-px crops -> ((N, 192, 192, 3) uint8, (N, 2, 3) image->crop matrices, cached-box
    misses, which use the landmark box as every row does)."""
    if not scale > 0:
        raise ConfigError(f"MediaPipe crop scale {scale}: must be > 0 (the crop side over the box's longer side)")
    matrices = np.stack([codec.crop_matrix(choose_box(box, points), INPUT_SIZE, scale - 1.0)
                         for box, points in zip(faces.boxes, faces.points)])
    crops = np.stack([codec.warp_crop(image, matrix, INPUT_SIZE) for image, matrix in zip(faces.images, matrices)])
    return crops, matrices, sum(box is None for box in faces.boxes)


def predict_inner(runner: LiteRTRunner, faces: Faces, scale: float) -> tuple[np.ndarray, np.ndarray, int]:
    """MediaPipe on the faces' crops at `scale` -> ((N, 51, 2) image pixels, the crops, box misses)."""
    crops, matrices, misses = crops_of(faces, scale)
    mesh = runner.raw_outputs(crops).astype(np.float64).reshape(len(crops), MESH_POINTS, 3)
    return codec.apply_affine(mesh_to_inner(mesh), codec.invert_affine(matrices)), crops, misses


def _eye_frames(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 51, 2) predictions -> (N, 2, 2) rotations (rows: unit eye-line axis, its normal) and (N,)
    outer-eye-corner distances: each face's own frame, from its prediction only."""
    axis = pred[:, EYE_CORNERS[1]] - pred[:, EYE_CORNERS[0]]
    length = np.linalg.norm(axis, axis=1)
    if not (length > 0).all():
        raise ArtifactError("a MediaPipe prediction has both outer eye corners on one point; no face frame")
    unit = axis / length[:, None]
    return np.stack([unit, np.stack([-unit[:, 1], unit[:, 0]], axis=1)], axis=1), length


def fit_offset(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, 51, 2) predictions and ground truth (image pixels) -> (51, 2) mean offset gt - pred in
    each face's eye frame, in units of its predicted outer-eye-corner distance."""
    rotations, length = _eye_frames(pred)
    local = np.einsum("nij,npj->npi", rotations, gt - pred) / length[:, None, None]
    return local.mean(axis=0)


def remove_offset(pred: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(N, 51, 2) predictions + fit_offset's (51, 2) -> (N, 51, 2) corrected, image pixels."""
    rotations, length = _eye_frames(pred)
    return pred + np.einsum("nji,pj->npi", rotations, offset) * length[:, None, None]


@dataclass
class MeshRun:
    """MediaPipe on a split at one scale: raw and offset-removed (N, 51, 2) image pixels, the
    (51, 2) offset (fit_offset's units) from the other split, the crops, cached-box misses."""

    raw: np.ndarray
    corrected: np.ndarray
    offset: np.ndarray
    crops: np.ndarray
    misses: int


def run_mesh(runner: LiteRTRunner, faces: Faces, offset_faces: Faces, scale: float) -> MeshRun:
    """Predict `faces` and `offset_faces` at `scale`; the offset fitted on the second is removed from the first."""
    raw, crops, misses = predict_inner(runner, faces, scale)
    offset = fit_offset(predict_inner(runner, offset_faces, scale)[0], offset_faces.points[:, INNER])
    return MeshRun(raw, remove_offset(raw, offset), offset, crops, misses)


def mediapipe_rows(faces: Faces, offset_faces: Faces, model: Path | None, scale: float, threads: int,
                   warmup: int, runs: int) -> tuple[list[Row], dict[str, Any]]:
    """The raw and offset-removed rows on `faces`, the offset fitted on `offset_faces` (another
    split) -> (rows, facts for the report: model, version, scale, the offset's mean length)."""
    path = Path(model) if model is not None else default_model_path()
    runner = load_mesh_runner(path, threads)
    run = run_mesh(runner, faces, offset_faces, scale)
    times = list(runner.latency(run.crops[0], warmup, runs))
    note = f"{run.misses} {faces.detector} misses used the landmark box" if run.misses else ""
    rows = [Row(name, points, faces.points, times, run.misses, note, size_mb=file_mb(path))
            for name, points in (("MediaPipe", run.raw), ("MediaPipe, offset removed", run.corrected))]
    return rows, {"model": str(path), "version": mediapipe_version(), "scale": scale,
                  "offset_faces": len(offset_faces.stems),
                  "offset_mean_length": float(np.linalg.norm(run.offset, axis=1).mean()), "litert": runner.settings()}


def sweep(faces: Faces, offset_faces: Faces, model: Path | None, scales: list[float]) -> list[dict[str, float]]:
    """Inner-51 NME (OC) on `faces` per crop scale, raw and with the offset fitted on `offset_faces`
    at that scale -> [{"scale", "nme_raw", "nme_offset_removed"}]."""
    runner = load_mesh_runner(Path(model) if model is not None else default_model_path(), threads=1)
    scheme, results = load_scheme(SCHEME), []
    for scale in scales:
        run = run_mesh(runner, faces, offset_faces, scale)
        results.append({"scale": scale, "nme_raw": float(inner_errors(run.raw, faces.points, scheme).mean()),
                        "nme_offset_removed": float(inner_errors(run.corrected, faces.points, scheme).mean())})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MediaPipe's crop-scale sweep (inner-51 NME per scale)")
    parser.add_argument("root", type=Path, help="dataset root in LaPa layout (68 points, cached boxes)")
    parser.add_argument("--split", default="val", help="the held-out split the scale is chosen on")
    parser.add_argument("--offset-split", default="train", help="the split the offset is measured on")
    parser.add_argument("--detector", default="mtcnn", help="cached box name")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8])
    parser.add_argument("--mediapipe-model", type=Path, default=None,
                        help=f"face_landmark.tflite (default: from the installed {MEDIAPIPE_PIN})")
    args = parser.parse_args(argv)
    try:
        faces = load_faces(args.root, args.split, args.detector, None)
        results = sweep(faces, load_faces(args.root, args.offset_split, args.detector, None), args.mediapipe_model,
                        args.scales)
    except FacemarkError as exc:
        print(f"peer_mediapipe: {exc}", file=sys.stderr)
        return 2
    print(f"MediaPipe inner-51 NME (OC) on {args.root} {args.split} ({len(faces.stems)} faces), offset from "
          f"{args.offset_split}\n\n| scale | raw | offset removed |\n|---|---|---|")
    for result in results:
        print(f"| {result['scale']:.2f} | {result['nme_raw']:.4f} | {result['nme_offset_removed']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
