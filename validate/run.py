"""`facemark validate RUN`: every exported artifact against the PyTorch checkpoint, then the gate.

Steps: load RUN/best.pt and RUN/export/manifest.json (refused if the artifacts were exported
from another checkpoint); decode and crop the test split ONCE (cached detector boxes of the run's
config); PyTorch baseline batched in-process; then each artifact, in manifest order, verified
(sha256) and run in child processes (facemark.runtime.harness) on the same crops memory-mapped
from one .npy file (the evaluation crops, then the stability perturbations, validate/stability.py):
the accuracy passes several at once (one thread each, as many as there are cores), then the
latency runs one at a time; accuracy, parity, stability and latency per row; the gate; the report
and landmarks.npz in RUN/validation/.

Test-time refinement (the manifest's `infer` section, `--set infer.KEY=VALUE` overrides;
facemark.runtime.refine): every row, PyTorch included, runs the same settings and says so
(row "infer"). The single pass stays in "accuracy", "parity", "latency" and "stability"; the
refined figures go beside it in "refined" (accuracy, delta, parity, latency: the model time of all
the refinement's batch-1 calls, each timed). The mirrored crops join the shared .npy (one child
process per artifact still does the first pass with flip); each later pass of an artifact is one
more child process on the crops cut from its previous pass's landmarks. Stability stays a
single-pass figure: its noise draws are added to the first crop, which a later pass does not reuse.

Exit codes: 0 gate passed, 1 gate failed (an artifact over a bound, refused as tampered, or
crashed), 2 usage/input errors (raised as FacemarkError; the CLI prints them).
Settings come from the checkpoint's config (its `validate` and `data` sections).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facemark import __version__
from facemark.backends import BACKENDS
from facemark.config import check_value
from facemark.contract import ArtifactEntry, Manifest
from facemark.data.crops import SplitImages
from facemark.errors import ArtifactError
from facemark.io import atomic_path, sweep_partials
from facemark.manifest import (artifact_path, check_exported_from, check_normalisation, load_manifest, manifest_path,
                               verify_artifact)
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.validate import latency as lat
from facemark.validate import stability as stab
from facemark.validate.context import Context
from facemark.validate.gate import apply_gate, load_baseline
from facemark.validate.report import SCHEMA, print_report, write_report
from facemark.validation_row import ValidationRow
from facemark.validate.stability import Perturbations
from facemark.runtime.runner import Feed
from facemark.runtime.runners import TorchRunner
from facemark.runtime.harness import WorkerFailed
from facemark.runtime.machine import machine_settings, x86_banner
from facemark.runtime.refine import from_manifest
from facemark.weights import Normalisation
from facemark.status import Status



def _base_row(name: str, entry: ArtifactEntry, size_bytes: int | None) -> ValidationRow:
    """The row of a manifest entry before anything is checked or measured."""
    return ValidationRow(name=name, format=entry.format, file=entry.file, precision=entry.precision,
                         quantization=entry.quantization, mode=entry.mode or entry.precision, layout=entry.layout,
                         input_dtype=entry.input_dtype, baked_preprocessing=entry.baked_preprocessing,
                         size_bytes=size_bytes, superseded_by=entry.superseded_by,
                         int8_macs=entry.details.get("int8_macs"),
                         float_layers=len(entry.details.get("float_layers", [])))


def sensitivity_summary(export_dir: Path, top: int = 5) -> dict[str, Any] | None:
    """The `top` worst layers per format of `facemark quantize --explain` (RUN/export/sensitivity/),
    or None when it was not run."""
    path = export_dir / "sensitivity" / "sensitivity.json"
    if not path.is_file():
        return None
    formats = json.loads(path.read_text()).get("formats", {})
    return {"file": str(path), "formats": {fmt: {"artifact": rep["artifact"], "worst": rep["layers"][:top]}
                                           for fmt, rep in formats.items()}}


def _size_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _check_artifact(name: str, entry: ArtifactEntry, export_dir: Path, manifest: Manifest
                    ) -> tuple[ValidationRow, Path | None]:
    """Row of one manifest artifact and its path when it is to be run (None: the row is final)."""
    if entry.status == Status.FAILED:
        row = _base_row(name, entry, entry.size_bytes)
        row.status = Status.NOT_EXPORTED.because(entry.status)
        return row, None
    path = artifact_path(export_dir, name, manifest)
    row = _base_row(name, entry, _size_on_disk(path) if path.exists() else entry.size_bytes)
    if not path.exists():
        row.sha256, row.status = "missing", Status.REFUSED.because("file missing")
        row.error = f"{path}: listed in the manifest, not on disk"
        return row, None
    try:
        verify_artifact(export_dir, name, manifest)
    except ArtifactError as exc:
        row.sha256, row.status, row.error = "mismatch", Status.REFUSED.because("sha256 mismatch"), str(exc)
        return row, None
    row.sha256 = "ok"
    if not BACKENDS[row.format].runs_here():
        row.status = Status.NOT_RUN.because(BACKENDS[row.format].where_it_runs())
        return row, None
    return row, path


def _run_artifacts(runnable: list[tuple[ValidationRow, Path, Feed]], ctx: Context
                   ) -> dict[str, np.ndarray]:
    """Accuracy of every (row, path, feed) in parallel child processes, then latency one at a
    time; fills each row (or its failure status) -> {row name: (N,) per-face NME}."""
    def accuracy_job(item):
        row, path, feed = item
        print(f"validating {row.name} ...", file=sys.stderr, flush=True)
        try:
            predictions = ctx.run("accuracy", row, path, feed)["predictions"]
            return predictions, ctx.refine(predictions, ctx.artifact_predict(row, path, feed))
        except WorkerFailed as exc:
            row.status = exc.status
        except ArtifactError as exc:   # NaN/inf landmarks leave a later refinement pass no box to crop
            row.status, row.error = Status.FAILED.because("invalid predictions"), str(exc)
        return None

    with ThreadPoolExecutor(max_workers=max(1, ctx.eval_workers)) as pool:   # threads only wait on children
        outcomes = list(pool.map(accuracy_job, runnable))
    per_face = {}
    for (row, path, feed), outcome in zip(runnable, outcomes):
        if outcome is None:
            continue
        try:
            result = ctx.run("latency", row, path, feed)
            per_face[row.name] = ctx.measure(row, *outcome, result["latency_ms"], result["settings"])
        except WorkerFailed as exc:
            row.status = exc.status
        except ArtifactError as exc:   # e.g. NaN/inf predictions refused by facemark.metrics
            row.status, row.error = Status.FAILED.because("invalid predictions"), str(exc)
    return per_face


def _torch_row(model, ckpt_path: Path, ctx: Context, predict) -> tuple[ValidationRow, np.ndarray]:
    """The PyTorch row; `predict` is the reference's (_reference_predictor). Sets ctx.refined_reference."""
    runner = TorchRunner(model, ctx.size, ctx.norm, ctx.threads)
    # the checkpoint described as the artifacts are, so that its row has the same columns
    entry = ArtifactEntry(file=str(ckpt_path), format="pytorch", precision="float32", layout="NCHW", sha256="n/a",
                          size_bytes=ckpt_path.stat().st_size, status=Status.OK)
    row = _base_row("pytorch", entry, entry.size_bytes)
    sequence = np.load(ctx.crops_path, mmap_mode="r")[ctx.sequence]
    times = runner.latency_calls(np.asarray(sequence), ctx.warmup, ctx.runs)
    mirrored = [predict(ctx.refinement.mirror(ctx.crop_set.crops))] if ctx.refinement.flip else []
    perturbed = [] if ctx.perturbations is None else [runner.predict(ctx.perturbations.crops)]
    predictions = np.concatenate([ctx.reference, *mirrored, *perturbed])
    ctx.refined_reference = ctx.refine(predictions, predict)
    per_face = ctx.measure(row, predictions, ctx.refined_reference, times, runner.settings())
    row.parity = None   # it is the reference
    if row.refined is not None:
        row.refined["parity"] = None
    return row, per_face


