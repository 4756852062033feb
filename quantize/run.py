"""`facemark quantize RUN`: int8 artifacts for each format, beside the float ones in RUN/export/.

Needs `facemark export` to have run (RUN/export/manifest.json); every float source is checked
against its manifest sha256 before it is quantised. Calibration: a seeded subset of the training
split (calibration.py); parity: held-out val crops against the float PyTorch model. Each format is
independent: a failure is a row in the summary table, and the exit code is 1 if any row failed.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from facemark.config import config_from_saved, override_section, resolve_choices
from facemark.convert.export import load_parity_crops
from facemark.errors import ArtifactError
from facemark.io import sweep_partials
from facemark.manifest import (artifact_entry, check_exported_from, check_normalisation, load_manifest, manifest_path,
                               record_artifact)
from facemark.model import checkpoint_source, load_checkpoint
from facemark.quantize.calibration import load_calibration
from facemark.quantize.common import QuantJob, QuantResult, load_torch_before_tensorflow
from facemark.quantize.selection import select_shipped
from facemark.quantize.sensitivity_report import write_explain
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.runtime.machine import is_x86
from facemark.status import Status

BACKENDS = {"tflite": "facemark.quantize.tflite_int8", "onnx": "facemark.quantize.onnx_int8",
            "coreml": "facemark.quantize.coreml_int8"}
SENSITIVITY_DIR = "sensitivity"   # under RUN/export: the --explain report


def quantize_run(run: Path, formats: list[str] | None, data_root: Path | None,
                 calibration_count: int | None, explain: bool = False, overrides: list[str] | None = None) -> int:
    """Quantise the exported run `run` -> exit code (0: every artifact written; 1: some failed).
    `explain`: rank the layers even with quantize.mixed off; the per-layer sensitivity report
    (RUN/export/sensitivity/) is written whenever they were ranked. `overrides`: quantize.KEY=VALUE
    changes to the run's config.
    Holds RUN's lock (one writer per run folder)."""
    load_torch_before_tensorflow()
    run = Path(run)
    with hold_run_lock(run, "quantize"):
        return _quantize(run, formats, data_root, calibration_count, explain, overrides or [])


def _quantize(run: Path, formats: list[str] | None, data_root: Path | None, calibration_count: int | None,
              explain: bool, overrides: list[str]) -> int:
    export_missing_sources(run, formats, data_root, overrides)
    job = build_job(run, data_root, calibration_count, explain, overrides=overrides)
    results = []
    try:
        names = resolve_backends(formats, job.cfg.quantize.formats)
        if "onnx" in names:
            activation = job.cfg.quantize.onnx_activation
            print(f"facemark quantize: onnx activations {activation}" + (
                " (u8s8, the default: 2-3x faster than s8s8 on x86 onnxruntime)" if activation == "uint8" else " (s8s8)"))
        for name in names:
            results += _run_backend(name, job)
        select_shipped(job, "quantize")
    except BaseException:   # Ctrl-C, SIGTERM, a refused --format: the finished artifacts are in the manifest
        shutil.rmtree(job.work_dir, ignore_errors=True)
        raise
    print(summary_table(results))
    if job.sensitivity:   # ranked for --explain, or for the recovery search (quantize.mixed)
        paths = write_explain(job.export_dir / SENSITIVITY_DIR, job.sensitivity)
        print(f"facemark quantize: per-layer sensitivity in {', '.join(str(p) for p in paths)}")
    return finish_job(job, results)


def export_missing_sources(run: Path, formats: list[str] | None, data_root: Path | None,
                           overrides: list[str]) -> None:
    """Each format's int8 rows start from a float artifact (its backend's SOURCE: onnx_fp32 for onnx
    and tflite, coreml_fp32 for coreml). Export those RUN/export lacks first, one line each, so
    `facemark export RUN --format tflite` then `facemark quantize RUN --format tflite` works: the
    export is recorded in the manifest like any other (a failed one leaves the backend's error,
    which names the command)."""
    from facemark.artifacts import artifact, making_command
    from facemark.convert.export import export_run
    from facemark.train.checkpoint import load_checkpoint_file

    folder = RunDir(run)
    if not folder.best.is_file() and not folder.manifest.is_file():
        raise ArtifactError(f"{run}: nothing to quantize: no best.pt (train it: facemark train --config CONFIG "
                            f"--data ROOT --run {run}) and no export (facemark export {run})")
    if formats is None:
        saved = load_checkpoint_file(folder.best)
        cfg = config_from_saved(saved["config"], source=str(folder.best))
        formats = override_section(cfg, overrides, "quantize", "quantize").quantize.formats
    have = load_manifest(folder.export).artifacts if folder.manifest.is_file() else {}
    missing: dict[str, list[str]] = {}
    for name in resolve_backends(formats, []):
        source = importlib.import_module(BACKENDS[name]).SOURCE
        entry = have.get(source)
        if entry is None or not (folder.export / entry.file).exists():
            missing.setdefault(source, []).append(name)
    for source, users in missing.items():
        print(f"facemark quantize: {' and '.join(users)} int8 start from {source}, which {folder.export} lacks: "
              f"exporting it first ({making_command(source, str(run))})")
        export_run(run, [artifact(source).format], data_root, bake=False, golden=False)


