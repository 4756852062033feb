"""Self-training (train.pseudo_weight, with data.sets): the run's EMA model labels every face in the
schemes it lacks, and each head also trains on those pseudo-labels.

A face of set k carries scheme k's labels only. From the epoch after train.pseudo_epoch, every
step runs the teacher (the run's EMA weights, in eval mode, without gradient) on the step's own
augmented crops: head h's points on a face of set k != h are that face's pseudo-labels in scheme h,
already in the student's crop coordinates, so no augmentation has to be undone. Each pseudo-label
point is kept or dropped by the teacher's confidence in it, the spread of head h's soft-argmax
distribution there (facemark.heads.GridHead.spread): per head and batch, the train.pseudo_keep
fraction of pseudo-labelled points with the smallest spread are kept. Kept points weigh
train.pseudo_weight times a face's own labels (facemark.train.multiset.SchemeLoss).

Why the run's own EMA model (a mean teacher, Tarvainen & Valpola 2017) and not a first run's: one
run stays inside the recipe's CPU budget, and the weight average is steadily better than the
weights it averages. dlib's shipped model is never a teacher: its licence excludes commercial use,
and it would copy its biases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PseudoLabels:
    """One head's pseudo-labels for a batch: points (N, 2P) in normalised crop coordinates, and
    kept (N, P), True where the teacher is confident enough for the point to train the head."""

    points: torch.Tensor
    kept: torch.Tensor


class Teacher:
    """Reads every head of `model` (a SchemeHeadsNet, the run's EMA copy) on a batch ->
    PseudoLabels per head, main first. `keep` in (0, 1]: the fraction of the points that lack
    labels (rows of other sets) that are kept, per head, the most confident ones."""

    def __init__(self, model: nn.Module, keep: float) -> None:
        self.model, self.keep = model, keep

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, sets: torch.Tensor) -> list[PseudoLabels]:
        """images (N, 3, S, S) as the student sees them; sets (N,) each row's set index."""
        was_training = self.model.training
        self.model.eval()
        try:
            heads = self.model.read_heads(images)
        finally:
            self.model.train(was_training)
        labels = []
        for h, (points, spread) in enumerate(heads):
            lacking = (sets != h)[:, None].expand_as(spread)
            kept = torch.zeros_like(lacking)
            if lacking.any():
                cut = torch.quantile(spread[lacking].float(), self.keep)
                kept = lacking & (spread <= cut)
            labels.append(PseudoLabels(points.float(), kept))
        return labels


def pseudo_targets(student: torch.Tensor, labels: PseudoLabels, rows: torch.Tensor) -> torch.Tensor:
    """The targets of head h's `rows` (a boolean row mask): the teacher's kept points, and the
    student's own (detached) points where a point was dropped, which gives it no loss under every
    coordinate loss. student (N', 2P + extra) is head h's training output on those rows, coordinates
    first (train.loss star adds covariances after them) -> (N', 2P)."""
    kept = labels.kept[rows].repeat_interleave(2, dim=1)
    return torch.where(kept, labels.points[rows], student[:, :kept.shape[1]].detach())