def _reference_predictor(model, size: int):
    """PyTorch's predict for the reference: (M, S, S, 3) crops -> (M, P, 2) float64 normalised,
    through the runtime layer's TorchRunner, as eval runs it.

    A channels_last copy at batch validate.batch: MobileNetV3-L at 224 px took 33 ms of CPU per
    crop at batch 64 (NCHW) and 11 ms at batch 16 (channels_last) on the 2-core AMD EPYC dev box,
    because big batches of depthwise activations fall out of cache; outputs differ by < 1e-7.
    The model itself stays as loaded for the latency row.
    """
    import torch

    from facemark.runtime import TorchRunner

    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    runner = TorchRunner(fast, size)   # at validate.batch
    return lambda crops: runner.predict(crops).astype(np.float64)


def _check_inputs(run: Path, threads: int | None, max_nme_increase: float | None, max_nme: float | None) -> None:
    """The run folder exists; command-line values obey the rules of the config keys they replace."""
    if not Path(run).is_dir():
        raise ArtifactError(f"{run}: run folder not found")
    for flag, dotted, value in (("--threads", "validate.threads", threads),
                                ("--max-nme-increase", "validate.max_nme_increase", max_nme_increase),
                                ("--max-nme", "validate.max_nme", max_nme)):
        if value is not None:
            check_value(dotted, value, origin=f"{flag} {value}")


