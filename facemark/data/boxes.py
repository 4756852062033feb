"""Face boxes and their cache: `ROOT/<split>/boxes/<detector>/<stem>.txt`.

A cache file holds one line `x0 y0 x1 y1 score` (image pixels, the chosen detection) or the single
word `miss` when the detector found no face. Training and evaluation only read the cache; the
detector runs once, in `facemark boxes`. The synthetic dataset writes its simulated detector boxes
under the detector name `synth`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemark.errors import DataError

MISS = "miss"


def box_dir(root: Path, split: str, detector: str) -> Path:
    return Path(root) / split / "boxes" / detector


def write_box(path: Path, box: np.ndarray | None, score: float = 1.0) -> None:
    """Write one cache entry; `box` None records a miss."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if box is None:
        path.write_text(f"{MISS}\n")
        return
    x0, y0, x1, y1 = (float(v) for v in box)
    path.write_text(f"{x0:.2f} {y0:.2f} {x1:.2f} {y1:.2f} {score:.4f}\n")


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
