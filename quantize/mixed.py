"""Mixed-precision recovery: keep the most quantisation-sensitive layers in float until the int8
model is within quantize.mixed_target of the float model's NME, never below
quantize.mixed_min_int8_macs of its multiply-adds in int8.

The layers come ranked worst first from quantize/sensitivity_onnx.py and sensitivity_tflite.py
(ONNX: node names for onnxruntime's nodes_to_exclude; TFLite: output tensor names for LiteRT's
denylisted_nodes). The
search tries the top 0, 1, 2, 4, 8, ... layers in float, re-quantising each time with the same
calibration crops, and measures each candidate's NME on held-out faces (the val split, never the
test split the gate uses); the first that meets the target wins. If none does, the candidate with
the lowest NME that keeps the int8 share is written and the manifest says the target was missed.
Every trial is recorded in the artifact's manifest entry (`recovery.trials`), so a reader sees
what each recovered point cost in float layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facemark.data.crops import CropSet, load_crop_set
from facemark.metrics import nme
from facemark.quantize.common import QuantJob
from facemark.runtime import TorchRunner
from facemark.schemes import load_scheme

EVAL_SPLIT = "val"


@dataclass
class Trial:
    """One candidate: `excluded` layers in float; NME on the eval faces and its relative change
    against the float model; share of multiply-adds in int8; the file it was written to."""

    excluded: list[str]
    nme: float
    increase: float
    int8_macs: float
    path: Path

    def record(self) -> dict[str, Any]:
        return {"float_layers": len(self.excluded), "nme": round(self.nme, 6), "increase": round(self.increase, 5),
                "int8_macs": round(self.int8_macs, 4)}


@dataclass
class Recovery:
    """The search's outcome: `chosen` is None when plain int8 already met the target (no mixed
    artifact is needed) or when no candidate kept enough MACs in int8."""

    target: float
    min_int8_macs: float
    float_nme: float
    faces: int
    trials: list[Trial] = field(default_factory=list)
    chosen: Trial | None = None
    met: bool = False

    def record(self) -> dict[str, Any]:
        """The manifest's `recovery` entry."""
        return {"target_increase": self.target, "min_int8_macs": self.min_int8_macs, "eval_split": EVAL_SPLIT,
                "eval_faces": self.faces, "float_nme": round(self.float_nme, 6), "target_met": self.met,
                "trials": [t.record() for t in self.trials]}


class EvalFaces:
    """Held-out faces for judging candidates: the first quantize.mixed_eval_faces of the val split
    (or every face of `split` with `every_face`), with the float PyTorch model's NME on them
    (normalised by the inter-pupil distance)."""

    def __init__(self, job: QuantJob, root: Path, split: str = EVAL_SPLIT, every_face: bool = False):
        limit = None if every_face else job.cfg.quantize.mixed_eval_faces
        self.crops: CropSet = load_crop_set(root, split, job.cfg.data, limit=limit)
        self.scheme = load_scheme(job.cfg.data.scheme)
        self.size = job.size
        self.norm = job.norm
        self.float_nme = self.nme(TorchRunner(job.model, job.size, job.norm).predict(self.crops.crops))

    def nme(self, outputs: np.ndarray) -> float:
        """Mean pupil NME of (N, 2P) normalised crop outputs against the ground truth."""
        points = np.asarray(outputs, np.float64).reshape(len(self.crops), -1, 2) * self.size / 2 + self.size / 2
        return float(np.mean(nme(points, self.crops.crop_points, self.scheme, "pupil")))


def affordable(layers: list[dict[str, Any]], macs: dict[str, int], min_int8_macs: float) -> list[list[str]]:
    """The ranked layers' exclusion groups (each row's `exclude`: the nodes that keep its output in
    float), worst first, that fit together in the float budget of `min_int8_macs`: a group that
    would overdraw it is skipped and the next, cheaper one considered (groups of zero-MAC nodes
    such as Add or Clip always fit). `macs`: {layer name: multiply-adds} of every MAC layer."""
    budget, excluded, groups, spent = (1.0 - min_int8_macs) * sum(macs.values()), set(), [], 0
    for layer in layers:
        new = [name for name in layer["exclude"] if name not in excluded]
        extra = sum(macs.get(name, 0) for name in new)
        if new and spent + extra <= budget:
            spent += extra
            excluded.update(new)
            groups.append(new)
    return groups


def schedule(candidates: int) -> list[int]:
    """How many of the ranked layers each trial keeps in float: 0, 1, 2, 4, 8, ... up to all."""
    counts, k = [0], 1
    while k < candidates:
        counts.append(k)
        k *= 2
    return counts + ([candidates] if candidates else [])


def search(ranking: list[list[str]], build: Callable[[list[str], Path], Path], measure: Callable[[Path], float],
           int8_share: Callable[[Path], float], reference: float, faces: int, work_dir: Path, target: float,
           min_int8_macs: float, log: Callable[[str], None] = print) -> Recovery:
    """Try the schedule over `ranking` (exclusion groups of layer names, worst first; the first k
    groups together are one candidate). `build(excluded, stem)` writes a
    candidate and returns its path; `measure(path)` -> its error on the held-out faces (NME), to be
    compared with the float model's `reference` on the same `faces`; `int8_share(path)` -> fraction
    of MACs in int8. Stops at the first candidate within `target` (relative increase); a
    candidate under `min_int8_macs` ends the search."""
    recovery = Recovery(target, min_int8_macs, reference, faces)
    for count in schedule(len(ranking)):
        excluded = [name for group in ranking[:count] for name in group]
        path = build(excluded, work_dir / f"mixed_{count:03d}")
        share = int8_share(path)
        if share < min_int8_macs:
            log(f"  {count} activations ({len(excluded)} layers) in float: {share:.1%} of MACs in int8 "
                f"< {min_int8_macs:.0%}; stop")
            break
        value = measure(path)
        trial = Trial(excluded, value, (value - reference) / reference, share, path)
        recovery.trials.append(trial)
        log(f"  {count} activations ({len(excluded)} layers) in float: NME {value:.5f} on {faces} {EVAL_SPLIT} "
            f"faces ({trial.increase:+.2%} vs float), {share:.1%} of MACs in int8")
        if trial.increase <= target:
            recovery.met = True
            recovery.chosen = trial if count else None
            return recovery
    best = min(recovery.trials[1:], key=lambda t: t.nme, default=None)
    if best is not None and recovery.trials and best.nme < recovery.trials[0].nme:
        recovery.chosen = best
    return recovery
