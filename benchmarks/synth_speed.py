"""Faces per second of `facemark synth`, and how hard the synthetic task is for a mean shape.

Generates a dataset into a temporary folder (or --out) and prints faces/s by wall clock and by
this process's CPU time (with --workers 1 the CPU figure is the one-core rate, unaffected by other
jobs sharing the machine). Then the baseline a landmark CNN must beat: the mean training shape,
in box-normalised coordinates, placed in each test face's box, scored by inter-pupil NME:
- `synth box`: the simulated detector box (misses fall back to the landmark box, as in training);
- `landmark box`: the tight landmark box (only the shape variation remains);
- `aligned`: the mean shape similarity-aligned to each face (non-rigid spread only).

    .venv/bin/python benchmarks/synth_speed.py [--train 1000] [--test 300] [--scheme lapa106] [--workers 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from facemark.codec import landmark_box
from facemark.data.boxes import read_split_boxes
from facemark.data.layout import list_split, read_landmarks
from facemark.data.synth import DETECTOR, generate_dataset
from facemark.schemes import load_scheme


def box_frame(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(P, 2) image pixels -> box-normalised: centre 0, box half-size 1 on each axis."""
    centre, half = (box[:2] + box[2:]) / 2.0, (box[2:] - box[:2]) / 2.0
    return (points - centre) / half


def from_box_frame(norm: np.ndarray, box: np.ndarray) -> np.ndarray:
    centre, half = (box[:2] + box[2:]) / 2.0, (box[2:] - box[:2]) / 2.0
    return norm * half + centre


def similarity_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform of (P, 2) source onto target (Umeyama), applied."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(sigma) @ d) / (s ** 2).sum()
    return scale * s @ rotation.T + mu_t


def load(root: Path, split: str, num_points: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
    samples = list_split(root, split)
    points = np.stack([read_landmarks(s.landmarks_path, num_points) for s in samples]).astype(np.float64)
    boxes = read_split_boxes(root, split, DETECTOR, [s.stem for s in samples])
    return points, [boxes[s.stem] for s in samples]


def mean_shape_baseline(root: Path, scheme_name: str) -> dict[str, float]:
    scheme = load_scheme(scheme_name)
    train, train_boxes = load(root, "train", scheme.num_points)
    test, test_boxes = load(root, "test", scheme.num_points)
    pick = lambda box, pts: landmark_box(pts) if box is None else box   # noqa: E731 (miss -> landmark box)
    mean_synth = np.mean([box_frame(p, pick(b, p)) for p, b in zip(train, train_boxes)], axis=0)
    mean_tight = np.mean([box_frame(p, landmark_box(p)) for p in train], axis=0)
    ipd = scheme.interpupil(test)
    nme = lambda pred: float(np.mean(np.linalg.norm(pred - test, axis=-1).mean(-1) / ipd))  # noqa: E731
    return {
        "synth box": nme(np.stack([from_box_frame(mean_synth, pick(b, p)) for p, b in zip(test, test_boxes)])),
        "landmark box": nme(np.stack([from_box_frame(mean_tight, landmark_box(p)) for p in test])),
        "aligned": nme(np.stack([similarity_fit(mean_tight, p) for p in test])),
        "misses": float(sum(b is None for b in test_boxes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--scheme", default="lapa106")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, help="keep the dataset here (default: a temporary folder)")
    args = parser.parse_args()
    cv2.setNumThreads(1)   # one core means one core
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp) / "synth"
        counts = {"train": args.train, "val": 0, "test": args.test}
        wall, cpu = time.perf_counter(), time.process_time()
        generate_dataset(root, scheme=args.scheme, counts=counts, seed=args.seed, workers=args.workers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        total = args.train + args.test
        print(f"synth {args.scheme}: {total} faces, {total / wall:.0f} faces/s wall, "
              + (f"{total / cpu:.0f} faces/s per CPU-second (one core)" if args.workers == 1
                 else f"{args.workers} workers"))
        if args.train and args.test:
            result = mean_shape_baseline(root, args.scheme)
            print(f"mean-shape inter-pupil NME on {args.test} test faces ({result.pop('misses'):.0f} box misses): "
                  + ", ".join(f"{name} {value:.4f}" for name, value in result.items()))


if __name__ == "__main__":
    main()
