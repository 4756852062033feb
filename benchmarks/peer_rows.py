"""What every row of the peers table shares (benchmarks/peers.py): the faces, a row, facemark's rows,
the scoring and the table files. The peers' own rows are in peer_dlib.py and peer_mediapipe.py.

Coordinates: every row's prediction and ground truth are image pixels of the split's photos.
A row predicts all 68 iBUG 300-W points (scheme ibug68, in that order), or only the 51 inner ones
(iBUG 17-67, 0-based: brows, nose, eyes, mouth), in the order of those 51, for a peer whose
points do not follow iBUG's jaw line (MediaPipe's mesh).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemark import codec
from facemark.config import DataConfig
from facemark.data.boxes import read_split_boxes
from facemark.data.crops import CropSet, load_crop_set
from facemark.data.layout import list_split, load_sample, read_landmarks
from facemark.errors import ArtifactError, ConfigError, DataError
from facemark.io import atomic_write_text
from facemark.metrics import failure_rate, nme, point_errors
from facemark.schemes import Scheme

SCHEME = "ibug68"
INNER = slice(17, 68)    # the 51 inner iBUG points (0-based 17-67): no jaw line
FR_THRESHOLD = 0.1
COLUMNS = ("row", "faces", "inner-51 NME (OC)", "full-68 NME (OC)", "FR@0.1 (inner-51)", "ms/face", "size MB",
           "detector misses")
OUT_STEM = "peers"


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
    """One table row: pred (N, 68, 2) or, for an inner-only peer, (N, 51, 2) image pixels, None
    when the row did not run; gt (N, 68, 2); size_mb: the model file (or fp32 weights) it runs."""

    name: str
    pred: np.ndarray | None
    gt: np.ndarray | None
    times_ms: list[float] = field(default_factory=list)
    misses: int = 0
    miss_note: str = ""
    status: str = "ok"
    size_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_faces(root: Path, split: str, detector: str, limit: int | None) -> Faces:
    """Decode and check ROOT/<split> (68 points each) with its cached `detector` boxes."""
    samples = list_split(root, split)
    samples = samples[:limit] if limit else samples
    if not samples:
        raise DataError(f"{Path(root) / split}: no faces")
    count = len(read_landmarks(samples[0].landmarks_path))
    if count != 68:
        raise DataError(f"{samples[0].landmarks_path}: {count} points; the peers give the 68 iBUG "
                        f"300-W points (scheme {SCHEME}) or their inner 51, so the split must have 68")
    boxes = read_split_boxes(root, split, detector, [s.stem for s in samples])
    loaded = [load_sample(sample, 68) for sample in samples]
    return Faces([s.stem for s in samples], [image for image, _ in loaded],
                 np.stack([points for _, points in loaded]).astype(np.float64),
                 [boxes[s.stem] for s in samples], detector)


def file_mb(path: Path) -> float:
    """Size in MB of a model file, or of every file in a model directory (a Core ML .mlpackage)."""
    path = Path(path)
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_size for p in files) / 1e6


def inner_errors(pred: np.ndarray, gt: np.ndarray, scheme: Scheme) -> np.ndarray:
    """(N, 68 or 51, 2) pred, (N, 68, 2) gt -> (N, 51) inner-point errors over the ground truth's
    outer-corner distance (facemark.metrics.point_errors)."""
    return _corner_errors(pred, gt, scheme)[:, INNER]


def _corner_errors(pred: np.ndarray, gt: np.ndarray, scheme: Scheme) -> np.ndarray:
    """(N, 68) OC-normalised point errors; an inner-only pred is scored with the ground truth's own
    jaw in the jaw's place (zero error there), so only its 51 inner columns mean anything."""
    if pred.shape[1] == INNER.stop - INNER.start:
        pred = np.concatenate([gt[:, :INNER.start], pred], axis=1)
    return point_errors(pred, gt, scheme, "corner")


def score(row: Row, scheme: Scheme) -> dict[str, Any]:
    """A row's figures: inner-51 and (68-point rows) full-68 outer-corner NME, the inter-pupil NME,
    FR on both, median ms, size."""
    result: dict[str, Any] = {"row": row.name, "status": row.status, "detector_misses": row.misses,
                              "miss_note": row.miss_note, "size_mb": row.size_mb, **row.extra}
    if row.pred is None:
        return result
    errors = _corner_errors(row.pred, row.gt, scheme)
    inner = errors[:, INNER].mean(axis=1)
    result.update(faces=len(row.gt), nme_inner=float(inner.mean()), fr_inner=failure_rate(inner, FR_THRESHOLD),
                  ms_median=float(np.median(row.times_ms)))
    if row.pred.shape[1] == 68:
        full = errors.mean(axis=1)
        result.update(nme_corner=float(full.mean()), fr_corner=failure_rate(full, FR_THRESHOLD),
                      nme_pupil=float(nme(row.pred, row.gt, scheme, "pupil").mean()))
    return result


# -- facemark's rows ------------------------------------------------------------------------------

def checkpoint_detector(ckpt: Path) -> str:
    from facemark.model import load_checkpoint

    return load_checkpoint(Path(ckpt))[1].data.detector


def _crop_set(root: Path, split: str, data_cfg: DataConfig, faces: Faces) -> CropSet:
    return load_crop_set(root, split, dataclasses.replace(data_cfg, limit=None), stems=faces.stems)