def build_job(run: Path, data_root: Path | None, calibration_count: int | None, explain: bool = False,
              verb: str = "quantize", overrides: list[str] | None = None) -> QuantJob:
    """The exported run's QuantJob: its verified checkpoint and model (its config with the
    quantize.* `overrides`), calibration crops (a seeded subset of the training split), parity
    crops (val, else test) and a fresh work folder in RUN."""
    export_dir = RunDir(run).export
    manifest = load_manifest(export_dir)  # ArtifactError naming `facemark export` if missing
    sweep_partials(run)
    checkpoint = check_exported_from(manifest, run)
    model, cfg, ckpt = load_checkpoint(checkpoint)
    cfg = override_section(cfg, overrides or [], "quantize", verb)
    norm = check_normalisation(manifest.contract, checkpoint_source(ckpt, str(checkpoint)).norm,
                               str(manifest_path(export_dir)))
    root = RunDir(run).data_root(data_root, ckpt)
    count = calibration_count if calibration_count is not None else cfg.quantize.calibration_count
    if is_x86():
        print(f"facemark {verb}: note: int8 speed on x86 does not predict ARM phones (quantising on "
              f"{platform.machine()})")
    calibration = load_calibration(root, cfg.data, count, cfg.quantize.calibration_seed, norm)
    parity = load_parity_crops(root, cfg)
    # named .partial so that a killed run's work folder is swept like any other temporary; made
    # before the line that says the verb is under way, so an interruption after it finds it
    work_dir = Path(tempfile.mkdtemp(prefix=f".{verb}-work-", suffix=".partial", dir=run))
    try:
        print(f"facemark {verb}: calibrating on {len(calibration.crops)} {calibration.crops.split} faces "
              f"(seed {calibration.seed}, median inter-pupil {calibration.median_ipd_px:.1f} crop px); "
              f"parity on {len(parity)} {parity.split} faces")
        return QuantJob(model=model, cfg=cfg, export_dir=export_dir, work_dir=work_dir, manifest=manifest,
                        calibration=calibration, parity=parity, data_root=root, explain=explain)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise


def finish_job(job: QuantJob, results: list[QuantResult]) -> int:
    """Exit code of a quantising verb: 1 (work folder kept for its logs) if any row failed, else 0."""
    if any(r.failed for r in results):
        print(f"facemark quantize: {sum(r.failed for r in results)} artifact(s) failed; logs kept in {job.work_dir}")
        return 1
    shutil.rmtree(job.work_dir, ignore_errors=True)
    return 0


def resolve_backends(names: list[str] | None, default: list[str]) -> list[str]:
    """Requested formats ("all" = every one; None = quantize.formats) -> backend names in table order."""
    return resolve_choices(names, default, list(BACKENDS), "quantize.formats")


def _run_backend(name: str, job: QuantJob) -> list[QuantResult]:
    """One format's rows, recorded in the manifest as they succeed; an error outside the per-artifact
    guards fails every artifact the format planned."""
    module = importlib.import_module(BACKENDS[name])
    try:
        results = module.quantize(job)
    except Exception as exc:
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
        results = [QuantResult(row.name, row.mode, Status.FAILED, error=message) for row in module.planned(job)]
    record_results(job, results)
    return results


def record_results(job: QuantJob, results: list[QuantResult]) -> None:
    """Record each written row in the manifest (with its seconds)."""
    for result in results:
        if not result.failed:
            result.facts["seconds"] = round(result.seconds, 1)
            entry = artifact_entry(job.export_dir, Path(result.file), **result.facts)
            record_artifact(job.export_dir, result.name, entry)
            result.facts = entry.to_json()   # what the summary prints: the recorded facts


def summary_table(results: list[QuantResult]) -> str:
    """Artifact, mode, status, size, parity vs PyTorch (mean / max point distance in crop px and
    as a fraction of the inter-pupil distance), seconds; errors listed under the table."""
    header = ("artifact", "mode", "status", "size", "parity vs pytorch (val)", "seconds")
    rows = [header]
    for r in results:
        size = f"{r.facts['size_bytes'] / 1e6:.2f} MB" if "size_bytes" in r.facts else "-"
        rows.append((r.name, r.mode, r.status, size, _parity_text(r.facts), f"{r.seconds:.1f}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"  {r.name}: {r.error}" for r in results if r.failed]
    return "\n".join(lines)


def _parity_text(facts: dict[str, Any]) -> str:
    figures, note = facts.get("parity"), ""
    if figures is None and "simulated_parity" in facts:
        figures, note = facts["simulated_parity"], " (fake-quant sim)"
    if figures is None:
        return "not run"
    return f"{figures['mean_px']:.3f}/{figures['max_px']:.3f} px, {figures['nme_ipd']:.2%} IPD{note}"
