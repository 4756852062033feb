"""`facemark package RUN --name NAME --out DIR`: a validated run -> a self-contained model folder
that `Landmarker(DIR)` (and, inside facemark/pretrained/, `Landmarker(NAME)`) runs.

DIR receives the chosen artifacts (default: the int8 TFLite row that ships and the float ONNX),
their manifest (the run's, with only those entries) and card.json, the model card's figures:

    {"schema": "facemark-model-card-v1", "name", "scheme", "points", "input_size", "default",
     "licence", "recipe", "commands": [...], "created", "facemark",
     "data": RUN/data_fingerprint.json (root; per split: count, scheme, detector, sha256 of its faces)
             or null for a checkpoint trained elsewhere,
     "test": {"split", "faces", "detector", "infer", "pytorch": ACCURACY},
     "artifacts": {NAME: {"file", "format", "precision", "mode", "size_bytes", "sha256",
                          "accuracy": ACCURACY, "delta_rel", "latency_ms", "threads"}}}

ACCURACY is {"nme_pupil", "nme_corner", "fr@0.1", "auc@0.1"} on the test split in image pixels,
as `facemark validate` measured it (RUN/validation/validation.json). Only artifacts that validate
ran and the gate passed can be packaged. Files are written atomically; packaging again replaces
the folder's files.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from facemark import __version__, pretrained
from facemark.contract import ArtifactEntry, CheckpointRef, Manifest
from facemark.data.fingerprint import FINGERPRINT_FILE
from facemark.errors import ArtifactError
from facemark.io import atomic_path, atomic_write_text
from facemark.pretrained import CARD_NAME, CARD_SCHEMA
from facemark.rundir import RunDir
from facemark.validation_row import ValidationRow, read_rows
from facemark.status import Status

ACCURACY_KEYS = ("nme_pupil", "nme_corner", "fr@0.1", "auc@0.1")


def default_artifacts(manifest: Manifest) -> list[str]:
    """The int8 TFLite artifact that ships (a calibrated row, verified, not superseded: what
    quantize.selection chose) and the float ONNX, those the manifest has."""
    from facemark.artifacts import ARTIFACTS

    entries = manifest.artifacts
    tflite = [name for name, entry in entries.items()
              if name in ARTIFACTS and ARTIFACTS[name].competes and ARTIFACTS[name].format == "tflite"
              and entry.status == Status.VERIFIED and not entry.superseded_by]
    return tflite[:1] + (["onnx_fp32"] if "onnx_fp32" in entries else [])


def _validation_rows(run: RunDir) -> tuple[dict[str, Any], dict[str, ValidationRow]]:
    path = run.validation / "validation.json"
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; package a validated run (facemark validate {run.root})")
    report = json.loads(path.read_text())
    return report, {row.name: row for row in read_rows(report, path)}


def _accuracy(row: ValidationRow) -> dict[str, float]:
    return {key: row.accuracy[key] for key in ACCURACY_KEYS}


def _artifact_card(name: str, entry: ArtifactEntry, row: ValidationRow | None, run: RunDir) -> dict[str, Any]:
    if row is None or not row.evaluated:
        raise ArtifactError(f"{run.validation / 'validation.json'}: no validated row for {name!r}; run "
                            f"`facemark validate {run.root}` after exporting it")
    if not (row.gate or {}).get("passed", False):
        raise ArtifactError(f"{name}: failed the gate in {run.validation / 'validation.md'}; not packaged")
    return {"file": entry.file, "format": entry.format, "precision": entry.precision,
            "mode": row.mode, "size_bytes": entry.size_bytes, "sha256": entry.sha256,
            "accuracy": _accuracy(row), "delta_rel": (row.delta or {}).get("rel"),
            "latency_ms": (row.latency or {}).get("median_ms"),
            "threads": (row.runtime or {}).get("threads")}


def _fingerprint(run: RunDir) -> dict[str, Any] | None:
    """RUN/data_fingerprint.json (written by `facemark train`), None for a run trained elsewhere."""
    path = run.root / FINGERPRINT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def package_run(run_dir: Path, name: str, out: Path, artifacts: list[str] | None = None, licence: str = "",
                recipe: str = "", commands: list[str] | None = None) -> Path:
    """Copy a validated run's chosen artifacts into `out` with their manifest and card -> out."""
    from facemark.manifest import load_manifest, save_manifest, verify_artifact

    run = RunDir(run_dir)
    manifest = load_manifest(run.export)
    chosen = artifacts or default_artifacts(manifest)
    if not chosen:
        raise ArtifactError(f"{run.manifest}: no int8 TFLite or float ONNX artifact to package; export and "
                            f"quantize first (facemark export {run.root} --format onnx --format tflite)")
    report, rows = _validation_rows(run)
    cards = {}
    for artifact in chosen:
        verify_artifact(run.export, artifact, manifest)
        cards[artifact] = _artifact_card(artifact, manifest.artifacts[artifact], rows.get(artifact), run)
    out.mkdir(parents=True, exist_ok=True)
    for artifact in chosen:
        with atomic_path(out / manifest.artifacts[artifact].file) as tmp:
            shutil.copyfile(run.export / manifest.artifacts[artifact].file, tmp)
    contract = manifest.contract
    packaged = Manifest(dataclasses.replace(contract, checkpoint=CheckpointRef("best.pt", contract.checkpoint.sha256)),
                        {key: manifest.artifacts[key] for key in chosen})
    save_manifest(out, packaged)
    card = {"schema": CARD_SCHEMA, "name": name, "scheme": contract.scheme.name,
            "points": contract.scheme.num_points, "input_size": contract.size,
            "default": chosen[0], "licence": licence, "recipe": recipe, "commands": commands or [],
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "facemark": __version__,
            "data": _fingerprint(run),
            "test": {"split": report["data"]["split"], "faces": report["data"]["count"],
                     "detector": report["data"]["detector"], "infer": report.get("infer"),
                     "pytorch": _accuracy(rows["pytorch"])},
            "artifacts": cards}
    atomic_write_text(out / CARD_NAME, json.dumps(card, indent=1) + "\n")
    return out


