"""The artifact contract on disk: `RUN/export/manifest.json`, one entry per exported or quantised file.

The document is `facemark.contract.Manifest` (its dataclasses give the fields, their types and the
JSON Schema in docs/manifest.schema.json): the run-level contract (scheme, input, output, crop,
infer, checkpoint) and `artifacts`, name -> ArtifactEntry. Files are relative to the export folder;
later stages refuse an artifact whose sha256 differs. input.mean/std are the model's own
(facemark.weights); every stage reads them from here or from the checkpoint. `infer` is the run
config's infer section at export (`facemark export --set infer.KEY=VALUE` changes it without
retraining); validate, predict and the Android app apply it, each command can override it with
`--set infer.KEY=VALUE`.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from facemark.config import Config, check_value
from facemark.contract import (MANIFEST_SCHEMA, ArtifactEntry, CheckpointRef, CropSpec, InferSpec, InputSpec,
                               Manifest, OutputSpec, RunContract, SchemeFacts)
from facemark.errors import ArtifactError, ConfigError
from facemark.io import atomic_write_text, file_inside, read_json_document, sha256_of
from facemark.runtime.refine import from_config
from facemark.weights import Normalisation
from facemark.rundir import MANIFEST_NAME

TOOLS = ("facemark", "torch", "timm", "onnx", "onnxruntime", "onnx2tf", "tensorflow-cpu",
         "ai-edge-litert", "coremltools", "numpy")


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def new_manifest(cfg: Config, scheme: SchemeFacts, checkpoint: Path, norm: Normalisation) -> Manifest:
    """The run-level part of the contract, shared by every artifact of the run; `norm` is the
    checkpoint's input normalisation (facemark.model.checkpoint_source)."""
    size = cfg.data.input_size
    return Manifest(RunContract(
        scheme=scheme,
        input=InputSpec(size, norm.mean, norm.std),
        output=OutputSpec("normalised crop", f"(P - {size / 2:g}) / {size / 2:g}", 2 * scheme.num_points),
        crop=CropSpec(cfg.data.margin, cfg.data.detector),
        checkpoint=CheckpointRef(str(checkpoint), sha256_of(checkpoint)),
        infer=InferSpec.from_json(from_config(cfg).manifest_record(), "infer")))


def manifest_path(export_dir: Path) -> Path:
    return Path(export_dir) / MANIFEST_NAME


def manifest_normalisation(contract: RunContract, origin: str) -> Normalisation:
    """The input normalisation a contract declares (ArtifactError if not 3 values each, std > 0)."""
    return Normalisation.from_dict({"mean": contract.input.mean, "std": contract.input.std}, f"{origin}: input")


def check_normalisation(contract: RunContract, expected: Normalisation, origin: str) -> Normalisation:
    """The contract's normalisation after checking it is the checkpoint's `expected` one."""
    declared = manifest_normalisation(contract, origin)
    if not declared.same_as(expected):
        raise ArtifactError(f"{origin}: input {declared} differs from the checkpoint's {expected}; "
                            f"re-run `facemark export`")
    return declared


def exported_from(manifest: Manifest, checkpoint: Path) -> bool:
    """Whether the manifest's artifacts were exported from `checkpoint` (its sha256 is the one recorded)."""
    return manifest.contract.checkpoint.sha256 == sha256_of(checkpoint)


def check_exported_from(manifest: Manifest, run: Path) -> Path:
    """RUN/best.pt after checking that the manifest was exported from it -> its path; ArtifactError
    naming the command that brings them together again otherwise (quantize, qat and validate)."""
    from facemark.rundir import RunDir

    best = RunDir(run).best
    if not best.is_file():
        raise ArtifactError(f"{best}: checkpoint not found (the run folder's artifacts need the checkpoint they "
                            f"were exported from)")
    if not exported_from(manifest, best):
        raise ArtifactError(f"{best}: sha256 differs from the export manifest's checkpoint (trained again after "
                            f"export?); run `facemark export {run}` again first")
    return best


def load_manifest(export_dir: Path) -> Manifest:
    """The manifest of `export_dir`, read field by field (facemark.contract), its values within their
    config rules, and every file an artifact entry names checked to stay inside the folder
    (io.file_inside): a hostile or hand-edited manifest fails here, before anything is read."""
    path = manifest_path(export_dir)
    document = read_json_document(path, MANIFEST_SCHEMA, "manifest",
                                  missing=f"manifest missing (run `facemark export {Path(export_dir).parent}` first)")
    manifest = Manifest.from_json(document, str(path))
    check_contract(manifest.contract, path)
    for name in manifest.artifacts:
        artifact_path(export_dir, name, manifest)
    return manifest


