"""`facemark check-data`: every problem of a LaPa-layout dataset, not only the first.

Each problem is one line that starts with the file (and `:line` where it applies) and says what
was expected, e.g. `ROOT/train/landmarks/a.txt:3: expected two numbers 'x y', got '1.0 abc'`.
The per-file checks are the reader's own (facemark.data.layout): a file that passes here also
loads in training, and a file refused in training is listed here with the same message.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from facemark.data.layout import (
    SPLITS,
    Sample,
    check_points_inside,
    list_samples_lenient,
    present_splits,
    read_image,
    read_landmarks,
)
from facemark.errors import DataError
from facemark.schemes import load_scheme

# A progress bar is noise for the tiny datasets of tests and demos.
PROGRESS_MIN_SAMPLES = 200
PRINT_LIMIT = 50


@dataclass(frozen=True)
class SplitSummary:
    """Counts for one split: paired faces, faces that passed every check, problem lines."""

    split: str
    faces: int
    ok: int
    problems: int


class CheckReport(list):
    """The problem lines (a plain list of str, so `if problems:` works) plus per-split counts."""

    def __init__(self, problems: Iterable[str] = (), splits: list[SplitSummary] | None = None):
        super().__init__(problems)
        self.splits: list[SplitSummary] = list(splits or [])


def check_sample(sample: Sample, num_points: int, max_pixels: int | None = None) -> list[str]:
    """All problems of one face (at most one per file, as the reader stops at a file's first);
    `max_pixels`: read_image's (None: data.max_image_pixels of base.yaml)."""
    problems = []
    points = image = None
    try:
        points = read_landmarks(sample.landmarks_path, num_points)
    except DataError as exc:
        problems.append(str(exc))
    try:
        image = read_image(sample.image_path, max_pixels)
    except DataError as exc:
        problems.append(str(exc))
    if points is not None and image is not None:
        try:
            check_points_inside(sample.landmarks_path, points, image.shape[1], image.shape[0])
        except DataError as exc:
            problems.append(str(exc))
    return problems


def _check_samples(samples: list[Sample], num_points: int, desc: str, max_pixels: int | None) -> list[list[str]]:
    """check_sample over many faces in threads (cv2 decoding releases the GIL); order preserved."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda s: check_sample(s, num_points, max_pixels), samples)
        return list(tqdm(results, total=len(samples), desc=desc, unit="face", leave=False,
                         disable=len(samples) < PROGRESS_MIN_SAMPLES))


def _check_split(root: Path, split: str, num_points: int, max_pixels: int | None) -> tuple[list[str], SplitSummary]:
    samples, problems = list_samples_lenient(root, split)
    per_sample = _check_samples(samples, num_points, f"check {split}", max_pixels)
    ok = sum(1 for found in per_sample if not found)
    problems += [line for found in per_sample for line in found]
    return problems, SplitSummary(split, faces=len(samples), ok=ok, problems=len(problems))


def _splits_to_check(root: Path, splits: list[str] | None) -> tuple[list[str], list[str]]:
    """(splits that exist, problems): a split asked for explicitly must exist; without a list
    at least one split must be present."""
    present = present_splits(root)
    if splits is None:
        if not present:
            return [], [f"{root}: no splits found (expected ROOT/<split>/images/ and "
                        f"ROOT/<split>/landmarks/ for a split in {', '.join(SPLITS)})"]
        return present, []
    missing = [f"{Path(root) / s / 'images'}: split {s!r} not found (present: "
               f"{', '.join(present) or 'none'})" for s in splits if s not in present]
    return [s for s in splits if s in present], missing


def check_dataset(root: Path, scheme: str, splits: list[str] | None, max_pixels: int | None = None) -> CheckReport:
    """Every problem of the dataset at `root` for landmark `scheme`, one line each.

    `splits` None checks every split present; `max_pixels` is read_image's (None: base.yaml's
    data.max_image_pixels). Returns an empty report when the data is clean; the report also
    carries per-split counts (`.splits`) for print_report.
    """
    root = Path(root)
    num_points = load_scheme(scheme).num_points   # an unknown scheme is a ConfigError, not a problem
    if not root.is_dir():
        return CheckReport([f"{root}: dataset root not found"])
    names, problems = _splits_to_check(root, splits)
    summaries = []
    for split in names:
        found, summary = _check_split(root, split, num_points, max_pixels)
        problems += found
        summaries.append(summary)
    return CheckReport(problems, summaries)


def usable_samples(root: Path, split: str, scheme: str, max_pixels: int | None = None) -> tuple[list[Sample], list[str]]:
    """The samples of a split that pass every check (`max_pixels`: read_image's), and the problems
    of the others.

    Training uses this when data.skip_bad_samples is true. A missing split is still an error
    (DataError): there is nothing to skip to.
    """
    num_points = load_scheme(scheme).num_points
    samples, problems = list_samples_lenient(root, split)
    per_sample = _check_samples(samples, num_points, f"check {split}", max_pixels)
    good = [sample for sample, found in zip(samples, per_sample) if not found]
    problems += [line for found in per_sample for line in found]
    return good, problems


def print_report(problems: list[str]) -> None:
    """Print a summary line per split, then the problems (at most PRINT_LIMIT, then a count)."""
    for summary in getattr(problems, "splits", []):
        print(f"{summary.split}: {summary.ok}/{summary.faces} faces ok, {summary.problems} problems")
    for line in problems[:PRINT_LIMIT]:
        print(line)
    if len(problems) > PRINT_LIMIT:
        print(f"... and {len(problems) - PRINT_LIMIT} more")
    print(f"{len(problems)} problems found" if problems else "no problems found")