def _check_manifest(manifest: Manifest, export_dir: Path, ckpt_path: Path, cfg, norm: Normalisation) -> None:
    """The manifest describes this checkpoint: same file (sha256), crop size, scheme and normalisation."""
    where, size, contract = str(manifest_path(export_dir)), cfg.data.input_size, manifest.contract
    if not manifest.artifacts:
        raise ArtifactError(f"{where}: no artifacts listed (run `facemark export` / `facemark quantize`)")
    check_exported_from(manifest, ckpt_path.parent)
    if contract.size != size:
        raise ArtifactError(f"{where}: input size {contract.size} differs from the checkpoint's {size}")
    if contract.scheme.name != cfg.data.scheme:
        raise ArtifactError(f"{where}: scheme {contract.scheme.name} differs from the checkpoint's "
                            f"{cfg.data.scheme}; re-run `facemark export`")
    check_normalisation(contract, norm, where)


def write_landmarks(out_dir: Path, stems: list[str], landmarks: dict[str, np.ndarray]) -> Path:
    """OUT/landmarks.npz: "stems" (N,) and, per evaluated row name, (N, P, 2) float32 landmarks in
    image pixels of the single pass, and "<name>_refined" with test-time refinement: the figures
    `facemark predict` reproduces for the same artifact, boxes and infer settings."""
    path = out_dir / "landmarks.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, stems=np.asarray(stems), **landmarks)
    return path


def _perturbations(root: Path, crop_set, cfg) -> Perturbations | None:
    """Stability perturbations of the first validate.stability_faces faces (None when 0); their
    photos are decoded again, since a shifted box needs pixels outside the evaluation crop."""
    vcfg = cfg.validate
    faces = min(vcfg.stability_faces, len(crop_set))
    if faces == 0:
        return None
    photos = SplitImages(root, crop_set, cfg.data.max_image_pixels)
    images = [photos[i] for i in range(faces)]
    return stab.perturb(images, crop_set.crops[:faces], crop_set.matrices[:faces], cfg.data.input_size,
                        cfg.data.margin, vcfg.stability_draws, vcfg.stability_shift, vcfg.stability_noise)


