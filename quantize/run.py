"""`facemark quantize RUN`: int8 artifacts for each format, beside the float ones in RUN/export/.

Needs `facemark export` to have run (RUN/export/manifest.json); every float source is checked
against its manifest sha256 before it is quantised. Calibration: a seeded subset of the training
split (calibration.py); parity: held-out val crops against the float PyTorch model. Each format is
independent: a failure is a row in the summary table, and the exit code is 1 if any row failed.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
from pathlib import Path

from facemark.artifact_rows import RowResult, run_rows, summary_table
from facemark.backends import BACKENDS
from facemark.config import config_from_saved, override_section, resolve_choices
from facemark.convert.export import load_parity_crops
from facemark.errors import ArtifactError
from facemark.io import sweep_partials
from facemark.manifest import check_exported_from, check_normalisation, load_manifest, manifest_path
from facemark.model import checkpoint_source, load_checkpoint
from facemark.quantize.calibration import load_calibration
from facemark.quantize.common import QuantJob, load_torch_before_tensorflow
from facemark.quantize.selection import select_shipped
from facemark.quantize.sensitivity_report import write_explain
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.runtime.machine import is_x86

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
        cfg = config_from_saved(saved["config"], origin=str(folder.best))
        formats = override_section(cfg, overrides, "quantize", "quantize").quantize.formats
    have = load_manifest(folder.export).artifacts if folder.manifest.is_file() else {}
    missing: dict[str, list[str]] = {}
    for name in resolve_backends(formats, []):
        float_name = BACKENDS[name].int8_from
        entry = have.get(float_name)
        if entry is None or not (folder.export / entry.file).exists():
            missing.setdefault(float_name, []).append(name)
    for float_name, users in missing.items():
        print(f"facemark quantize: {' and '.join(users)} int8 start from {float_name}, which {folder.export} lacks: "
              f"exporting it first ({making_command(float_name, str(run))})")
        export_run(run, [artifact(float_name).format], data_root, bake=False, golden=False)


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


def finish_job(job: QuantJob, results: list[RowResult]) -> int:
    """Exit code of a quantising verb: 1 (work folder kept for its logs) if any row failed, else 0."""
    if any(r.failed for r in results):
        print(f"facemark quantize: {sum(r.failed for r in results)} artifact(s) failed; logs kept in {job.work_dir}")
        return 1
    shutil.rmtree(job.work_dir, ignore_errors=True)
    return 0


def resolve_backends(names: list[str] | None, default: list[str]) -> list[str]:
    """Requested formats ("all" = every one; None = quantize.formats) -> backend names in table order."""
    return resolve_choices(names, default, list(BACKENDS), "quantize.formats")


def _run_backend(name: str, job: QuantJob) -> list[RowResult]:
    """One format's int8 rows (its backend's quantizer), recorded in the manifest as they succeed."""
    module = BACKENDS[name].module("quantizer")
    return run_rows(job.export_dir, module.planned(job), lambda: module.quantize(job))
