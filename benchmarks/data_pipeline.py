"""Images per second per core of the training pipeline: decode + crop + augment + normalise.

Runs facemark.train.augment.TrainFaces single-threaded in this process (one core), with the
augmentation of configs/base.yaml. The default dataset (/work/shared/data/300w68/train) has no
detector box cache, so every face uses its landmark box (data.landmark_box_prob = 1); box choice
costs nothing either way, the work is decoding, warping and augmenting.

    .venv/bin/python benchmarks/data_pipeline.py [--root DIR] [--split train] [--scheme ibug68]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch

from facemark.config import load_config
from facemark.data.layout import list_split
from facemark.schemes import load_scheme
from facemark.train.augment import TrainFaces
from facemark.weights import IMAGENET  # speed only: the statistics do not change the cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/shared/data/300w68"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--scheme", default="ibug68")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--count", type=int, default=600, help="faces to time (after 20 warm-up faces)")
    args = parser.parse_args()
    # one core: no OpenCV or torch thread pools
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cfg = load_config(overrides=[f"data.scheme={args.scheme}", f"data.input_size={args.input_size}",
                                 "data.landmark_box_prob=1.0"])
    samples = list_split(args.root, args.split)
    faces = TrainFaces(samples, load_scheme(args.scheme).num_points, cfg.data, cfg.augment,
                       detector_boxes=None, seed=0, norm=IMAGENET)
    for i in range(20):
        faces[i % len(faces)]
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(args.count):
        faces[i % len(faces)]
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    # CPU time as well: on a shared machine wall time also counts the other processes' turns
    print(f"{args.count} faces from {args.root / args.split} at {args.input_size} px (landmark boxes, "
          f"base.yaml augmentation): {args.count / seconds:.0f} img/s per core wall clock "
          f"({1000 * seconds / args.count:.2f} ms/face), {args.count / cpu_seconds:.0f} img/s per "
          f"CPU-second ({1000 * cpu_seconds / args.count:.2f} ms/face)")


if __name__ == "__main__":
    main()
