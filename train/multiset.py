"""Training on several labelled datasets at once (data.sets): one backbone, one head per scheme.

--data and data.scheme are the main set; every entry of data.sets adds a dataset in another
landmark scheme with its own GridHead (facemark.heads.SchemeHeadsNet). An epoch sees every face of
every set once, shuffled together; each face's loss is its own scheme's head's, times its set's
weight. Batches mix schemes, so a face travels with a packed target: its (2P,) normalised crop
coordinates, zero-padded to the longest scheme, then its set's index (0: the main set).

RUN/best.pt is the main scheme's model (the run's val NME), so export, quantize and validate work
as for any run. Each extra scheme is validated on its own val split every epoch (metrics.jsonl:
`val_nme_SCHEME`) and, when that improves, its head and the shared backbone are saved as a
one-scheme run folder, RUN/schemes/SCHEME/ (best.pt, config.yaml): `facemark export
RUN/schemes/SCHEME` writes its artifacts, whose manifest says that scheme.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from facemark.config import Config, ExtraSet, save_config
from facemark.data.crops import CropSet, load_crop_set
from facemark.heads import SchemeHeadsNet
from facemark.model import checkpoint_dict
from facemark.rundir import RunDir
from facemark.schemes import Scheme, load_scheme
from facemark.train.augment import TrainFaces
from facemark.train.checkpoint import save_checkpoint
from facemark.train.losses import build_training_loss
from facemark.train.selftrain import PseudoLabels, Teacher, pseudo_targets
from facemark.train.transfer import TransferMaps, apply_map, fit_transfer
from facemark.train.validation import crop_set_nme


def scheme_points(cfg: Config) -> list[int]:
    """The point count of each set's scheme, the main set first (the heads' order)."""
    return [load_scheme(name).num_points for name in [cfg.data.scheme, *(item.scheme for item in cfg.data.sets)]]


def set_config(cfg: Config, item: ExtraSet) -> Config:
    """The one-scheme config of an extra set: data.scheme its scheme, no further sets (what its
    RUN/schemes/SCHEME/best.pt records, and what reads its faces)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, scheme=item.scheme, sets=[]))


