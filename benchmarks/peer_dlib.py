"""Peer benchmark: dlib's 68-point shape predictor beside facemark on the same faces, one table.

    pip install -e ".[peers]"                        # dlib-bin + face-recognition-models (the model file)
    facemark boxes ROOT --detector mtcnn             # the cached boxes every row starts from
    python benchmarks/peer_dlib.py ROOT --split test --ckpt RUN/best.pt --artifacts onnx_fp32 --out runs/peer

Any 68-point split in LaPa layout (scheme ibug68: dlib's points are iBUG 300-W's, in that order).
Rows, all on the split's faces with image-pixel ground truth:
- `dlib (HOG)`: dlib's own frontal-face HOG detector (one upsampling), one detection chosen by
  facemark's rule (facemark.data.detectors.select_detection); where HOG finds no face the cached
  detector box is used instead, and counted in the "detector misses" column;
- `dlib (<detector> box)`: the predictor given the cached box (`facemark boxes`), as facemark is;
- `facemark`: the checkpoint on the crops `facemark eval` uses (facemark.data.crops.load_crop_set
  and train/evaluate.py's predict_torch); `facemark <name>` per exported artifact of RUN/export
  (--artifacts), run by `facemark validate`'s runners after their sha256 check.
A cached-box miss falls back to the landmark box (data.on_miss: landmarks), counted in the same column.

Columns: faces; OC NME (outer corners 36-45) and IP NME (inter-pupil, pupils = eye-contour means),
both from facemark.metrics; FR@0.1 on the OC NME; ms per face, the median of the landmark stage
alone on one thread (dlib: the predictor call per face, dlib runs single-threaded; facemark: the
model call at batch 1, as `facemark validate` times it: warm-up, then repeated runs); detector
misses. Face detection is not in the ms column; the HOG detector's median time is in the JSON.
Output: a markdown table on stdout, OUT/peer_dlib.json, .md and .csv.

Licences: dlib and the dlib-bin wheel are Boost-licensed; face-recognition-models (CC0 / MIT
metadata) ships dlib's `shape_predictor_68_face_landmarks.dat`, which Davis King trained on the
iBUG 300-W dataset, whose images are licensed for research only; use that model accordingly.
300-W's training set contains AFW and HELEN-train, the very faces of shared/data/300w68, so dlib
has seen them: its numbers there are training-set numbers (optimistic), facemark's held-out ones.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import io
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemark import codec
from facemark.config import DataConfig
from facemark.data.boxes import read_split_boxes
from facemark.data.crops import CropSet, choose_box, load_crop_set
from facemark.data.detectors import select_detection
from facemark.data.layout import list_split, load_sample, read_landmarks
from facemark.errors import ArtifactError, ConfigError, DataError, FacemarkError
from facemark.io import atomic_write_text
from facemark.metrics import failure_rate, nme
from facemark.schemes import Scheme, load_scheme
from facemark.weights import Normalisation

SCHEME = "ibug68"
MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
PEERS_HINT = "pip install -e '.[peers]' (or: pip install dlib-bin face-recognition-models)"
HOG_UPSAMPLE = 1        # dlib's examples upsample once so faces down to ~40 px are found
FR_THRESHOLD = 0.1
COLUMNS = ("row", "faces", "OC NME", "IP NME", "FR@0.1 (OC)", "ms/face", "detector misses")


@dataclass
class Faces:
    """The benchmark's faces: images (H, W, 3) uint8 RGB, points (N, 68, 2) image pixels, the cached
    detector boxes ((4,) or None for a miss) in the same order."""

    stems: list[str]
    images: list[np.ndarray]
    points: np.ndarray
    boxes: list[np.ndarray | None]
    detector: str


@dataclass
class Row:
    name: str
    pred: np.ndarray | None              # (N, 68, 2) image pixels; None when the row did not run
    gt: np.ndarray | None
    times_ms: list[float] = field(default_factory=list)
    misses: int = 0
    miss_note: str = ""
    status: str = "ok"
    extra: dict[str, Any] = field(default_factory=dict)


def import_dlib():
    """dlib, or a ConfigError naming the pip command of the `peers` extra."""
    try:
        import dlib
    except ImportError:
        raise ConfigError(f"dlib is not installed: {PEERS_HINT}") from None
    return dlib


def default_predictor_path() -> Path:
    """The 68-point model inside the face-recognition-models wheel, found without importing the
    package (its __init__ needs pkg_resources, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"face-recognition-models (dlib's {MODEL_FILE}) is not installed: {PEERS_HINT}; "
                          f"or pass --predictor PATH")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: dlib's 68-point model is missing from face-recognition-models; "
                          f"reinstall it or pass --predictor PATH")
    return path


