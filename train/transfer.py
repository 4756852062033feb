"""Cross-scheme label transfer (train.transfer_weight, with data.sets): a face labelled in one
scheme also trains the other schemes' heads, on targets mapped from its own labels.

The maps are learned, not hand-written. After epoch train.transfer_epoch, each head h predicts
the training faces of every other set k (evaluation crops, no augmentation); a linear map
W_{k->h} (P_k x P_h) is fitted by ridge least squares from those faces' ground truth in scheme k
to head h's predictions, with each target point a weighted sum of the source points whose weights
sum to 1: then W commutes with every similarity transform of the crop (rotation, scale, shift,
flip with its permutation), so it can be applied to the augmented targets of every later step.
Mapped targets weigh train.transfer_weight times a face's own (facemark.train.multiset.SchemeLoss).

Why from head h's predictions and not from another set's labels: no face carries both schemes, so
the model's own reading of scheme h on faces of scheme k is the only paired data there is. How
well each map does is recorded in RUN/transfer.json: the mapped labels of set k's val faces
against head h's predictions there (how far the targets are from what the head learned), and the
maps themselves, also in last.pt for --resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facemark import codec
from facemark.config import Config
from facemark.data.crops import CropSet, load_crop_set
from facemark.io import atomic_write_text
from facemark.runtime import TorchRunner

TRANSFER_FILE = "transfer.json"
RIDGE = 1e-3   # on normalised crop coordinates (|x| <= ~1): keeps W finite where source points move together


def normalised_truth(crop_set: CropSet, size: int) -> np.ndarray:
    """(N, P, 2) ground truth of a crop set in normalised crop coordinates."""
    return np.stack([codec.normalise(codec.apply_affine(points, matrix), size)
                     for points, matrix in zip(crop_set.points, crop_set.matrices)])


def fit_map(source: np.ndarray, target: np.ndarray, ridge: float = RIDGE) -> np.ndarray:
    """W (Ps, Pt) minimising sum ||target - W^T source||^2 + ridge ||W||^2 over faces and both
    coordinates, each column summing to 1 (a weighted mean of source points per target point).
    source (N, Ps, 2), target (N, Pt, 2). Solved as one KKT system for every column at once."""
    a = np.concatenate([source[..., 0], source[..., 1]]).astype(np.float64)   # (2N, Ps)
    b = np.concatenate([target[..., 0], target[..., 1]]).astype(np.float64)   # (2N, Pt)
    points = a.shape[1]
    system = np.zeros((points + 1, points + 1))
    system[:points, :points] = a.T @ a + ridge * len(a) * np.eye(points)
    system[:points, points] = system[points, :points] = 1.0
    rhs = np.vstack([a.T @ b, np.ones((1, b.shape[1]))])
    return np.linalg.solve(system, rhs)[:points]


def apply_map(points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(n, 2Ps) coordinates x0, y0, ... in the source scheme -> (n, 2Pt) in the target scheme."""
    mapped = torch.einsum("npc,pq->nqc", points.reshape(len(points), -1, 2), weights)
    return mapped.reshape(len(points), -1)


class TransferMaps:
    """The fitted maps of a run: {(source set, target set): W}; set 0 is the main one."""

    def __init__(self, maps: dict[tuple[int, int], torch.Tensor] | None = None) -> None:
        self.maps = maps or {}

    def update(self, other: TransferMaps) -> None:
        """Take `other`'s maps (in place: the training loss holds this object)."""
        self.maps.clear()
        self.maps.update(other.maps)

    def saved(self) -> dict[str, Any]:
        return {f"{k}->{h}": weights for (k, h), weights in self.maps.items()}

    @classmethod
    def from_saved(cls, saved: dict[str, Any] | None) -> TransferMaps:
        pairs = {tuple(int(v) for v in key.split("->")): weights.float() for key, weights in (saved or {}).items()}
        return cls(pairs)


def fit_transfer(model: nn.Module, sets: list[tuple[str, Path, Config]], val_sets: list[CropSet],
                 device: torch.device, run_dir: Path, log) -> TransferMaps:
    """Fit W_{k->h} for every ordered pair of sets from `model` (a SchemeHeadsNet) on each set's
    training faces; write RUN/transfer.json with each map's fit on the val faces -> the maps.
    `sets`: (scheme, root, one-scheme config) per set, the main one first; `val_sets` their val crops."""
    heads = [model.scheme_view()] + [model.scheme_view(name) for name, _, _ in sets[1:]]
    size = sets[0][2].data.input_size
    maps, report = {}, {}
    for k, (name, root, cfg) in enumerate(sets):
        train_faces = load_crop_set(root, "train", cfg.data, workers=max(1, cfg.data.workers))
        truth, val_truth = normalised_truth(train_faces, size), normalised_truth(val_sets[k], size)
        for h, head in enumerate(heads):
            if h == k:
                continue
            runner = TorchRunner(head, size, device=device)
            weights = fit_map(truth, runner.predict(train_faces.crops))
            maps[(k, h)] = torch.from_numpy(weights).float()
            predicted = runner.predict(val_sets[k].crops)
            mapped = np.einsum("npc,pq->nqc", val_truth, weights)
            gap = float(np.linalg.norm(mapped - predicted, axis=2).mean())
            pair = f"{name}->{sets[h][0]}"
            report[pair] = {"train_faces": len(train_faces), "val_faces": len(val_sets[k]),
                            "val_mean_gap_crop_units": round(gap, 5)}
            log(f"label transfer {pair}: fitted on {len(train_faces)} faces; mapped val labels sit "
                f"{gap * size / 2:.2f} px from the {sets[h][0]} head's points ({size} px crops)")
    atomic_write_text(run_dir / TRANSFER_FILE, json.dumps({"schema": "facemark-transfer-v1", "fit": report,
                                                           "maps": {key: w.tolist() for key, w in
                                                                    TransferMaps(maps).saved().items()}}) + "\n")
    return TransferMaps(maps)