# manifest key -> the config key whose rule bounds it (the value export copied from the run's config)
CONTRACT_RULES = {"input.size": "data.input_size", "crop.margin": "data.margin"}


def check_contract(contract: RunContract, origin: Path) -> None:
    """The run-level contract's values within their config rules, and its scheme one facemark
    ships with its own point count: an edited `input.size: 100000` or `num_points: 106` on a
    68-point model fails here in one line, not as a 30 GB allocation or mislabelled points. The
    artifact's own tensor shapes are checked against it when it is loaded (runners.create_runner)."""
    from facemark.schemes import load_scheme

    for key, config_key in CONTRACT_RULES.items():
        section, _, name = key.partition(".")
        try:
            check_value(config_key, getattr(getattr(contract, section), name), str(origin))
        except ConfigError as exc:
            raise ArtifactError(str(exc).replace(f"{config_key!r}", f"{key} (bounded as {config_key})")) from None
    try:
        known = load_scheme(contract.scheme.name)
    except ConfigError as exc:
        raise ArtifactError(f"{origin}: scheme.name: {exc}") from None
    if contract.scheme.num_points != known.num_points or contract.output.values != 2 * known.num_points:
        raise ArtifactError(f"{origin}: scheme {known.name} has {known.num_points} points ({2 * known.num_points} "
                            f"output values), the manifest says scheme.num_points {contract.scheme.num_points!r} "
                            f"and output.values {contract.output.values!r}")


def artifact_path(export_dir: Path, name: str, manifest: Manifest) -> Path:
    """The file of artifact `name` as its manifest entry names it, inside `export_dir` (io.file_inside)."""
    return file_inside(export_dir, manifest.artifacts[name].file, manifest_path(export_dir),
                       f"artifacts.{name}.file")


def save_manifest(export_dir: Path, manifest: Manifest) -> None:
    atomic_write_text(manifest_path(export_dir), json.dumps(manifest.to_json(), indent=2) + "\n")


def artifact_entry(export_dir: Path, file: Path, **facts: Any) -> ArtifactEntry:
    """Describe a written artifact: its sha256, size, tool versions and date, plus the converter's
    `facts` (ArtifactEntry's fields; format-specific ones land in its details)."""
    path = Path(export_dir) / file
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    return ArtifactEntry.from_json(
        {"file": str(file), "sha256": sha256_of(path), "size_bytes": size, "tools": tool_versions(),
         "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **facts}, f"artifact {file}")


def record_artifact(export_dir: Path, name: str, entry: ArtifactEntry) -> None:
    """Add or replace one artifact entry in the manifest (atomic rewrite)."""
    manifest = load_manifest(export_dir)
    manifest.artifacts[name] = entry
    save_manifest(export_dir, manifest)


def drop_artifact(export_dir: Path, name: str) -> None:
    """Remove artifact `name` (entry, then file) when the manifest lists it: a re-run that no longer
    writes it must not leave an old one to be validated beside the new rows."""
    manifest = load_manifest(export_dir)
    if name not in manifest.artifacts:
        return
    path = artifact_path(export_dir, name, manifest)
    del manifest.artifacts[name]
    save_manifest(export_dir, manifest)
    if path.is_file():
        path.unlink()


def verify_artifact(export_dir: Path, name: str, manifest: Manifest | None = None) -> Path:
    """Path of artifact `name` after checking it exists and its sha256 matches the manifest."""
    from facemark.artifacts import making_command

    manifest = manifest or load_manifest(export_dir)
    entry = manifest.artifacts.get(name)
    make = making_command(name, str(Path(export_dir).parent))
    if entry is None:
        raise ArtifactError(f"{manifest_path(export_dir)}: no artifact named {name!r} (known: "
                            f"{', '.join(sorted(manifest.artifacts)) or 'none'}); make it with: {make}")
    path = artifact_path(export_dir, name, manifest)
    if not path.exists():
        raise ArtifactError(f"{path}: artifact listed in the manifest is missing; make it again with: {make}")
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise ArtifactError(f"{path}: sha256 {actual[:12]}... does not match the manifest's "
                            f"{entry.sha256[:12]}... (modified or replaced after export)")
    return path
