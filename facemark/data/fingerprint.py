"""Data fingerprints: which faces a number was measured on, so that no gate compares different faces.

A split's fingerprint is the sha256 over the sorted lines "RELATIVE NAME <tab> CONTENT SHA256" of
every image and landmark file of the faces used (names relative to the dataset root, so a moved
dataset keeps its fingerprint), together with the scheme, the detector (whose box cache chose the
crops) and the face count. Training records one per split in the checkpoint and in
RUN/data_fingerprint.json; `facemark validate` puts the test split's in validation.json, and
`validate --baseline` refuses a baseline whose fingerprint differs; `facemark eval` warns when the
evaluated split differs from the one the run recorded.

Cost: one sha256 pass over the files, threads in parallel (hashlib releases the GIL):
300-W's 1207 training faces (56 MB) take about 0.2 s with a warm page cache (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from facemark.config import DataConfig
from facemark.data.layout import Sample, list_split, present_splits
from facemark.io import atomic_write_text

FINGERPRINT_FILE = "data_fingerprint.json"
SCHEMA = "facemark-data-fingerprint-v1"
HASH_THREADS = 4


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_samples(root: Path, split: str, samples: Sequence[Sample], data_cfg: DataConfig) -> dict[str, Any]:
    """-> {"split", "count", "scheme", "detector", "sha256"} of these faces' image and landmark files."""
    root = Path(root)
    files = [path for sample in samples for path in (sample.image_path, sample.landmarks_path)]
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        hashes = list(pool.map(_file_sha256, files))
    lines = sorted(f"{Path(path).relative_to(root).as_posix()}\t{sha}" for path, sha in zip(files, hashes))
    digest = hashlib.sha256("\n".join(lines).encode())
    return {"split": split, "count": len(samples), "scheme": data_cfg.scheme, "detector": data_cfg.detector,
            "sha256": digest.hexdigest()}


def fingerprint_split(root: Path, split: str, data_cfg: DataConfig, limit: int | None = None) -> dict[str, Any]:
    """Fingerprint of the faces a CropSet of this split uses: the first `limit` (default
    data.limit) faces in stem order, as facemark.data.crops.load_crop_set selects them."""
    samples = list_split(root, split)
    limit = limit if limit is not None else data_cfg.limit
    return fingerprint_samples(root, split, samples[:limit] if limit else samples, data_cfg)


def record_run_data(run_dir: Path, root: Path, used: dict[str, dict[str, Any]], data_cfg: DataConfig
                    ) -> dict[str, dict[str, Any]]:
    """Write RUN/data_fingerprint.json: the splits training used (`used`, e.g. train and val) plus
    every other present split (test: held out, recorded so later evaluations can be checked)
    -> {split: fingerprint}."""
    splits = dict(used)
    for split in present_splits(root):
        if split not in splits:
            splits[split] = fingerprint_split(root, split, data_cfg)
    atomic_write_text(Path(run_dir) / FINGERPRINT_FILE,
                      json.dumps({"schema": SCHEMA, "root": str(root), "splits": splits}, indent=2) + "\n")
    return splits


def difference(theirs: dict[str, Any] | None, ours: dict[str, Any]) -> str | None:
    """How fingerprint `ours` differs from `theirs` ("count: 300 there, 299 here"), None if equal
    or `theirs` is unknown (a record from before fingerprints existed)."""
    if not theirs:
        return None
    for field in ("split", "count", "scheme", "detector", "sha256"):
        if theirs.get(field) != ours.get(field):
            there, here = theirs.get(field), ours.get(field)
            if field == "sha256":
                there, here = str(there)[:12], str(here)[:12]
                return f"file contents differ (fingerprint {there} there, {here} here)"
            return f"{field}: {there!r} there, {here!r} here"
    return None


def warn_if_changed(recorded: dict[str, Any] | None, current: dict[str, Any], what: str) -> None:
    """One warning line on stderr when the faces differ from a recorded fingerprint."""
    change = difference(recorded, current)
    if change:
        print(f"facemark: warning: the {current['split']} split differs from {what} ({change}); "
              f"numbers from the two do not compare", file=sys.stderr)
