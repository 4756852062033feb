"""Calibration crops: a seeded subset of the TRAINING split, cropped like evaluation crops.

Detector boxes from the cache (landmark box on a miss, as data.on_miss says), the run's margin and
input size, no random augmentation: the int8 ranges are measured on the pixels the deployed model
will see, never on downloaded sample images or random noise. The draw is recorded in every int8
manifest entry (split, count, seed, sha256 of the sorted ids), so it can be reproduced exactly.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemark.config import DataConfig
from facemark.data.boxes import read_split_boxes
from facemark.data.crops import CropSet, load_crop_set, to_input
from facemark.data.layout import list_split
from facemark.errors import ConfigError
from facemark.schemes import load_scheme
from facemark.weights import Normalisation

CALIBRATION_SPLIT = "train"
# Fewer faces than this give noisy activation ranges (min/max of a few images); warn, do not refuse.
MIN_RECOMMENDED = 100
# The ids themselves are listed in the manifest up to this many; above, only their sha256.
MAX_LISTED_IDS = 1000


@dataclass
class Calibration:
    """The calibration faces. crops (N, S, S, 3) uint8 RGB; ipd_px (N,) ground-truth inter-pupil
    distance of each face in crop pixels (used to judge an int8 output step)."""

    crops: CropSet
    requested: int
    seed: int
    available: int
    ipd_px: np.ndarray
    preprocessing: str
    norm: Normalisation   # the model's input normalisation (manifest input.mean/std)

    @property
    def ids(self) -> list[str]:
        return sorted(self.crops.stems)

    @property
    def median_ipd_px(self) -> float:
        return float(np.median(self.ipd_px))

    def inputs(self, layout: str = "NCHW") -> np.ndarray:
        """(N, 3, S, S) or (N, S, S, 3) float32 network inputs (normalised with `norm`)."""
        return to_input(self.crops.crops, self.norm, layout)

    def unit_images(self) -> np.ndarray:
        """(N, S, S, 3) float32 RGB in 0-1 (what onnx2tf's -cind expects before its mean/std)."""
        return self.crops.crops.astype(np.float32) / 255.0

    def record(self) -> dict[str, Any]:
        """The manifest's `calibration` entry of an int8 artifact."""
        ids = self.ids
        entry = {"split": self.crops.split, "count": len(ids), "requested": self.requested, "seed": self.seed,
                 "available": self.available, "ids_sha256": ids_sha256(ids),
                 "detector": self.crops.detector, "detector_misses": len(self.crops.misses),
                 "median_ipd_px": round(self.median_ipd_px, 3), "preprocessing": self.preprocessing}
        if len(ids) <= MAX_LISTED_IDS:
            entry["ids"] = ids
        return entry


def ids_sha256(ids: list[str]) -> str:
    """sha256 of the sorted ids joined by newlines (what the manifest records)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def draw_ids(pool: list[str], count: int, seed: int) -> list[str]:
    """A seeded random subset of `count` ids from `pool` (all of them if the pool is smaller), sorted.

    Depends only on the sorted pool, the count and the seed, so the same data and seed always give
    the same faces."""
    pool = sorted(pool)
    if count >= len(pool):
        return pool
    chosen = np.random.default_rng(seed).choice(len(pool), size=count, replace=False)
    return sorted(pool[i] for i in chosen)


def calibration_pool(root: Path, data_cfg: DataConfig) -> list[str]:
    """Training stems that load_crop_set would crop: data.limit applied, detector misses left out
    when data.on_miss is "skip"."""
    samples = list_split(root, CALIBRATION_SPLIT)
    samples = samples[:data_cfg.limit] if data_cfg.limit else samples
    stems = [s.stem for s in samples]
    if data_cfg.on_miss == "skip":
        boxes = read_split_boxes(root, CALIBRATION_SPLIT, data_cfg.detector, stems)
        stems = [s for s in stems if boxes[s] is not None]
    return stems


def load_calibration(root: Path, data_cfg: DataConfig, count: int, seed: int, norm: Normalisation) -> Calibration:
    """Draw and crop `count` training faces with `seed` -> Calibration (inputs normalised with `norm`).

    Fewer than `count` faces in the split: all are used, with a one-line warning on stderr; fewer
    than MIN_RECOMMENDED: a one-line warning too.
    """
    if count < 1:
        raise ConfigError(f"quantize.calibration_count: must be >= 1, got {count}")
    pool = calibration_pool(root, data_cfg)
    ids = draw_ids(pool, count, seed)
    if len(pool) < count:
        _warn(f"the {CALIBRATION_SPLIT} split of {root} has {len(pool)} usable faces, fewer than "
              f"quantize.calibration_count={count}; calibrating on all of them")
    if len(ids) < MIN_RECOMMENDED:
        _warn(f"calibrating on {len(ids)} faces (< {MIN_RECOMMENDED}): int8 ranges may be noisy")
    crops = load_crop_set(root, CALIBRATION_SPLIT, data_cfg, stems=ids)
    scheme = load_scheme(data_cfg.scheme)
    size = data_cfg.input_size
    preprocessing = (f"evaluation crops of the {CALIBRATION_SPLIT} split: cached {data_cfg.detector!r} "
                     f"detector boxes (on a miss: {data_cfg.on_miss}), square crop of the box's longer side "
                     f"x (1 + {data_cfg.margin:g}), {size}x{size} bilinear, no augmentation; RGB/255 then "
                     f"{norm}")
    return Calibration(crops=crops, requested=count, seed=seed, available=len(pool),
                       ipd_px=scheme.interpupil(crops.crop_points), preprocessing=preprocessing, norm=norm)


def _warn(message: str) -> None:
    print(f"facemark quantize: warning: {message}", file=sys.stderr)


PERCENTILE_BINS = 2048   # onnxruntime's histogram size for its percentile calibration


class PercentileRanges:
    """Activation ranges by onnxruntime's (non-symmetric) percentile method, for the converters and
    graphs that only measure min-max (LiteRT's converter, the QAT graph): for each tensor a
    PERCENTILE_BINS histogram over [-T, T] (T: its largest magnitude over the calibration crops),
    then (100 - percentile) / 2 % of the values cut from each tail, clamped to the tensor's min-max.
    `bounds`: {tensor key: (min, max)} over the same crops, measured first."""

    def __init__(self, bounds: dict[Any, tuple[float, float]]):
        self.bounds = {key: (float(low), float(high)) for key, (low, high) in bounds.items()}
        self.counts = {key: np.zeros(PERCENTILE_BINS, np.int64) for key in self.bounds}

    def add(self, key: Any, values: np.ndarray) -> None:
        """Count the values of one calibration batch of tensor `key` (any shape)."""
        limit = self._limit(key)
        if limit > 0:
            self.counts[key] += np.histogram(np.asarray(values, np.float32), PERCENTILE_BINS, range=(-limit, limit))[0]

    def ranges(self, percentile: float) -> dict[Any, tuple[float, float]]:
        """{tensor key: (low, high)} at `percentile` (e.g. 99.99)."""
        cut = (100.0 - percentile) / 200.0
        out = {}
        for key, (low, high) in self.bounds.items():
            total, limit = self.counts[key].sum(), self._limit(key)
            if total == 0 or limit == 0:
                out[key] = (low, high)
                continue
            edges = np.linspace(-limit, limit, PERCENTILE_BINS + 1)
            cdf = np.cumsum(self.counts[key] / total)   # onnxruntime's order of operations
            cut_low = max(low, float(edges[np.searchsorted(cdf, cut)]))
            cut_high = min(high, float(edges[np.searchsorted(cdf, 1.0 - cut)]))
            # a (nearly) constant tensor sits in one bin, whose edge can fall outside its min-max
            out[key] = (cut_low, cut_high) if cut_low <= cut_high else (low, high)
        return out

    def _limit(self, key: Any) -> float:
        low, high = self.bounds[key]
        return max(abs(low), abs(high))
