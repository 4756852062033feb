"""Landmark losses on normalised crop coordinates (facemark.codec: (P - S/2) / (S/2)).

All take pred and target as (N, 2P) (or any equal shapes) and return the mean over every
coordinate, so values do not depend on the batch size or the point count. Wing's width `w` and
curvature `epsilon` and smooth L1's `beta` are therefore in normalised units too: 1.0 is half the
crop (112 px at 224). The paper's two are `mse` and `wing`; `l1` and `smooth_l1` (beyond the
paper) are the usual robust alternatives, per coordinate x = |pred - target|:
- l1: x;
- smooth_l1: x^2 / (2 beta) for x < beta, else x - beta / 2 (torch's SmoothL1Loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from facemark.config import TrainConfig
from facemark.errors import ConfigError


class WingLoss(nn.Module):
    """Wing loss (Feng et al., CVPR 2018) per coordinate x = |pred - target|:
    w * ln(1 + x / epsilon) for x < w, else x - C with C = w - w * ln(1 + w / epsilon),
    which joins the two branches continuously at x = w."""

    def __init__(self, w: float, epsilon: float):
        super().__init__()
        if w <= 0 or epsilon <= 0:
            raise ConfigError(f"train.wing_w and train.wing_epsilon must be > 0, got {w} and {epsilon}")
        self.w = w
        self.epsilon = epsilon
        self.c = w - w * math.log1p(w / epsilon)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = (pred - target).abs()
        small = self.w * torch.log1p(x / self.epsilon)
        return torch.where(x < self.w, small, x - self.c).mean()


LOSSES: dict[str, Callable[[TrainConfig], nn.Module]] = {
    "mse": lambda cfg: nn.MSELoss(),
    "wing": lambda cfg: WingLoss(cfg.wing_w, cfg.wing_epsilon),
    "l1": lambda cfg: nn.L1Loss(),
    "smooth_l1": lambda cfg: _smooth_l1(cfg.smooth_l1_beta),
}


def _smooth_l1(beta: float) -> nn.Module:
    if beta <= 0:   # torch would quietly turn beta 0 into plain L1
        raise ConfigError(f"train.smooth_l1_beta must be > 0, got {beta}")
    return nn.SmoothL1Loss(beta=beta)


def build_loss(train_cfg: TrainConfig) -> nn.Module:
    """The loss named by train.loss; an unknown name is a ConfigError listing the valid ones."""
    if train_cfg.loss not in LOSSES:
        raise ConfigError(f"train.loss: unknown loss {train_cfg.loss!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[train_cfg.loss](train_cfg)