def _data_section(root: Path, crop_set, fingerprint: dict[str, Any]) -> dict[str, Any]:
    stems_sha = hashlib.sha256("\n".join(crop_set.stems).encode()).hexdigest()
    return {"root": str(root), "split": crop_set.split, "count": len(crop_set), "detector": crop_set.detector,
            "stems_sha256": stems_sha, "fingerprint": fingerprint, "misses": crop_set.misses,
            "skipped": crop_set.skipped}


def _resolve(run: Path, data_root: Path | None, threads: int | None, max_nme_increase: float | None,
             max_nme: float | None, cfg, ckpt: dict[str, Any]) -> tuple[Path, int, float | None, float | None]:
    """CLI values over the checkpoint config's validate section -> (data root, threads, bounds)."""
    root = RunDir(run).data_root(data_root, ckpt)
    vcfg = cfg.validate
    return (root, threads or vcfg.threads, vcfg.max_nme_increase if max_nme_increase is None else max_nme_increase,
            vcfg.max_nme if max_nme is None else max_nme)


def _evaluate_all(model, ckpt_path: Path, export_dir: Path, manifest: Manifest, ctx: Context, predict
                  ) -> tuple[list[ValidationRow], dict[str, np.ndarray]]:
    """The PyTorch row, then one row per manifest artifact -> (rows, {row name: (N,) NME})."""
    started = time.perf_counter()
    row, nmes = _torch_row(model, ckpt_path, ctx, predict)
    row.seconds = time.perf_counter() - started   # latency only: its predictions are the reference
    rows, per_face, runnable = [row], {"pytorch": nmes}, []
    for name, entry in manifest.artifacts.items():
        row, path = _check_artifact(name, entry, export_dir, manifest)
        rows.append(row)
        if path is not None:
            runnable.append((row, path, Feed.of(entry)))
    per_face.update(_run_artifacts(runnable, ctx))
    return rows, per_face


def _add_video(rows: list[ValidationRow], export_dir: Path, ckpt_path: Path, cfg, overrides: list[str],
               work: Path) -> None:
    """row.video of every evaluated row (validate/video.py); none at validate.video_frames 0 or
    for a scheme the face generator lacks. Runs each artifact in-process through the Landmarker."""
    from facemark.landmarker import Landmarker
    from facemark.validate.video import drawn_clips, video_figures

    clips = drawn_clips(cfg.data.scheme, cfg.validate.video_frames, work) if cfg.validate.video_frames else None
    for row in rows if clips is not None else []:
        if row.accuracy is None:
            continue
        model = ckpt_path if row.name == "pytorch" else export_dir / row.file
        print(f"video figures of {row.name} ...", file=sys.stderr, flush=True)
        try:
            row.video = video_figures(Landmarker(model, overrides=overrides), clips, cfg.predict)
        except ArtifactError as exc:   # NaN/inf landmarks: the tracker has no box to follow
            row.video = {"error": str(exc)}


def validate_run(run: Path, data_root: Path | None, split: str, threads: int | None,
                 max_nme_increase: float | None, max_nme: float | None, baseline: Path | None,
                 limit: int | None, overrides: list[str] | None = None) -> int:
    """Validate every artifact of RUN/export against RUN/best.pt; write RUN/validation/ -> exit code.

    `threads` (latency), `max_nme_increase` and `max_nme` default to the checkpoint config's
    validate section, `data_root` to the checkpoint's data_root, `limit` to data.limit (all faces),
    the test-time refinement to the manifest's infer section with `overrides` (`--set infer.*`).
    Holds RUN's lock. The split's data fingerprint goes into the report; a `baseline` measured on
    other faces is refused before any crop is made, and a split that differs from the one the
    checkpoint recorded is warned about.
    """
    _check_inputs(run, threads, max_nme_increase, max_nme)
    with hold_run_lock(run, "validate"):
        return _validate(Path(run), data_root, split, threads, max_nme_increase, max_nme, baseline, limit,
                         overrides or [])