def load_predictor(path: Path | None):
    """(dlib module, dlib.shape_predictor) from `path` or the installed face-recognition-models."""
    dlib = import_dlib()
    path = Path(path) if path is not None else default_predictor_path()
    if not path.is_file():
        raise ConfigError(f"{path}: dlib shape predictor file not found")
    try:
        predictor = dlib.shape_predictor(str(path))
    except RuntimeError as exc:
        raise ConfigError(f"{path}: not a dlib shape predictor ({str(exc).splitlines()[0][:120]})") from None
    return dlib, predictor


def load_faces(root: Path, split: str, detector: str, limit: int | None) -> Faces:
    """Decode and check ROOT/<split> (68 points each) with its cached `detector` boxes."""
    samples = list_split(root, split)
    samples = samples[:limit] if limit else samples
    if not samples:
        raise DataError(f"{Path(root) / split}: no faces")
    count = len(read_landmarks(samples[0].landmarks_path))
    if count != 68:
        raise DataError(f"{samples[0].landmarks_path}: {count} points; dlib's predictor gives the 68 iBUG "
                        f"300-W points (scheme {SCHEME}), so the split must have 68")
    boxes = read_split_boxes(root, split, detector, [s.stem for s in samples])
    loaded = [load_sample(sample, 68) for sample in samples]
    return Faces([s.stem for s in samples], [image for image, _ in loaded],
                 np.stack([points for _, points in loaded]).astype(np.float64),
                 [boxes[s.stem] for s in samples], detector)


def _rectangle(dlib, box: np.ndarray):
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def _hog_box(hog, image: np.ndarray) -> tuple[np.ndarray | None, float]:
    """facemark's choice among HOG's detections -> ((4,) box or None, detection ms)."""
    start = time.perf_counter_ns()
    rects, scores, _ = hog.run(image, HOG_UPSAMPLE, 0.0)
    elapsed = (time.perf_counter_ns() - start) / 1e6
    detections = [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), float(s))
                  for r, s in zip(rects, scores)]
    chosen = select_detection(detections, (image.shape[1], image.shape[0]))
    return (None if chosen is None else chosen[0]), elapsed


def run_dlib(faces: Faces, dlib, predictor, use_hog: bool) -> Row:
    """dlib's predictor on every face from HOG's box (use_hog) or the cached box -> Row in image pixels.

    All boxes are found first, then the predictor runs face after face: the timed calls are the
    landmark stage alone in both dlib rows, not slowed by the detector's pyramid evicting the
    100 MB model from the caches in between (facemark's latency is timed the same way).
    """
    hog = dlib.get_frontal_face_detector() if use_hog else None
    boxes, hog_ms, hog_misses, cache_misses = [], [], 0, 0
    for image, points, cached in zip(faces.images, faces.points, faces.boxes):
        box = None
        if hog is not None:
            box, elapsed = _hog_box(hog, image)
            hog_ms.append(elapsed)
            hog_misses += box is None
        if box is None:
            cache_misses += cached is None
            box = choose_box(cached, points)
        boxes.append(box)
    preds, times = [], []
    for image, box in zip(faces.images, boxes):
        rect = _rectangle(dlib, box)
        start = time.perf_counter_ns()
        shape = predictor(image, rect)
        times.append((time.perf_counter_ns() - start) / 1e6)
        preds.append([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)])
    pred = np.asarray(preds, dtype=np.float64)
    if pred.shape[1:] != (68, 2):
        raise ConfigError(f"the dlib predictor gives {pred.shape[1]} points, not 68")
    if use_hog:
        note = f"{hog_misses} HOG misses used the {faces.detector} box" if hog_misses else ""
        note += f" ({cache_misses} of those missed by {faces.detector} too: landmark box)" if cache_misses else ""
        return Row("dlib (HOG)", pred, faces.points, times, hog_misses, note,
                   extra={"hog_median_ms": float(np.median(hog_ms)), "hog_upsample": HOG_UPSAMPLE})
    note = f"{cache_misses} {faces.detector} misses used the landmark box" if cache_misses else ""
    return Row(f"dlib ({faces.detector} box)", pred, faces.points, times, cache_misses, note)