class MixedFaces(Dataset):
    """The faces of several TrainFaces (the main set first) as one dataset: item -> (normalised
    (3, S, S) crop, packed target (2 * max P + 1,): coordinates, zero padding, set index)."""

    def __init__(self, parts: list[TrainFaces]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [len(part) for part in parts])
        self.width = 2 * max(part.num_points for part in parts)
        self.samples = parts[0].samples   # the main set's: its mean shape and fingerprint

    def __len__(self) -> int:
        return int(self.starts[-1])

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.set_epoch(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (None, key)
        which = int(np.searchsorted(self.starts, index, side="right") - 1)
        local = index - int(self.starts[which])
        image, target = self.parts[which][(epoch, local) if epoch is not None else local]
        packed = torch.zeros(self.width + 1)
        packed[:len(target)], packed[-1] = target, which
        return image, packed


class SchemeLoss(nn.Module):
    """The coordinate loss per scheme on SchemeHeadsNet's training output (N, sum of the heads'
    `columns`, by default their `sizes` 2P_k; 5P_k with train.loss star's covariances): the rows of
    set k against head k's slice, weighted by the set's weight and its share of the batch; once
    `maps` holds label-transfer maps (facemark.train.transfer), also every other head h against the
    rows' labels mapped into h's scheme, times `transfer_weight`; given a teacher's `pseudo` labels
    (facemark.train.selftrain), every other head h against its pseudo-labels of the rows, times
    `pseudo_weight`."""

    def __init__(self, base: nn.Module, sizes: list[int], weights: list[float], maps: TransferMaps | None = None,
                 transfer_weight: float = 0.0, pseudo_weight: float = 0.0, columns: list[int] | None = None) -> None:
        super().__init__()
        self.base, self.sizes, self.weights, self.columns = base, sizes, weights, columns or sizes
        self.maps, self.transfer_weight, self.pseudo_weight = maps or TransferMaps(), transfer_weight, pseudo_weight

    def forward(self, preds: torch.Tensor, packed: torch.Tensor,
                pseudo: list[PseudoLabels] | None = None) -> torch.Tensor:
        sets = packed[:, -1].round().long()
        heads = preds.split(self.columns, dim=1)
        total = preds.new_zeros(())
        for k, (size, weight) in enumerate(zip(self.sizes, self.weights)):
            rows = sets == k
            if not rows.any():
                continue
            truth = packed[rows, :size]
            total = total + weight * rows.sum() * self.base(heads[k][rows], truth)
            for (source, h), mapping in self.maps.maps.items():
                if source == k and self.transfer_weight > 0:
                    mapped = apply_map(truth, mapping.to(truth.device))
                    total = total + self.transfer_weight * weight * rows.sum() * self.base(heads[h][rows], mapped)
            for h, labels in enumerate(pseudo or []):
                if h != k:
                    student = heads[h][rows]
                    target = pseudo_targets(student, labels, rows)
                    total = total + self.pseudo_weight * weight * rows.sum() * self.base(student, target)
        return total / len(packed)


def training_loss(cfg: Config, model: nn.Module, maps: TransferMaps) -> nn.Module:
    """train.loss for `model`: per scheme (SchemeLoss, with `maps` once label transfer fits them,
    and pseudo-labels when self-training) when data.sets adds heads."""
    base = build_training_loss(cfg.train, model)
    if not cfg.data.sets:
        return base
    sizes = [2 * points for points in scheme_points(cfg)]
    columns = [head.train_columns for head in (model.head, *model.extra_heads.values())]
    return SchemeLoss(base, sizes, [1.0, *(item.weight for item in cfg.data.sets)], maps, cfg.train.transfer_weight,
                      cfg.train.pseudo_weight, columns)


def epoch_teacher(cfg: Config, eval_model: nn.Module, epoch: int) -> Teacher | None:
    """The self-training teacher for `epoch` (0-based, the one about to run): the run's EMA model
    once train.pseudo_epoch epochs are done, when train.pseudo_weight > 0; else None."""
    if cfg.train.pseudo_weight == 0 or epoch < cfg.train.pseudo_epoch:
        return None
    return Teacher(eval_model, cfg.train.pseudo_keep)


@dataclasses.dataclass
class ExtraScheme:
    """An extra set while training: its config, scheme, val crops and best val NME so far."""

    item: ExtraSet
    cfg: Config
    scheme: Scheme
    val: CropSet | None
    best: float = float("inf")
    best_epoch: int = 0


class ExtraSchemes:
    """The extra sets of a run (none without data.sets): per-epoch validation, their best
    checkpoints in RUN/schemes/SCHEME/, the label-transfer maps, and what last.pt keeps of them
    for --resume."""

    def __init__(self, cfg: Config, is_main: bool) -> None:
        self.cfg, self.maps = cfg, TransferMaps()
        self.sets = []
        for item in cfg.data.sets:
            one = set_config(cfg, item)
            val = load_crop_set(Path(item.root), "val", one.data, workers=max(1, cfg.data.workers)) if is_main else None
            self.sets.append(ExtraScheme(item, one, load_scheme(item.scheme), val))

    def validate(self, model: nn.Module, record: dict[str, Any], device: torch.device) -> None:
        """Add val_nme_SCHEME of each extra head of `model` (a SchemeHeadsNet) to the epoch's record."""
        for extra in self.sets:
            view = model.scheme_view(extra.item.scheme)
            record[f"val_nme_{extra.item.scheme}"] = crop_set_nme(view, extra.val, extra.scheme, extra.cfg, device)

    def save_best(self, model: SchemeHeadsNet, run_dir: Path, record: dict[str, Any]) -> str:
        """RUN/schemes/SCHEME/best.pt (and its config.yaml) for each extra scheme whose val NME
        improved -> the epoch line's words for them ("  datatang106 0.0612 (best)")."""
        words = ""
        for extra in self.sets:
            value = record[f"val_nme_{extra.item.scheme}"]
            words += f"  {extra.item.scheme} {value:.4f}"
            if value >= extra.best:
                continue
            words += " (best)"
            extra.best, extra.best_epoch = value, record["epoch"]
            folder = RunDir(run_dir).scheme_run(extra.item.scheme)
            folder.root.mkdir(parents=True, exist_ok=True)
            save_config(extra.cfg, folder.config)
            save_checkpoint(folder.best, checkpoint_dict(
                model.scheme_view(extra.item.scheme), extra.cfg, epoch=record["epoch"], val_nme=value,
                data_root=extra.item.root, data_fingerprint=None))
        return words

    def transfer_due(self, epoch: int) -> bool:
        """Whether the label-transfer maps are fitted after `epoch` (train.transfer_epoch)."""
        return bool(self.sets) and self.cfg.train.transfer_weight > 0 and epoch == self.cfg.train.transfer_epoch

    def fit_transfer(self, model: SchemeHeadsNet, main_root: Path, main_val: CropSet, device: torch.device,
                     run_dir: Path, log) -> None:
        """Fit the maps from `model` (train.transfer) into self.maps, which the loss holds."""
        sets = [(self.cfg.data.scheme, Path(main_root), self.cfg)]
        sets += [(extra.item.scheme, Path(extra.item.root), extra.cfg) for extra in self.sets]
        self.maps.update(fit_transfer(model, sets, [main_val, *(extra.val for extra in self.sets)], device,
                                      run_dir, log))

    def share_maps(self, device: torch.device) -> None:
        """DDP: every process takes rank 0's maps (fitted there), pair by pair in a fixed order."""
        import torch.distributed as dist

        points = scheme_points(self.cfg)
        for k, h in ((k, h) for k in range(len(points)) for h in range(len(points)) if k != h):
            tensor = self.maps.maps.get((k, h), torch.zeros(points[k], points[h])).to(device)
            dist.broadcast(tensor, src=0)
            self.maps.maps[(k, h)] = tensor.cpu()

    def state(self) -> dict[str, Any]:
        """What last.pt keeps: {"scheme_best": {scheme: [best val NME, its epoch]}, "transfer_maps"}."""
        if not self.sets:
            return {}
        return {"scheme_best": {extra.item.scheme: [extra.best, extra.best_epoch] for extra in self.sets},
                "transfer_maps": self.maps.saved()}

    def restore(self, saved: dict[str, Any]) -> None:
        kept = saved.get("scheme_best") or {}
        for extra in self.sets:
            extra.best, extra.best_epoch = kept.get(extra.item.scheme, [float("inf"), 0])
            extra.best_epoch = int(extra.best_epoch)
        self.maps.update(TransferMaps.from_saved(saved.get("transfer_maps")))