def model_rows() -> list[dict[str, Any]]:
    """One row per artifact of every shipped model: what `facemark models` prints."""
    rows = []
    for name in pretrained.model_names():
        card = pretrained.read_card(pretrained.ROOT / name)
        for artifact, facts in card["artifacts"].items():
            rows.append({"model": name if artifact == card["default"] else f"{name}:{artifact}",
                         "points": card["points"], "format": f"{facts['format']} {facts['precision']}",
                         "mb": facts["size_bytes"] / 1e6, "nme_corner": facts["accuracy"]["nme_corner"],
                         "nme_pupil": facts["accuracy"]["nme_pupil"], "ms": facts["latency_ms"],
                         "faces": card["test"]["faces"], "licence": card["licence"]})
    return rows


def print_models() -> int:
    """`facemark models`: the shipped models, their test figures and licences."""
    rows = model_rows()
    print(f"{'model':<28} {'points':>6}  {'format':<12} {'MB':>5}  {'NME OC':>7} {'NME IP':>7} {'ms':>6}")
    for row in rows:
        print(f"{row['model']:<28} {row['points']:>6}  {row['format']:<12} {row['mb']:>5.2f}  "
              f"{row['nme_corner']:>7.4f} {row['nme_pupil']:>7.4f} {row['ms']:>6.2f}")
    print("NME on each model's test split (outer-corner OC, inter-pupil IP; faces: "
          + ", ".join(sorted({f"{row['model'].split(':')[0]} {row['faces']}" for row in rows})) + "); ms: one "
          "face, one thread, the model call alone (docs/models.md)")
    for licence in sorted({row["licence"] for row in rows}):
        names = sorted({row["model"].split(":")[0] for row in rows if row["licence"] == licence})
        print(f"licence of {', '.join(names)}: {licence}")
    print(f"use: Landmarker(\"NAME\"), facemark predict NAME PHOTOS --out DIR; files in {pretrained.ROOT}")
    return 0