def _validate(run: Path, data_root: Path | None, split: str, threads: int | None, max_nme_increase: float | None,
              max_nme: float | None, baseline: Path | None, limit: int | None, overrides: list[str]) -> int:
    from facemark.data.crops import load_crop_set
    from facemark.data.fingerprint import fingerprint_split, warn_if_changed
    from facemark.model import load_checkpoint, weights_source
    from facemark.schemes import load_scheme

    ckpt_path, export_dir = RunDir(run).best, RunDir(run).export
    model, cfg, ckpt = load_checkpoint(ckpt_path)
    manifest = load_manifest(export_dir)
    size, vcfg, norm = cfg.data.input_size, cfg.validate, weights_source(model).norm
    _check_manifest(manifest, export_dir, ckpt_path, cfg, norm)
    refinement = from_manifest(manifest.contract, overrides, "validate", str(manifest_path(export_dir)))
    root, threads, max_nme_increase, max_nme = _resolve(run, data_root, threads, max_nme_increase, max_nme,
                                                        cfg, ckpt)
    fingerprint = fingerprint_split(root, split, cfg.data, limit)
    warn_if_changed((ckpt.get("data_fingerprint") or {}).get(split), fingerprint, f"the one {ckpt_path} recorded")
    reference_baseline = None if baseline is None else load_baseline(baseline, {"fingerprint": fingerprint}, SCHEMA)
    crop_set = load_crop_set(root, split, cfg.data, limit=limit, workers=max(1, cfg.data.workers))
    data = _data_section(root, crop_set, fingerprint)
    if baseline is not None:   # the same faces after detector misses and skips, too
        reference_baseline = load_baseline(baseline, data, SCHEMA)
    predict = _reference_predictor(model, size)
    reference = predict(crop_set.crops)
    images = SplitImages(root, crop_set, cfg.data.max_image_pixels) if refinement.passes > 1 else None
    with tempfile.TemporaryDirectory(prefix="facemark-validate-") as tmp:
        ctx = Context(crop_set, load_scheme(cfg.data.scheme), size, norm, reference, Path(tmp), threads,
                      vcfg.warmup, vcfg.runs, refinement, images, _perturbations(root, crop_set, cfg))
        rows, per_face = _evaluate_all(model, ckpt_path, export_dir, manifest, ctx, predict)
        _add_video(rows, export_dir, ckpt_path, cfg, overrides, Path(tmp))
    gate = apply_gate(rows, max_nme_increase, max_nme, reference_baseline, vcfg.max_stability)
    report = {"schema": SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "facemark": __version__, "run": str(run),
              "checkpoint": {"file": str(ckpt_path), "sha256": manifest.contract.checkpoint.sha256},
              "manifest": {"file": str(manifest_path(export_dir))}, "scheme": cfg.data.scheme,
              "input_size": size, "data": data,
              "settings": {**machine_settings(), "threads": threads, "eval_workers": ctx.eval_workers,
                           "warmup": vcfg.warmup, "runs": vcfg.runs, "batch": 1},
              "infer": refinement.record(),
              "preprocess": lat.preprocess_latency(crop_set.crops[0], norm, vcfg.warmup, vcfg.runs),
              "banner": x86_banner(), "gate": gate, "rows": rows,
              "sensitivity": sensitivity_summary(export_dir)}
    out_dir = RunDir(run).validation
    sweep_partials(out_dir)
    paths = write_report(report, out_dir, per_face)
    paths["landmarks"] = write_landmarks(out_dir, crop_set.stems, ctx.landmarks)
    print_report(report)
    print(f"wrote {', '.join(str(path) for path in paths.values())}")
    for failure in gate["failures"]:
        print(f"facemark validate: gate failed: {failure['artifact']}: {failure['reason']}", file=sys.stderr)
    return 0 if gate["passed"] else 1
