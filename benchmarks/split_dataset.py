"""Split one LaPa-layout folder (e.g. ../shared/data/300w68/train) into train/val/test by symlinks.

    python benchmarks/split_dataset.py ../shared/data/300w68/train /tmp/real/300w68 --val 0.15 --test 0.15

The source stays untouched (it may be read-only); a seeded permutation of the stems decides the
split, so the same command always gives the same split. Prints the counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facemark.data.layout import list_split


def split_dataset(source: Path, dest: Path, val: float, test: float, seed: int) -> dict[str, int]:
    samples = list_split(source.parent, source.name)
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val, n_test = round(val * len(samples)), round(test * len(samples))
    parts = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    for split, indices in parts.items():
        for sub in ("images", "landmarks"):
            (dest / split / sub).mkdir(parents=True, exist_ok=True)
        for i in indices:
            sample = samples[i]
            for link, target in ((dest / split / "images" / sample.image_path.name, sample.image_path),
                                 (dest / split / "landmarks" / sample.landmarks_path.name, sample.landmarks_path)):
                if not link.exists():
                    link.symlink_to(target.resolve())
    return {split: len(indices) for split, indices in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--val", type=float, default=0.15)
    parser.add_argument("--test", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(split_dataset(args.source, args.dest, args.val, args.test, args.seed))


if __name__ == "__main__":
    main()
