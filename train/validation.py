"""Validation while training: the val NME of each epoch and the mean-shape baseline every model
must beat, in image pixels normalised by the inter-pupil distance."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from facemark import codec
from facemark.config import Config
from facemark.data.crops import CropSet
from facemark.metrics import nme
from facemark.schemes import Scheme
from facemark.train.augment import mean_target


def validate_epoch(model: nn.Module, val_set: CropSet | None, scheme: Scheme, cfg: Config, process) -> float:
    """Mean inter-pupil NME on the validation crops (rank 0), shared with every process
    (`process`: the engine's Process)."""
    value = torch.zeros(1, dtype=torch.float64, device=process.device)
    if process.is_main:
        value[0] = crop_set_nme(model, val_set, scheme, cfg, process.device)
    if process.world_size > 1:
        dist.broadcast(value, src=0)
    return float(value[0])


def crop_set_nme(model: nn.Module, crop_set: CropSet, scheme: Scheme, cfg: Config, device: torch.device) -> float:
    """Mean inter-pupil NME of `model` on the faces of `crop_set` (landmarks mapped back to image pixels)."""
    from facemark.runtime import TorchRunner

    runner = TorchRunner(model, cfg.data.input_size, device=device, batch=2 * cfg.train.batch_size,
                         amp=cfg.train.amp and device.type == "cuda")
    preds = runner.predict(crop_set.crops)
    pred_image = codec.to_image(preds, crop_set.matrices, cfg.data.input_size)
    return float(nme(pred_image, crop_set.points, scheme, norm="pupil").mean())


def mean_shape_nme(samples, val_set: CropSet, scheme: Scheme, cfg: Config) -> float:
    """Val NME of the mean training target placed in every validation crop."""
    mean = mean_target(samples, scheme.num_points, cfg.data)
    preds = codec.to_image(np.broadcast_to(mean, (len(val_set), *mean.shape)), val_set.matrices,
                           cfg.data.input_size)
    return float(nme(preds, val_set.points, scheme, norm="pupil").mean())
