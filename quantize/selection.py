"""Which int8 row of each format ships: one step, run by `facemark quantize` and `facemark qat`
after all their producers, over every row in the manifest whichever verb wrote it.

The calibrated int8 rows of a format (facemark.artifacts: `competes`, i.e. the plain full-integer
or static QDQ row, its `_mixed` recovery and its `_qat` fine-tuning) are run on val faces (never
the test split the gate uses) through the runtime layer. An all-int8 row (int8_macs 1.0: the plain
row or QAT) within quantize.all_int8_margin of float ships, the lowest such; otherwise the lowest
NME ships. Every other row gets `superseded_by` it, so the gate judges the row a user would ship
while every row stays in the table. Each compared row records the figures (`val_comparison`). Because the step reads only the
manifest, `qat` then `quantize` ships the same rows as `quantize` then `qat`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from facemark.artifacts import ARTIFACTS
from facemark.backends import BACKENDS
from facemark.contract import ArtifactEntry, Manifest
from facemark.errors import DataError
from facemark.manifest import load_manifest, record_artifact
from facemark.quantize.common import QuantJob
from facemark.status import Status

def candidates(manifest: Manifest) -> dict[str, list[str]]:
    """format -> the verified competing rows of the manifest (two or more per format only)."""
    groups: dict[str, list[str]] = {}
    for name, entry in manifest.artifacts.items():
        row = ARTIFACTS.get(name)
        if row is not None and row.competes and entry.status == Status.VERIFIED and BACKENDS[row.format].runs_here():
            groups.setdefault(row.format, []).append(name)
    return {fmt: sorted(names) for fmt, names in groups.items() if len(names) > 1}


def select_shipped(job: QuantJob, verb: str) -> dict[str, str]:
    """Measure the competing rows on val faces and write `superseded_by` (and each one's
    `val_comparison`) -> {format: shipped row}. Without a val split nothing is superseded (a note
    on stderr says so)."""
    from facemark.quantize.mixed import EVAL_SPLIT, EvalFaces

    manifest = load_manifest(job.export_dir)
    groups = candidates(manifest)
    comparisons: dict[str, dict[str, Any]] = {}
    if groups:
        try:
            faces = EvalFaces(job, job.data_root)
        except DataError as exc:
            print(f"facemark {verb}: note: every int8 row stays unsuperseded (rows are compared on val faces): "
                  f"{exc}", file=sys.stderr)
            groups = {}
    for fmt, names in groups.items():
        scores = {name: _val_nme(job, faces, manifest.artifacts[name]) for name in names}
        ships = choose(scores, {n for n in names if manifest.artifacts[n].details.get("int8_macs", 0.0) >= 1.0},
                       faces.float_nme, job.cfg.quantize.all_int8_margin)
        comparisons[fmt] = {"split": EVAL_SPLIT, "faces": len(faces.crops), "float_nme": round(faces.float_nme, 6),
                            "nme": {name: round(value, 6) for name, value in scores.items()}, "ships": ships}
        print(f"facemark {verb}: {fmt} int8 rows on {len(faces.crops)} {EVAL_SPLIT} faces (float "
              f"{faces.float_nme:.5f}): " + ", ".join(f"{n} {scores[n]:.5f}" for n in sorted(names, key=scores.get))
              + f"; ships {ships}")
    _record(job.export_dir, manifest, comparisons)
    return {fmt: comparison["ships"] for fmt, comparison in comparisons.items()}


def choose(scores: dict[str, float], all_int8: set[str], float_nme: float, margin: float) -> str:
    """The row that ships from {row: val NME}: the lowest of the all-int8 rows within `margin`
    (relative) of `float_nme`, else the lowest of all. Why an all-int8 row first: a float layer
    keeps a mixed row off int8-only accelerators (NNAPI, Hexagon, Edge TPU), and even on XNNPACK
    the dequantise/quantise pairs around it cost time (1.12 against 0.92 ms measured,
    docs/results.md)."""
    within = [name for name in sorted(all_int8) if name in scores and scores[name] <= float_nme * (1.0 + margin)]
    return min(within or sorted(scores), key=scores.get)


def _record(export_dir: Path, manifest: Manifest, comparisons: dict[str, dict[str, Any]]) -> None:
    """superseded_by and val_comparison on each compared row; both removed from every other entry
    (stale ones from an earlier selection)."""
    for name, entry in manifest.artifacts.items():
        row = ARTIFACTS.get(name)
        comparison = comparisons.get(row.format) if row is not None else None
        comparison = comparison if comparison is not None and name in comparison["nme"] else None
        ships = comparison["ships"] if comparison is not None else None
        updated = entry.replaced(val_comparison=comparison, superseded_by=ships if ships != name else None)
        if updated != entry:
            record_artifact(export_dir, name, updated)


def _val_nme(job: QuantJob, faces, entry: ArtifactEntry) -> float:
    """NME of one artifact on the eval faces, run in the runtime layer's child harness (LiteRT's
    int8 kernels may abort the process)."""
    from facemark.runtime import Feed, WorkerFailed, run_artifact

    path = job.export_dir / entry.file
    try:
        points, _ = run_artifact(entry.format, path, Feed.of(entry), job.size, job.norm, faces.crops.crops,
                                 job.work_dir / "selection")
    except WorkerFailed as exc:
        raise RuntimeError(f"{path.name}: {exc.status}") from None
    return faces.nme(points.reshape(len(points), -1))
