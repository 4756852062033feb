"""`facemark export RUN`: RUN/best.pt -> RUN/export/{model_*.onnx,.tflite,.mlpackage, manifest.json}.

Formats are validated up front (facemark.backends); each runs through its converter's `convert`
under the one row driver (facemark.artifact_rows: a timer and an exception guard per artifact and
per format, so one failing toolchain does not stop the others). Every artifact is checked against
PyTorch on real crops (the run's val split, else test) before it takes its final name, and is then
recorded in the manifest with its sha256. The summary table (the one quantize and qat print) says
what was written and what failed, with parity in crop pixels and % of the inter-pupil distance;
the exit code is 1 if anything failed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from facemark.artifact_rows import RowResult, run_rows, summary_table
from facemark.backends import Backend
from facemark.config import Config
from facemark.contract import RunContract
from facemark.convert.formats import ExportJob, float_artifact, resolve_formats
from facemark.errors import ArtifactError, DataError
from facemark.io import sweep_partials
from facemark.manifest import exported_from, load_manifest, manifest_path, new_manifest, save_manifest
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.schemes import load_scheme

PARITY_SPLITS = ("val", "test")


def export_run(run: Path, formats: list[str] | None, data_root: Path | None, bake: bool, golden: bool,
               overrides: list[str] | None = None) -> int:
    """Export RUN/best.pt to the requested formats; return 0 if all were written, else 1.
    `overrides` (`--set infer.KEY=VALUE`) change the test-time refinement the manifest records.
    Holds RUN's lock (one writer per run folder)."""
    run = Path(run)
    with hold_run_lock(run, "export"):
        return _export(run, formats, data_root, bake, golden, overrides or [])


def _export(run: Path, formats: list[str] | None, data_root: Path | None, bake: bool, golden: bool,
            overrides: list[str]) -> int:
    from facemark.config import override_section
    from facemark.model import load_checkpoint

    folder = RunDir(run)
    checkpoint, export_dir = folder.best, folder.export
    model, cfg, ckpt = load_checkpoint(checkpoint)
    cfg = override_section(cfg, overrides, "infer", "export")
    sweep_partials(export_dir)
    chosen = resolve_formats(formats, cfg.export.formats)
    bake = bake or cfg.export.bake_preprocessing
    crop_set = load_parity_crops(folder.data_root(data_root, ckpt), cfg)
    contract = prepare_manifest(export_dir, cfg, checkpoint, ckpt)
    results = []
    with tempfile.TemporaryDirectory(prefix="facemark-export-") as work:
        ipd_px = load_scheme(contract.scheme.name).interpupil(crop_set.crop_points)
        job = ExportJob(model=model, cfg=cfg, export_dir=export_dir, work_dir=Path(work), crops=crop_set.crops,
                        ipd_px=ipd_px, crop_split=crop_set.split, bake=bake, contract=contract)
        for backend in chosen:
            results += run_format(backend, job)
    print(f"\nexport -> {export_dir}\n{summary_table(results)}")
    if golden:
        from facemark.convert.golden import write_golden  # lazily: written by the Android stage

        write_golden(run, export_dir, crop_set, model, cfg, job.norm)
    return 1 if any(r.failed for r in results) else 0


def load_parity_crops(root: Path, cfg: Config):
    """cfg.export.parity_images real crops of the first split of PARITY_SPLITS that exists in the
    dataset `root` (never the training split, which calibrates int8): export's and quantize's parity.

    A missing split is a DataError: no artifact is declared written without real-face parity.
    """
    from facemark.data.crops import load_crop_set

    for split in PARITY_SPLITS:
        if (root / split / "images").is_dir():
            return load_crop_set(root, split, cfg.data, limit=cfg.export.parity_images,
                                  workers=max(1, cfg.data.workers))
    raise DataError(f"{root}: no {' or '.join(PARITY_SPLITS)} split with images/ for the parity check "
                    f"(pass --data ROOT of the dataset this run was trained on)")


def prepare_manifest(export_dir: Path, cfg: Config, checkpoint: Path, ckpt: dict[str, Any]) -> RunContract:
    """Create RUN/export/manifest.json or reuse it; return the run-level contract.

    An existing manifest for another scheme or input size is refused (ArtifactError): its
    artifacts would be silently mixed with incompatible ones. One for an older checkpoint of the
    same scheme is replaced, dropping its (now stale) artifact entries.
    """
    from facemark.model import checkpoint_source

    scheme = load_scheme(ckpt["scheme"])
    fresh = new_manifest(cfg, scheme.facts(), checkpoint, checkpoint_source(ckpt, str(checkpoint)).norm)
    if manifest_path(export_dir).is_file():
        old = load_manifest(export_dir)
        for label, before, now in (("scheme", old.contract.scheme.name, fresh.contract.scheme.name),
                                   ("input size", old.contract.size, fresh.contract.size)):
            if before != now:
                raise ArtifactError(f"{manifest_path(export_dir)}: made for {label} {before!r}, but {checkpoint} "
                                    f"has {label} {now!r}; export into another run folder or delete "
                                    f"{export_dir}")
        if exported_from(old, checkpoint):
            fresh.artifacts = old.artifacts
        elif old.artifacts:
            print(f"{checkpoint} changed since the last export: dropping {len(old.artifacts)} stale "
                  f"manifest entries")
    save_manifest(export_dir, fresh)
    return fresh.contract


def run_format(backend: Backend, job: ExportJob) -> list[RowResult]:
    """One format's float artifacts (its converter's `convert`), recorded as they pass parity."""
    planned = [float_artifact(backend.name, precision, baked)
               for baked in job.variants for precision in backend.float_precisions]
    return run_rows(job.export_dir, planned, lambda: backend.module("converter").convert(job),
                    missing_hint=f"install the '{backend.extra}' extra")
