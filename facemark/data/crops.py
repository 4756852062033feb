"""Evaluation crops: a split decoded and cropped once, with detector boxes, no augmentation.

The same CropSet feeds `facemark eval`, quantisation calibration, golden vectors and every
artifact in `facemark validate`, so all of them see identical input pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facemark import codec
from facemark.config import DataConfig
from facemark.data.boxes import read_split_boxes
from facemark.data.layout import list_split, load_sample, read_image
from facemark.errors import DataError
from facemark.schemes import load_scheme
from facemark.weights import Normalisation


@dataclass
class CropSet:
    """N faces of one split. Shapes: crops (N, S, S, 3) uint8 RGB; matrices (N, 2, 3) image->crop;
    points (N, P, 2) ground truth in image pixels."""

    split: str
    stems: list[str]
    crops: np.ndarray
    matrices: np.ndarray
    points: np.ndarray
    detector: str
    misses: list[str] = field(default_factory=list)   # stems whose detector box was a miss
    skipped: list[str] = field(default_factory=list)  # misses left out (data.on_miss: skip)

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def crop_points(self) -> np.ndarray:
        """(N, P, 2) ground truth in crop pixels."""
        return codec.apply_affine(self.points, self.matrices)

    def subset(self, indices: np.ndarray | list[int]) -> CropSet:
        idx = np.asarray(indices, dtype=int)
        return CropSet(self.split, [self.stems[i] for i in idx], self.crops[idx], self.matrices[idx],
                       self.points[idx], self.detector, self.misses, self.skipped)


def choose_box(detector_box: np.ndarray | None, points: np.ndarray) -> np.ndarray:
    """The detector's box, or on a miss the tight landmark box (the documented fallback)."""
    return codec.landmark_box(points) if detector_box is None else detector_box


def load_crop_set(root: Path, split: str, data_cfg: DataConfig, limit: int | None = None,
                  workers: int = 4, stems: list[str] | None = None) -> CropSet:
    """Decode, check and crop a split with its cached detector boxes (data_cfg.detector).

    A detector miss falls back to the landmark box (on_miss: landmarks) or leaves the face out
    (on_miss: skip); either way it is counted in `misses`, never dropped silently. `stems`, if
    given, selects those faces only (after `limit`), so a subset is cropped without decoding the
    whole split; a stem not in the split is a DataError.
    """
    scheme = load_scheme(data_cfg.scheme)
    samples = list_split(root, split)
    limit = limit if limit is not None else data_cfg.limit
    samples = samples[:limit] if limit else samples
    if stems is not None:
        unknown = sorted(set(stems) - {s.stem for s in samples})
        if unknown:
            raise DataError(f"{Path(root) / split}: no face named {unknown[0]!r} ({len(unknown)} requested "
                            f"stems are not in the split)")
        wanted = set(stems)
        samples = [s for s in samples if s.stem in wanted]
    boxes = read_split_boxes(root, split, data_cfg.detector, [s.stem for s in samples])
    misses = [s.stem for s in samples if boxes[s.stem] is None]
    skipped = misses if data_cfg.on_miss == "skip" else []
    samples = [s for s in samples if s.stem not in set(skipped)]
    if not samples:
        raise DataError(f"{Path(root) / split}: no faces left to evaluate (detector {data_cfg.detector!r} "
                        f"missed all {len(misses)})")
    size = data_cfg.input_size

    def crop_one(sample):
        image, points = load_sample(sample, scheme.num_points, data_cfg.max_image_pixels)
        matrix = codec.crop_matrix(choose_box(boxes[sample.stem], points), size, data_cfg.margin)
        return codec.warp_crop(image, matrix, size), matrix, points

    with ThreadPoolExecutor(max_workers=workers) as pool:  # cv2 releases the GIL while decoding
        results = list(pool.map(crop_one, samples))
    return CropSet(
        split=split, stems=[s.stem for s in samples],
        crops=np.stack([r[0] for r in results]), matrices=np.stack([r[1] for r in results]),
        points=np.stack([r[2] for r in results]).astype(np.float64),
        detector=data_cfg.detector, misses=misses, skipped=skipped,
    )


class SplitImages(Sequence):
    """The photos of a CropSet's faces, decoded on access: item i is the (H, W, 3) uint8 RGB photo
    of crop_set.stems[i] (the space of its matrices). A later refinement pass crops them again
    (facemark.runtime.refine) and validate's stability shifts crop them again, so nothing is kept in
    memory: a split of large photos would not fit. `max_pixels`: read_image's limit
    (data.max_image_pixels; None: base.yaml's)."""

    def __init__(self, root: Path, crop_set: CropSet, max_pixels: int | None = None) -> None:
        paths = {sample.stem: sample.image_path for sample in list_split(root, crop_set.split)}
        self.paths = [paths[stem] for stem in crop_set.stems]
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return read_image(self.paths[index], self.max_pixels)


def to_input(crops: np.ndarray, norm: Normalisation, layout: str = "NCHW") -> np.ndarray:
    """(N, S, S, 3) uint8 RGB -> float32 network input: /255, then (x - mean) / std of `norm` (the
    model's, facemark.weights), NCHW or NHWC."""
    x = (crops.astype(np.float32) / 255.0 - np.array(norm.mean, np.float32)) / np.array(norm.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x)
