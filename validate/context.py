"""What every row of `facemark validate` shares (validate/run.py): the crops, the reference, the
settings, the child-process jobs and the figures measured from a row's predictions.

The shared .npy holds the refinement's first-pass crops (the N evaluation crops, then their N
mirrors with infer.flip) followed by the stability perturbations' M crops, so one child process
per artifact predicts all of them; a later refinement pass of an artifact is one more child process
on the crops cut from its previous pass's landmarks (facemark.runtime.refine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from facemark.runtime.harness import run_isolated
from facemark.runtime.machine import available_cores
from facemark.runtime.refine import Refinement
from facemark.runtime.runner import Feed
from facemark.validate import accuracy as acc
from facemark.validate import latency as lat
from facemark.validate import stability as stab
from facemark.validation_row import ValidationRow
from facemark.validate.stability import Perturbations
from facemark.weights import Normalisation


class Context:
    """What every artifact row needs: the crops (in memory and as .npy), the reference and settings.

    The .npy holds the refinement's first-pass crops (the N evaluation crops, then their N mirrors
    with infer.flip) followed by the stability perturbations' M crops (when `perturbations` is
    given), so one child process per artifact predicts all of them. `images` are the N faces'
    photos, for the later passes of `refinement` (None when it has one pass)."""

    def __init__(self, crop_set, scheme, size: int, norm: Normalisation, reference: np.ndarray, work_dir: Path,
                 threads: int, warmup: int, runs: int, refinement: Refinement, images=None,
                 perturbations: Perturbations | None = None) -> None:
        self.crop_set, self.scheme, self.size, self.norm, self.reference = crop_set, scheme, size, norm, reference
        self.work_dir, self.threads, self.warmup, self.runs = work_dir, threads, warmup, runs
        self.refinement, self.images, self.perturbations = refinement, images, perturbations
        self.refined_reference: np.ndarray | None = None   # PyTorch's refined landmarks, set by _torch_row
        self.landmarks: dict[str, np.ndarray] = {}   # row name (+ "_refined") -> (N, P, 2) float32 image pixels
        self.eval_workers = available_cores()   # parallel one-thread accuracy processes
        self.crops_path = work_dir / "crops.npy"
        first = refinement.pass_crops(crop_set.crops)
        self.first_count = len(first)
        extra = [] if perturbations is None else [perturbations.crops]
        np.save(self.crops_path, np.concatenate([first, *extra]))
        # the first crop (and its mirror) once per pass: the refinement's batch-1 calls, timed
        self.sequence = [0, len(crop_set)] * refinement.passes if refinement.flip else [0] * refinement.passes

    def run(self, mode: str, row: ValidationRow, path: Path, feed: Feed,
            crops_path: Path | None = None) -> dict[str, Any]:
        """One harness job for artifact `row` on the shared .npy (or `crops_path`) -> its result
        (raises WorkerFailed); see facemark.runtime.harness. Accuracy jobs run one thread each
        (several at once), latency jobs `threads` (one at a time)."""
        stem = self.work_dir / f"{row.name}.{mode}"
        job = {"mode": mode, "format": row.format, "artifact": str(path), "feed": vars(feed), "size": self.size,
               "values": 2 * self.scheme.num_points, "norm": self.norm.to_dict(), "crops": str(crops_path or self.crops_path),
               "threads": 1 if mode == "accuracy" else self.threads, "warmup": self.warmup, "runs": self.runs,
               "sequence": self.sequence, "predictions": f"{stem}.npy", "result": f"{stem}.json"}
        started = time.perf_counter()
        try:
            return run_isolated(job, Path(f"{stem}.job.json"))
        finally:
            row.seconds += time.perf_counter() - started

    def refine(self, predictions: np.ndarray, predict) -> np.ndarray | None:
        """The refined (N, P, 2) normalised landmarks from a row's predictions on the .npy's crops
        and its `predict` (for later passes), or None when the refinement is the single pass."""
        if not self.refinement.active:
            return None
        return self.refinement.run(predict, self.crop_set.crops, self.crop_set.matrices, self.images,
                                   first=predictions[:self.first_count])

    def artifact_predict(self, row: ValidationRow, path: Path, feed: Feed):
        """A later pass's predict for an artifact: one accuracy child process on the given crops."""
        def predict(crops: np.ndarray) -> np.ndarray:
            crops_path = self.work_dir / f"{row.name}.pass.npy"
            np.save(crops_path, crops)
            return self.run("accuracy", row, path, feed, crops_path)["predictions"]

        return predict

    def measure(self, row: ValidationRow, predictions: np.ndarray, refined: np.ndarray | None, times_ms,
                runtime: dict[str, Any]) -> np.ndarray:
        """Fill accuracy, parity, stability, latency, infer, refined and runtime of an evaluated row
        from its predictions on the .npy's crops, its refined landmarks (None: single pass) and its
        (runs, len(sequence)) latency -> (N,) per-face NME of the single pass."""
        count = len(self.crop_set)
        pred = predictions[:count]
        if self.perturbations is not None:
            faces = self.perturbations.settings["faces"]
            ipd = self.scheme.interpupil(self.crop_set.points[:faces])
            row.stability = stab.stability(pred[:faces], self.crop_set.matrices[:faces],
                                              predictions[self.first_count:], self.perturbations, ipd, self.size)
        self.landmarks[row.name] = acc.image_points(pred, self.crop_set, self.size).astype(np.float32)
        row.accuracy, per_face = acc.accuracy(pred, self.crop_set, self.scheme, self.size)
        row.parity = acc.parity(pred, self.reference, self.crop_set.stems, self.size)
        times = np.asarray(times_ms, dtype=np.float64).reshape(self.runs, -1)
        row.latency = {**lat.stats(times[:, 0]), "warmup": self.warmup}
        row.runtime = runtime
        row.infer = self.refinement.record()
        if refined is not None:
            self.landmarks[f"{row.name}_refined"] = acc.image_points(refined, self.crop_set,
                                                                        self.size).astype(np.float32)
            reference = refined if self.refined_reference is None else self.refined_reference
            row.refined = {"infer": self.refinement.record(),
                              "accuracy": acc.accuracy(refined, self.crop_set, self.scheme, self.size)[0],
                              "delta": None,
                              "parity": acc.parity(refined, reference, self.crop_set.stems, self.size),
                              "latency": {**lat.stats(times.sum(axis=1)), "warmup": self.warmup,
                                          "calls": int(times.shape[1])}}
        return per_face
