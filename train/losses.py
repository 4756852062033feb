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
    # on bare coordinates (a QAT graph has no sigma or covariance): Wing; the training loop uses
    # RleLoss / StarLoss instead
    "rle": lambda cfg: WingLoss(cfg.wing_w, cfg.wing_epsilon),
    "star": lambda cfg: WingLoss(cfg.wing_w, cfg.wing_epsilon),
}


def _smooth_l1(beta: float) -> nn.Module:
    if beta <= 0:   # torch would quietly turn beta 0 into plain L1
        raise ConfigError(f"train.smooth_l1_beta must be > 0, got {beta}")
    return nn.SmoothL1Loss(beta=beta)


def build_loss(train_cfg: TrainConfig) -> nn.Module:
    """The coordinate loss named by train.loss, on (N, 2P) coordinates (what QAT fine-tunes a
    graph with; train.loss rle falls back to Wing there); an unknown name is a ConfigError."""
    if train_cfg.loss not in LOSSES:
        raise ConfigError(f"train.loss: unknown loss {train_cfg.loss!r}; valid: {', '.join(sorted(LOSSES))}")
    return LOSSES[train_cfg.loss](train_cfg)


class PipMapLoss(nn.Module):
    """PIPNet's training loss for model.head pip, on the head's training output (facemark.heads.GridHead):
    (N, 2P + 3PK) = coordinates, scores, x offsets, y offsets ((P, K) each, K = H*W cells).

    The target's cell (its normalised coordinate placed on the grid, clamped to the border cells)
    gets score 1 and every other cell 0 (MSE over all maps, times `map_weight`); the offsets of the
    target's cell regress the target's position from that cell's centre, in cell units (L1).
    """

    def __init__(self, num_points: int, grid: tuple[int, int], map_weight: float) -> None:
        super().__init__()
        self.num_points, self.grid, self.map_weight = num_points, grid, map_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        points, (height, width) = self.num_points, self.grid
        cells = height * width
        scores, off_x, off_y = output[:, 2 * points:].reshape(-1, 3, points, cells).unbind(1)
        target = target.reshape(-1, points, 2)
        # position in cell units from the grid's top-left corner
        gx, gy = (target[..., 0] + 1.0) * width / 2.0, (target[..., 1] + 1.0) * height / 2.0
        col = gx.floor().clamp(0, width - 1)
        row = gy.floor().clamp(0, height - 1)
        index = (row * width + col).long().unsqueeze(2)                     # (N, P, 1)
        one_hot = torch.zeros_like(scores).scatter_(2, index, 1.0)
        map_loss = nn.functional.mse_loss(scores, one_hot)
        true_x = off_x.gather(2, index).squeeze(2)
        true_y = off_y.gather(2, index).squeeze(2)
        offset_loss = ((true_x - (gx - col - 0.5)).abs() + (true_y - (gy - row - 0.5)).abs()).mean() / 2.0
        return self.map_weight * map_loss + offset_loss


class RleLoss(nn.Module):
    """Residual log-likelihood estimation (Li et al., ICCV 2021) on a regression head's training
    output (N, 2P + 2P) = coordinates mu, then sigma logits (facemark.heads.RleLinear).

    Per coordinate, sigma = sigmoid(logit); the residual (mu - target) / sigma is scored by the
    head's flow (its log density, shared by x and y of a point) and by a Laplace prior
    Q (log(sigma / amp) + |target - mu| / (sqrt(2) sigma), amp = 1/sqrt(2 pi)); the loss is
    log(sigma) - log flow + log Q, averaged over every coordinate like the other losses.
    """

    AMP = 1.0 / math.sqrt(2.0 * math.pi)

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mu, logits = output.chunk(2, dim=1)
        sigma = torch.sigmoid(logits).reshape(len(output), -1, 2) + 1e-9
        mu, target = mu.reshape(sigma.shape), target.reshape(sigma.shape)
        residual = (mu - target) / sigma
        log_flow = self.flow.log_prob(residual.reshape(-1, 2)).reshape(len(output), -1, 1)
        log_q = torch.log(sigma / self.AMP) + (target - mu).abs() / (math.sqrt(2.0) * sigma)
        return (torch.log(sigma) - log_flow + log_q).mean()


class StarLoss(nn.Module):
    """STAR loss (Zhou et al., CVPR 2023) on an integral head's training output with covariances,
    (N, 2P + 3P) = coordinates mu, then each point's covariance (xx, xy, yy) of its soft-argmax
    distribution (facemark.heads.GridHead.covariance), in normalised crop units.

    Per point, with the covariance's eigenvalues l_i and eigenvectors v_i and e = mu - target:
    sum_i |v_i . e| / sqrt(l_i + eps) + omega * (l_1 + l_2). Error along the direction in which the
    head's distribution is wide (along a contour, where the label itself is ambiguous) costs less;
    the second term keeps the head from buying that discount by spreading out. Lengths are in crop
    widths (normalised / 2), the paper's [0, 1] heatmap coordinates, so its omega = 1 and eps keep
    their meaning. The eigenvectors come from the detached covariance and each eigenvalue as
    v_i^T C v_i: the same values and first-order gradients, without eigh's backward, which divides
    by l_1 - l_2 and is infinite where they meet. Mean over points.
    """

    EPS = 1e-5

    def __init__(self, omega: float) -> None:
        super().__init__()
        self.omega = omega

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        points = target.shape[1] // 2
        mu = output[:, :2 * points].reshape(-1, points, 2) / 2.0
        xx, xy, yy = (output[:, 2 * points:].reshape(-1, points, 3) / 4.0).unbind(2)
        covariance = torch.stack([torch.stack([xx, xy], -1), torch.stack([xy, yy], -1)], -2)   # (N, P, 2, 2)
        _, vectors = torch.linalg.eigh(covariance.detach())                                  # columns v_i
        values = torch.einsum("npki,npkl,npli->npi", vectors, covariance, vectors).clamp_min(0.0)
        along = torch.einsum("npki,npk->npi", vectors, mu - target.reshape(-1, points, 2) / 2.0)
        spread_cost = self.omega * (xx + yy)   # the trace: l_1 + l_2
        return ((along.abs() / (values + self.EPS).sqrt()).sum(2) + spread_cost).mean()


def build_training_loss(train_cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """The loss the training loop applies to `model`'s training-mode output: PipMapLoss for a head
    that trains on its maps (facemark.head_specs: pip), RleLoss with the head's flow for train.loss
    rle, StarLoss for train.loss star, else train.loss on the coordinates."""
    from facemark.heads import GridHead, RleLinear

    head = getattr(model, "head", None)
    if isinstance(head, GridHead) and head.spec.map_loss:
        return PipMapLoss(head.num_points, head.grid, train_cfg.pip_map_weight)
    if train_cfg.loss == "rle":
        rle = [module for module in model.modules() if isinstance(module, RleLinear)]
        assert len(rle) == 1, "train.loss rle: build_model(..., rle=True) puts one RleLinear in the model"
        return RleLoss(rle[0].flow)
    if train_cfg.loss == "star":
        return StarLoss(train_cfg.star_omega)
    return build_loss(train_cfg)
