"""Face boxes and their cache: `ROOT/<split>/boxes/<detector>/<stem>.txt`.

A cache file holds one line `x0 y0 x1 y1 score` (image pixels, the chosen detection) or the single
word `miss` when the detector found no face. Training and evaluation only read the cache; the
detector runs once, in `facemark boxes` (cache_boxes): images already cached are skipped, so an
interrupted run resumes, and `summary.json` beside the entries records faces, hits, misses, hit
rate and the median detection time. An image that cannot be read (empty, not an image, truncated,
too large, unsupported codec) is skipped with one line on stderr and counted as unreadable, and the
others are still detected; `strict` stops at the first instead. The synthetic dataset writes its
simulated detector boxes under the detector name `synth`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facemark.data.detectors import SELECTION_RULE, Detector, detector_factory, select_detection
from facemark.data.layout import list_images, present_splits, read_image
from facemark.errors import DataError
from facemark.io import atomic_write_text

MISS = "miss"
SUMMARY_NAME = "summary.json"


def box_dir(root: Path, split: str, detector: str) -> Path:
    return Path(root) / split / "boxes" / detector


def write_box(path: Path, box: np.ndarray | None, score: float = 1.0) -> None:
    """Write one cache entry atomically (an interrupted run never leaves half a line); `box` None
    records a miss."""
    if box is None:
        atomic_write_text(path, f"{MISS}\n")
        return
    x0, y0, x1, y1 = (float(v) for v in box)
    atomic_write_text(path, f"{x0:.2f} {y0:.2f} {x1:.2f} {y1:.2f} {score:.4f}\n")


def read_box(path: Path) -> np.ndarray | None:
    """Read one cache entry -> (4,) float64 box (x0, y0, x1, y1), or None for a recorded miss."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise DataError(f"{path}: no cached box (run `facemark boxes ROOT --detector "
                        f"{path.parent.name}` first)") from None
    if text == MISS:
        return None
    try:
        values = [float(v) for v in text.split()]
    except ValueError:
        values = []
    if len(values) != 5 or not np.all(np.isfinite(values)) or values[2] <= values[0] or values[3] <= values[1]:
        raise DataError(f"{path}:1: expected 'x0 y0 x1 y1 score' with x1 > x0 and y1 > y0, or 'miss'; "
                        f"got {text!r}")
    return np.array(values[:4], dtype=np.float64)


def read_split_boxes(root: Path, split: str, detector: str, stems: list[str]) -> dict[str, np.ndarray | None]:
    """Cached boxes of a split keyed by stem; a missing cache folder names the command to run."""
    folder = box_dir(root, split, detector)
    if not folder.is_dir():
        raise DataError(f"{folder}: no box cache for detector {detector!r} (run `facemark boxes "
                        f"{root} --detector {detector}`)")
    return {stem: read_box(folder / f"{stem}.txt") for stem in stems}


def _is_cached(path: Path) -> bool:
    """A readable entry (box or miss); a malformed one is re-run rather than trusted."""
    try:
        read_box(path)
    except DataError:
        return False
    return True


def _skip(problem: str, strict: bool) -> str:
    """One skipped image: DataError under `strict`, else its line on stderr -> the problem."""
    if strict:
        raise DataError(problem)
    tqdm.write(f"facemark boxes: skipped {problem}", file=sys.stderr)
    return problem


def _detect_split(detector: Detector, images: dict[str, Path], folder: Path, overwrite: bool, desc: str,
                  strict: bool, max_pixels: int | None) -> tuple[list[float], list[str]]:
    """Run `detector` on the images not cached yet -> (ms per detection, unreadable-image problems)."""
    todo = [stem for stem in images if overwrite or not _is_cached(folder / f"{stem}.txt")]
    times_ms, unreadable = [], []
    for stem in tqdm(todo, desc=desc, unit="img", leave=False, disable=len(todo) < 50):
        try:
            image = read_image(images[stem], max_pixels)
        except DataError as exc:
            unreadable.append(_skip(str(exc), strict))   # no entry written: a fixed image is picked up next run
            continue
        start = time.perf_counter()
        chosen = select_detection(detector.detect(image), (image.shape[1], image.shape[0]))
        times_ms.append(1000.0 * (time.perf_counter() - start))
        if chosen is None:
            write_box(folder / f"{stem}.txt", None)
        else:
            write_box(folder / f"{stem}.txt", chosen[0], chosen[1])
    return times_ms, unreadable


def _split_summary(folder: Path, stems: list[str], times_ms: list[float], unreadable: list[str],
                   detector: str) -> dict:
    """Figures over the whole cache of the split (not only this run's part)."""
    hits = misses = 0
    for stem in stems:
        try:
            box = read_box(folder / f"{stem}.txt")
        except DataError:
            continue        # not cached (unreadable image) or malformed: neither hit nor miss
        hits, misses = hits + (box is not None), misses + (box is None)
    median_ms = float(np.median(times_ms)) if times_ms else None
    previous = folder / SUMMARY_NAME
    if median_ms is None and previous.is_file():
        # nothing ran this time: keep the timing of the run that filled the cache
        median_ms = json.loads(previous.read_text()).get("median_ms")
    return {"detector": detector, "faces": len(stems), "hits": hits, "misses": misses,
            "unreadable": len(unreadable), "hit_rate": hits / (hits + misses) if hits + misses else None,
            "median_ms": median_ms, "detected_now": len(times_ms), "selection": SELECTION_RULE}


def cache_boxes(root: Path, detector: str, splits: list[str] | None, overwrite: bool, strict: bool = False,
                max_pixels: int | None = None) -> dict:
    """Run `detector` once over every image of each split and cache the chosen box per image.

    `splits` None: every split present. Writes ROOT/<split>/boxes/<detector>/<stem>.txt and
    summary.json there; prints one line per split, and one on stderr per skipped image (unreadable,
    or ambiguous: two files share a stem). Returns {split: summary dict} with faces, hits, misses,
    unreadable (images skipped), hit_rate, median_ms (per image, detection only), detected_now.
    `strict`: the first skipped image is a DataError instead; `max_pixels`: read_image's.
    """
    root = Path(root)
    factory = detector_factory(detector)   # `synth` or a typo fails before anything else
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    names = list(splits) if splits else present_splits(root)
    if not names:
        raise DataError(f"{root}: no splits found (expected ROOT/<split>/images/)")
    model = factory()
    results = {}
    for split in names:
        images, problems = list_images(root, split)
        folder = box_dir(root, split, detector)
        ambiguous = [_skip(problem, strict) for problem in problems]
        times_ms, unreadable = _detect_split(model, images, folder, overwrite, f"{detector} {split}", strict,
                                             max_pixels)
        summary = _split_summary(folder, list(images), times_ms, ambiguous + unreadable, detector)
        atomic_write_text(folder / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
        rate = "n/a" if summary["hit_rate"] is None else f"{100 * summary['hit_rate']:.1f}%"
        ms = "n/a" if summary["median_ms"] is None else f"{summary['median_ms']:.1f} ms"
        print(f"{split}: {summary['faces']} faces, {summary['hits']} hits, {summary['misses']} misses, "
              f"hit rate {rate}, median {ms}/image ({summary['detected_now']} detected now, "
              f"{summary['unreadable']} skipped) -> {folder}")
        results[split] = summary
    return results