def _crop_set(root: Path, split: str, data_cfg: DataConfig, faces: Faces) -> CropSet:
    return load_crop_set(root, split, dataclasses.replace(data_cfg, limit=None), stems=faces.stems)


def _facemark_row(name: str, norm: np.ndarray, crop_set: CropSet, size: int, times_ms) -> Row:
    pred = codec.to_image(norm, crop_set.matrices, size)
    note = f"{len(crop_set.misses)} {crop_set.detector} misses " + (
        "left out" if crop_set.skipped else "used the landmark box") if crop_set.misses else ""
    return Row(name, pred, crop_set.points, list(times_ms), len(crop_set.misses), note)


def run_facemark(ckpt: Path, root: Path, split: str, faces: Faces, artifacts: list[str], threads: int,
                 warmup: int, runs: int) -> list[Row]:
    """The checkpoint (and its exported `artifacts`) on the faces' evaluation crops -> Rows."""
    from facemark.model import load_checkpoint, weights_source
    from facemark.train.evaluate import predict_torch
    from facemark.runtime.runners import TorchRunner

    model, cfg, _ = load_checkpoint(Path(ckpt))
    if cfg.data.scheme != SCHEME:
        raise ArtifactError(f"{ckpt}: scheme {cfg.data.scheme!r}, but the peer table is on {SCHEME} points")
    if cfg.data.detector != faces.detector:
        raise ConfigError(f"--detector {faces.detector}: the checkpoint's config uses {cfg.data.detector!r} boxes; "
                          f"compare on the same boxes")
    crop_set, size, norm = _crop_set(root, split, cfg.data, faces), cfg.data.input_size, weights_source(model).norm
    times = TorchRunner(model, size, norm, threads).latency(crop_set.crops[0], warmup, runs)
    rows = [_facemark_row("facemark", predict_torch(model, crop_set).astype(np.float64), crop_set, size, times)]
    return rows + [_artifact_row(Path(ckpt).parent / "export", name, crop_set, size, norm, threads, warmup, runs)
                   for name in artifacts]


def _artifact_row(export_dir: Path, name: str, crop_set: CropSet, size: int, norm: Normalisation, threads: int, warmup: int,
                  runs: int) -> Row:
    """One exported artifact, verified against its manifest and run by validate's runner."""
    from facemark.manifest import check_normalisation, load_manifest, manifest_path, verify_artifact
    from facemark.runtime.runners import create_runner, needs_macos

    manifest = load_manifest(export_dir)
    check_normalisation(manifest, norm, str(manifest_path(export_dir)))
    if name not in manifest.get("artifacts", {}):
        raise ArtifactError(f"{export_dir}/manifest.json: no artifact {name!r}; listed: "
                            f"{', '.join(manifest.get('artifacts', {}))}")
    entry = manifest["artifacts"][name]
    if needs_macos(entry.get("format", "")):
        return Row(f"facemark {name}", None, None, status="not run: needs macOS")
    verify_artifact(export_dir, name, manifest)
    runner = create_runner(entry["format"], export_dir / entry["file"], entry, size, norm, threads)
    times = runner.latency(crop_set.crops[0], warmup, runs)
    return _facemark_row(f"facemark {name}", runner.predict(crop_set.crops).astype(np.float64), crop_set, size, times)


def score(row: Row, scheme: Scheme) -> dict[str, Any]:
    """A row's figures: facemark.metrics' NME (outer-corner and inter-pupil), FR on the OC NME."""
    result: dict[str, Any] = {"row": row.name, "status": row.status, "detector_misses": row.misses,
                              "miss_note": row.miss_note, **row.extra}
    if row.pred is None:
        return result
    corner = nme(row.pred, row.gt, scheme, "corner")
    result.update(faces=len(row.gt), nme_corner=float(corner.mean()),
                  nme_pupil=float(nme(row.pred, row.gt, scheme, "pupil").mean()),
                  fr_corner=failure_rate(corner, FR_THRESHOLD), ms_median=float(np.median(row.times_ms)))
    return result


