"""`facemark pipeline`: train -> export -> quantize [-> qat] -> validate, resumable, exit code from the gate.

It sits beside the CLI, above the stages: like the CLI it imports each stage inside the function
that runs it, so the core imports no stage at load time.

The resolved config is saved once as RUN/pipeline.yaml; a re-run with a different config is
refused rather than mixing two experiments in one folder. Each stage is skipped when its outputs
exist and are up to date (training finished, manifest made from the current best.pt with every
requested format present and intact), so a re-run after a crash resumes where it stopped:
training from RUN/last.pt, export and quantisation per missing artifact set, quantisation-aware
fine-tuning (quantize.qat) from RUN/qat/last.pt.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from facemark.artifacts import ARTIFACTS, qat_row
from facemark.backends import BACKENDS
from facemark.config import Config, resolve_choices, save_config
from facemark.errors import ArtifactError, ConfigError
from facemark.io import sha256_of
from facemark.manifest import exported_from, load_manifest, manifest_path, verify_artifact
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock

PIPELINE_CONFIG = "pipeline.yaml"


def run_pipeline(cfg: Config, config_path: Path | None, data_root: Path, run_dir: Path) -> int:
    """Run every stage that is not up to date; return the validate gate's exit code (0, 1).
    The run folder's lock is held throughout (the stages' own locks nest inside it)."""
    run_dir = Path(run_dir)
    check_plan(cfg, str(config_path or "config"))
    with hold_run_lock(run_dir, "pipeline"):
        return _run_stages(cfg, data_root, run_dir)


def _run_stages(cfg: Config, data_root: Path, run_dir: Path) -> int:
    _pin_config(cfg, run_dir)
    stages = [
        ("train", lambda: not _training_done(run_dir, cfg), lambda: _train(cfg, data_root, run_dir)),
        ("export", lambda: not _artifacts_current(run_dir, cfg.export.formats, quantized=False),
         lambda: _export(run_dir, data_root)),
        ("quantize", lambda: not _artifacts_current(run_dir, cfg.quantize.formats, quantized=True),
         lambda: _quantize(run_dir, data_root)),
        ("qat", lambda: cfg.quantize.qat and not qat_current(run_dir, cfg),
         lambda: _qat(run_dir, data_root)),
    ]
    for name, needed, action in stages:
        if not needed():
            print(f"[pipeline] {name}: " + ("up to date, skipped" if name != "qat" or cfg.quantize.qat
                                            else "off (quantize.qat), skipped"))
            continue
        print(f"[pipeline] {name}: running")
        started = time.perf_counter()
        action()
        print(f"[pipeline] {name}: done in {time.perf_counter() - started:.0f} s")
    from facemark.validate.run import validate_run

    print("[pipeline] validate: running")
    code = validate_run(run_dir, data_root=data_root, split="test", threads=None, max_nme_increase=None,
                        max_nme=None, baseline=None, limit=None)
    print(f"[pipeline] finished: run folder {run_dir}, artifacts in {run_dir / 'export'}, "
          f"report in {run_dir / 'validation'} (gate exit code {code})")
    return code


def check_plan(cfg: Config, origin: str) -> None:
    """Before anything trains: each int8 format of quantize.formats needs its float source
    artifact (its backend's int8_from, e.g. onnx_fp32 for tflite and onnx) among export.formats, and
    quantize.qat needs a format to write."""
    exported = resolve_choices(cfg.export.formats, [], list(BACKENDS), "export.formats")
    for fmt in resolve_choices(cfg.quantize.formats, [], list(BACKENDS), "quantize.formats"):
        needed = ARTIFACTS[BACKENDS[fmt].int8_from].format
        if needed not in exported:
            raise ConfigError(f"{origin}: 'quantize.formats' has {fmt}, made from the float {needed} export, but "
                              f"'export.formats' is {cfg.export.formats}; add {needed} to export.formats or "
                              f"drop {fmt} from quantize.formats")
    if cfg.quantize.qat and not set(cfg.quantize.qat_formats) & set(cfg.quantize.formats):
        raise ConfigError(f"{origin}: 'quantize.qat' is on but 'quantize.qat_formats' {cfg.quantize.qat_formats} and "
                          f"'quantize.formats' {cfg.quantize.formats} share no format; add one or set quantize.qat: false")


def _pin_config(cfg: Config, run_dir: Path) -> None:
    saved = run_dir / PIPELINE_CONFIG
    if saved.is_file():
        previous = yaml.safe_load(saved.read_text())
        if previous != cfg.to_dict():
            changed = sorted(f"{section}.{key}" for section, values in cfg.to_dict().items()
                             for key, value in values.items() if previous.get(section, {}).get(key) != value)
            raise ConfigError(f"{saved}: this run was made with another config (changed: {', '.join(changed)}); "
                              f"use a new --run folder or delete {run_dir}")
        return
    save_config(cfg, saved)


def _training_done(run_dir: Path, cfg: Config) -> bool:
    from facemark.train.checkpoint import training_done

    return training_done(run_dir, cfg.train.epochs)


def _train(cfg: Config, data_root: Path, run_dir: Path) -> None:
    from facemark.train.engine import train

    train(cfg, data_root=data_root, run_dir=run_dir, resume=RunDir(run_dir).last.is_file())


def _artifacts_current(run_dir: Path, formats: list[str], quantized: bool) -> bool:
    """True when the manifest was made from the current best.pt and holds every requested format
    (float or int8 artifacts) with an intact sha256."""
    export_dir = RunDir(run_dir).export
    if not manifest_path(export_dir).is_file():
        return False
    manifest = load_manifest(export_dir)
    if not exported_from(manifest, RunDir(run_dir).best):
        return False
    for fmt in formats:
        names = [name for name, entry in manifest.artifacts.items()
                 if entry.format == fmt and entry.is_int8 == quantized]
        if not names:
            return False
        try:
            for name in names:
                verify_artifact(export_dir, name, manifest)
        except ArtifactError:
            return False
    return True


def qat_current(run_dir: Path, cfg: Config) -> bool:
    """True when every QAT artifact quantize.formats calls for is in the manifest, intact, and was
    fine-tuned from the current best.pt."""
    from facemark.quantize.qat import qat_formats

    if not _artifacts_current(run_dir, [], quantized=True):
        return False
    export_dir = RunDir(run_dir).export
    manifest, made_from = load_manifest(export_dir), sha256_of(RunDir(run_dir).best)
    for fmt in qat_formats(cfg):
        entry = manifest.artifacts.get(qat_row(fmt).name)
        if entry is None or entry.details.get("qat", {}).get("made_from_sha256") != made_from:
            return False
        try:
            verify_artifact(export_dir, qat_row(fmt).name, manifest)
        except ArtifactError:
            return False
    return True


def _export(run_dir: Path, data_root: Path) -> None:
    from facemark.convert.export import export_run

    if export_run(run_dir, formats=None, data_root=data_root, bake=False, golden=False) != 0:
        raise ArtifactError(f"{run_dir / 'export'}: export failed for at least one format (see the table above)")


def _qat(run_dir: Path, data_root: Path) -> None:
    from facemark.quantize.qat import qat_run

    if qat_run(run_dir, data_root=data_root) != 0:
        raise ArtifactError(f"{run_dir / 'export'}: a QAT artifact failed (see the table above)")


def _quantize(run_dir: Path, data_root: Path) -> None:
    from facemark.quantize.run import quantize_run

    if quantize_run(run_dir, formats=None, data_root=data_root, calibration_count=None) != 0:
        raise ArtifactError(f"{run_dir / 'export'}: quantisation failed for at least one format (see above)")
