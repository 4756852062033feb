"""`facemark export RUN`: RUN/best.pt -> RUN/export/{model_*.onnx,.tflite,.mlpackage, manifest.json}.

Formats are validated up front (formats.FORMATS); each runs through its module's `convert`
under a timer and an exception guard, so one failing toolchain does not stop the others. Every
artifact is checked against PyTorch on real crops (the run's val split, else test) before it
takes its final name, and is then recorded in the manifest with its sha256. A summary table
says what was written and what failed; the exit code is 1 if anything failed.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facemark.config import Config
from facemark.contract import RunContract
from facemark.convert.formats import ExportJob, Format, Written, resolve_formats
from facemark.errors import ArtifactError, DataError
from facemark.io import sweep_partials
from facemark.manifest import (artifact_entry, exported_from, load_manifest, manifest_path, new_manifest,
                               record_artifact, save_manifest)
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.status import Status

PARITY_SPLITS = ("val", "test")


@dataclass
class Outcome:
    """One summary row: an artifact written (name, file, entry) or a format that failed (error)."""

    fmt: str
    name: str
    file: str
    status: str
    size_bytes: int | None
    max_abs: float | None
    seconds: float
    error: str | None = None


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
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="facemark-export-") as work:
        job = ExportJob(model=model, cfg=cfg, export_dir=export_dir, work_dir=Path(work), crops=crop_set.crops,
                        crop_split=crop_set.split, bake=bake, contract=contract)
        for fmt in chosen:
            outcomes += run_format(fmt, job)
    print_summary(outcomes, export_dir)
    if golden:
        from facemark.convert.golden import write_golden  # lazily: written by the Android stage

        write_golden(run, export_dir, crop_set, model, cfg, job.norm)
    return 1 if any(o.error for o in outcomes) else 0


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
    from facemark.schemes import load_scheme

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


def run_format(fmt: Format, job: ExportJob) -> list[Outcome]:
    """Run one format's converter under a timer; record what it wrote; never raise."""
    start = time.perf_counter()
    try:
        module = importlib.import_module(fmt.module)
        written: list[Written] = module.convert(job)
    except Exception as exc:  # a broken toolchain must not stop the other formats
        message = (str(exc).strip().splitlines() or [""])[0][:200]
        missing = isinstance(exc, ImportError)
        error = (f"{type(exc).__name__}: {message}" + (f" (install the '{fmt.extra}' extra)" if missing else ""))
        return [Outcome(fmt.name, fmt.name, "-", Status.FAILED, None, None, time.perf_counter() - start, error)]
    seconds = (time.perf_counter() - start) / max(len(written), 1)
    outcomes = []
    for item in written:
        entry = artifact_entry(job.export_dir, Path(item.file), **item.facts, seconds=round(seconds, 2))
        record_artifact(job.export_dir, item.name, entry)
        outcomes.append(Outcome(fmt.name, item.name, item.file, entry.status, entry.size_bytes,
                                (entry.parity or {}).get("max_abs"), seconds))
    return outcomes


def print_summary(outcomes: list[Outcome], export_dir: Path) -> None:
    """One row per artifact (or failed format): format, file, status, size, parity, seconds."""
    header = f"{'artifact':<20} {'file':<28} {'status':<30} {'size':>9} {'max err':>9} {'sec':>7}"
    print(f"\nexport -> {export_dir}\n{header}\n{'-' * len(header)}")
    for o in outcomes:
        size = f"{o.size_bytes / 1e6:.2f}MB" if o.size_bytes is not None else "-"
        err = f"{o.max_abs:.2e}" if o.max_abs is not None else "-"
        print(f"{o.name:<20} {o.file:<28} {o.status:<30} {size:>9} {err:>9} {o.seconds:>7.1f}")
        if o.error:
            print(f"{'':<20} error: {o.error}")
    failed = sorted({o.fmt for o in outcomes if o.error})
    print(f"{len([o for o in outcomes if not o.error])} artifacts written"
          + (f"; FAILED: {', '.join(failed)}" if failed else "") + "  (max err: normalised crop units vs PyTorch)")
