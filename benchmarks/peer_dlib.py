"""dlib's rows of the peers table (benchmarks/peers.py): its 68-point shape predictor on the same faces.

    pip install -e ".[peers]"      # dlib-bin + face-recognition-models (the model file)

Rows (68 iBUG 300-W points, image pixels):
- `dlib (HOG)`: dlib's own frontal-face HOG detector (one upsampling), one detection chosen by
  facemark's rule (facemark.data.detectors.select_detection); where HOG finds no face the cached
  detector box is used instead, and counted in the "detector misses" column;
- `dlib (<detector> box)`: the predictor given the cached box (`facemark boxes`), as facemark is.
A cached-box miss falls back to the landmark box (data.on_miss: landmarks), counted in the same column.
ms per face is the predictor call alone (dlib runs single-threaded); the HOG detector's median time
is in the JSON, not in the ms column. Size: the .dat model file.

Licences: dlib and the dlib-bin wheel are Boost-licensed; face-recognition-models (CC0 / MIT
metadata) ships dlib's `shape_predictor_68_face_landmarks.dat`, which Davis King trained on the
iBUG 300-W dataset, whose images are licensed for research only; use that model accordingly.
300-W's training set contains AFW and HELEN-train, the very faces of shared/data/300w68, so dlib
has seen them: its numbers there are training-set numbers (optimistic), facemark's held-out ones.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from facemark.data.crops import choose_box
from facemark.data.detectors import select_detection
from facemark.errors import ConfigError
from peer_rows import Faces, Row, file_mb

MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
PEERS_HINT = "pip install -e '.[peers]' (or: pip install dlib-bin face-recognition-models)"
HOG_UPSAMPLE = 1        # dlib's examples upsample once so faces down to ~40 px are found


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



def dlib_rows(faces: Faces, predictor: Path | None) -> tuple[list[Row], dict[str, str]]:
    """Both dlib rows on `faces` with the model at `predictor` (default: face-recognition-models')
    -> (rows, {"predictor": its path, "dlib": dlib's version})."""
    dlib, shape_predictor = load_predictor(predictor)
    path = Path(predictor) if predictor is not None else default_predictor_path()
    rows = [run_dlib(faces, dlib, shape_predictor, use_hog=True), run_dlib(faces, dlib, shape_predictor, use_hog=False)]
    for row in rows:
        row.size_mb = file_mb(path)
    return rows, {"predictor": str(path), "dlib": getattr(dlib, "__version__", "unknown")}