def benchmark(root: Path, split: str, detector: str | None = None, predictor: Path | None = None,
              ckpt: Path | None = None, artifacts: list[str] | None = None, limit: int | None = None,
              threads: int = 1, warmup: int = 10, runs: int = 50) -> dict[str, Any]:
    """Every row on ROOT/<split> -> the report dict (rows of score(), data, settings)."""
    if artifacts and ckpt is None:
        raise ConfigError("--artifacts needs --ckpt RUN/best.pt (the artifacts are read from RUN/export)")
    if detector is None:
        detector = _checkpoint_detector(ckpt) if ckpt is not None else "mtcnn"
    dlib, shape_predictor = load_predictor(predictor)
    faces = load_faces(Path(root), split, detector, limit)
    rows = [run_dlib(faces, dlib, shape_predictor, use_hog=True), run_dlib(faces, dlib, shape_predictor, use_hog=False)]
    if ckpt is not None:
        rows += run_facemark(Path(ckpt), Path(root), split, faces, list(artifacts or []), threads, warmup, runs)
    scheme = load_scheme(SCHEME)
    return {"data": {"root": str(root), "split": split, "faces": len(faces.stems), "detector": detector,
                     "limit": limit},
            "predictor": str(predictor or default_predictor_path()), "checkpoint": str(ckpt) if ckpt else None,
            "settings": {"threads": threads, "warmup": warmup, "runs": runs, "fr_threshold": FR_THRESHOLD,
                         "dlib": getattr(dlib, "__version__", "unknown")},
            "rows": [score(row, scheme) for row in rows]}


def _checkpoint_detector(ckpt: Path) -> str:
    from facemark.model import load_checkpoint

    return load_checkpoint(Path(ckpt))[1].data.detector


def _cells(row: dict[str, Any]) -> list[str]:
    if "nme_corner" not in row:
        return [row["row"], "-", "-", "-", "-", "-", row["status"]]
    misses = str(row["detector_misses"]) + (f" ({row['miss_note']})" if row["miss_note"] else "")
    return [row["row"], str(row["faces"]), f"{row['nme_corner']:.4f}", f"{row['nme_pupil']:.4f}",
            f"{row['fr_corner']:.4f}", f"{row['ms_median']:.2f}", misses]


def markdown(report: dict[str, Any]) -> str:
    data = report["data"]
    lines = [f"dlib vs facemark on {data['root']} ({data['split']}, {data['faces']} faces, "
             f"{data['detector']} boxes)", "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in report["rows"]]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """OUT/peer_dlib.json, .md and .csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(_cells(row) for row in report["rows"])
    paths = [out_dir / "peer_dlib.json", out_dir / "peer_dlib.md", out_dir / "peer_dlib.csv"]
    for path, text in zip(paths, (json.dumps(report, indent=2) + "\n", markdown(report), buffer.getvalue())):
        atomic_write_text(path, text)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="dataset root in LaPa layout (68 points)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--detector", default=None, help="cached box name (default: the checkpoint's, else mtcnn)")
    parser.add_argument("--predictor", type=Path, default=None,
                        help=f"dlib model file (default: {MODEL_FILE} from face-recognition-models)")
    parser.add_argument("--ckpt", type=Path, default=None, help="facemark RUN/best.pt for the facemark row")
    parser.add_argument("--artifacts", nargs="*", default=[], help="RUN/export manifest names, e.g. onnx_fp32")
    parser.add_argument("--limit", type=int, default=None, help="first N faces only")
    parser.add_argument("--threads", type=int, default=1, help="facemark latency threads (dlib uses one)")
    parser.add_argument("--out", type=Path, default=Path("runs/peer_dlib"))
    args = parser.parse_args(argv)
    try:
        report = benchmark(args.root, args.split, args.detector, args.predictor, args.ckpt, args.artifacts,
                           args.limit, args.threads)
    except FacemarkError as exc:
        print(f"peer_dlib: {exc}", file=sys.stderr)
        return 2
    print(markdown(report))
    print("wrote " + ", ".join(str(p) for p in write_outputs(report, args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