def _facemark_row(name: str, norm: np.ndarray, crop_set: CropSet, size: int, times_ms, size_mb: float) -> Row:
    pred = codec.to_image(norm, crop_set.matrices, size)
    note = f"{len(crop_set.misses)} {crop_set.detector} misses " + (
        "left out" if crop_set.skipped else "used the landmark box") if crop_set.misses else ""
    return Row(name, pred, crop_set.points, list(times_ms), len(crop_set.misses), note, size_mb=size_mb)


def run_facemark(ckpt: Path, root: Path, split: str, faces: Faces, artifacts: list[str], threads: int,
                 warmup: int, runs: int, refine: list[str] | None = None) -> list[Row]:
    """The checkpoint (and its exported `artifacts`) on the faces' evaluation crops -> Rows, one
    pass each, and with `refine` (`infer.KEY=VALUE` settings) a refined row after each, whose ms
    are the sum of its model calls; the checkpoint's size is its fp32 weights."""
    from facemark.data.crops import SplitImages
    from facemark.model import load_checkpoint, weights_source
    from facemark.runtime.refine import from_config
    from facemark.runtime.runners import TorchRunner

    model, cfg, _ = load_checkpoint(Path(ckpt))
    if cfg.data.scheme != SCHEME:
        raise ArtifactError(f"{ckpt}: scheme {cfg.data.scheme!r}, but the peer table is on {SCHEME} points")
    if cfg.data.detector != faces.detector:
        raise ConfigError(f"--detector {faces.detector}: the checkpoint's config uses {cfg.data.detector!r} boxes; "
                          f"compare on the same boxes")
    crop_set, size, norm = _crop_set(root, split, cfg.data, faces), cfg.data.input_size, weights_source(model).norm
    # a refinement the checkpoint does not record applies to every row alike (1 pass: its own record)
    refinement = from_config(cfg, ["infer.flip=false", "infer.passes=1", *(refine or [])], "peers", "--refine")
    photos = SplitImages(root, crop_set, cfg.data.max_image_pixels)
    weights_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
    rows = _runner_rows("facemark", TorchRunner(model, size, norm, threads), crop_set, size, weights_mb, refinement,
                        photos, warmup, runs)
    for name in artifacts:
        runner, size_mb = _artifact_runner(Path(ckpt).parent / "export", name, size, norm, threads)
        rows += (_runner_rows(f"facemark {name}", runner, crop_set, size, size_mb, refinement, photos, warmup, runs)
                 if runner is not None else [Row(f"facemark {name}", None, None, status="not run: needs macOS",
                                                 size_mb=size_mb)])
    return rows


def _runner_rows(name: str, runner, crop_set: CropSet, size: int, size_mb: float, refinement, photos, warmup: int,
                 runs: int) -> list[Row]:
    """The 1-pass row of one runner, and its refined row when `refinement` is active."""
    first = runner.predict(refinement.pass_crops(crop_set.crops))
    plain = first[:len(crop_set)].astype(np.float64)
    rows = [_facemark_row(name, plain, crop_set, size, runner.latency(crop_set.crops[0], warmup, runs), size_mb)]
    if refinement.active:
        norm = refinement.run(runner.predict, crop_set.crops, crop_set.matrices, photos, first=first)
        times = runner.latency_calls(refinement.latency_crops(crop_set.crops[0]), warmup, runs).sum(axis=1)
        rows.append(_facemark_row(f"{name} ({refinement.label})", norm, crop_set, size, times, size_mb))
    return rows


def _artifact_runner(export_dir: Path, name: str, size: int, norm, threads: int):
    """One exported artifact's runner (None off macOS for Core ML), verified against its manifest
    as `facemark validate` does, and its size in MB."""
    from facemark.manifest import check_normalisation, load_manifest, manifest_path, verify_artifact
    from facemark.backends import BACKENDS
    from facemark.runtime.runners import Feed, create_runner

    manifest = load_manifest(export_dir)
    check_normalisation(manifest.contract, norm, str(manifest_path(export_dir)))
    path = verify_artifact(export_dir, name, manifest)
    entry = manifest.artifacts[name]
    if not BACKENDS[entry.format].runs_here():
        return None, file_mb(path)
    return create_runner(entry.format, path, Feed.of(entry), size, norm, threads), file_mb(path)


# -- the table ------------------------------------------------------------------------------------

def _cells(row: dict[str, Any]) -> list[str]:
    size = "-" if row.get("size_mb") is None else f"{row['size_mb']:.2f}"
    if "nme_inner" not in row:
        return [row["row"], "-", "-", "-", "-", "-", size, row["status"]]
    misses = str(row["detector_misses"]) + (f" ({row['miss_note']})" if row["miss_note"] else "")
    full = f"{row['nme_corner']:.4f}" if "nme_corner" in row else "-"
    return [row["row"], str(row["faces"]), f"{row['nme_inner']:.4f}", full, f"{row['fr_inner']:.4f}",
            f"{row['ms_median']:.2f}", size, misses]


def markdown(report: dict[str, Any]) -> str:
    data = report["data"]
    lines = [f"Peers on {data['root']} ({data['split']}, {data['faces']} faces, {data['detector']} boxes)", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in report["rows"]]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """OUT/peers.json (every figure), .md and .csv (the table)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(_cells(row) for row in report["rows"])
    paths = [out_dir / f"{OUT_STEM}.{ext}" for ext in ("json", "md", "csv")]
    for path, text in zip(paths, (json.dumps(report, indent=2) + "\n", markdown(report), buffer.getvalue())):
        atomic_write_text(path, text)
    return paths
