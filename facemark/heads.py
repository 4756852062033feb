"""Landmark heads: how backbone features become (N, 2P) normalised crop coordinates (codec.py).

Every head's eval-mode output is the export contract, (N, 2P) = (x0, y0, x1, y1, ...) in normalised
crop coordinates, so manifests, runners and the Android core never see which head made it. In
training mode a head may return more columns after those 2P, which the training loss of that head
reads (facemark.train.losses.build_training_loss):

- `pool` (timm's global pooling + Linear, the paper) and `spatial` (SpatialHead): direct regression;
- `pip`: PIPNet-style (Jin et al., IJCV 2021): per point a score map on the stride-16 grid plus x/y
  offsets inside each cell; the point is the best-scoring cell's centre moved by that cell's offsets;
- `integral`: the same maps read as a soft-argmax (integral regression, Sun et al. 2018): the point
  is the softmax-weighted mean of every cell's centre-plus-offset, trained on the coordinates alone;
- train.loss rle swaps a regression head's final Linear for an RleLinear (training-only sigma and flow).

The grid heads (GridHead) fuse the stride-16 features with the upsampled stride-32 features, a
small feature pyramid: at 128 px the stride-16 grid is 8x8, stride 32 alone leaves 4x4, which
PIPNet's authors found too coarse. Without stride-32 features (model.grid_coarse: none) the
backbone ends at stride 16 and the head reads the stride-16 grid alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facemark.head_specs import HEADS


class SpatialHead(nn.Module):
    """(N, C, h, w) backbone features -> (N, 2P): a 1x1 conv to `channels` + BatchNorm + ReLU,
    then one Linear over all channels x h x w positions.

    Global pooling keeps what fired but not where; a landmark regressor needs the where, and
    learning to encode position in pooled channels takes far more steps and faces than the
    real-face budgets here (docs/results.md). A 1x1 conv, a reshape and a Linear export
    and quantise like the pooled head.
    """

    def __init__(self, in_channels: int, grid: tuple[int, int], channels: int, outputs: int) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
                                    nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels * grid[0] * grid[1], outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.reduce(features), 1))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class GridHead(nn.Module):
    """(fine (N, Cf, H, W) stride-16 features[, coarse (N, Cc, H/2, W/2) stride-32 features]) -> points.
    `coarse_channels` None: no stride-32 branch, the head reads the stride-16 features alone.

    Maps, per point p and cell k of the H x W grid: a score s[p, k] and offsets (ox, oy)[p, k] in
    cell units from the cell's centre. Decoding (`head`, a grid row of facemark.head_specs.HEADS,
    by its decode):
    - "argmax" (pip): the cell with the highest score (ties averaged), its centre plus its offsets;
    - "softmax" (integral): sum_k softmax(s)[p, k] * (centre_k + offset_k).
    Both are plain tensor ops (max, equal, softmax, sums), which every converter and int8 backend
    supports, so the exported graph still returns (N, 2P) normalised crop coordinates.

    Training mode returns, for a head that trains on its maps (HeadSpec.map_loss), (N, 2P + 3PK) =
    coordinates, then the scores, x offsets and y offsets flattened as (P, K) each (K = H*W), for
    the map loss of facemark.train.losses; with `train_covariance` (train.loss star), (N, 2P + 3P) =
    coordinates, then each point's covariance (GridHead.covariance) flattened; otherwise the
    coordinates, as in eval mode.
    """

    def __init__(self, fine_channels: int, coarse_channels: int | None, grid: tuple[int, int], channels: int,
                 num_points: int, head: str, train_covariance: bool = False) -> None:
        super().__init__()
        if head not in HEADS or HEADS[head].attach != "grid":
            grid_heads = [name for name, spec in HEADS.items() if spec.attach == "grid"]
            raise ValueError(f"GridHead head must be one of {', '.join(grid_heads)}, got {head!r}")
        if train_covariance and HEADS[head].decode != "softmax":
            raise ValueError(f"GridHead train_covariance needs a softmax-decoded head, got {head!r}")
        self.spec, self.num_points, self.grid = HEADS[head], num_points, grid
        self.train_covariance = train_covariance
        self.fine = _conv_bn_relu(fine_channels, channels, 1)
        self.coarse = None if coarse_channels is None else _conv_bn_relu(coarse_channels, channels, 1)
        self.upsample = nn.Upsample(size=grid, mode="nearest")
        self.mix = _conv_bn_relu(channels, channels, 3)
        self.scores = nn.Conv2d(channels, num_points, 1)
        self.offsets = nn.Conv2d(channels, 2 * num_points, 1)
        height, width = grid
        # cell centres in normalised crop coordinates: cell j of W spans [j, j+1) * 2/W - 1
        xs = (torch.arange(width, dtype=torch.float32) + 0.5) * 2.0 / width - 1.0
        ys = (torch.arange(height, dtype=torch.float32) + 0.5) * 2.0 / height - 1.0
        self.register_buffer("centre_x", xs.repeat(height).view(1, 1, -1), persistent=False)
        self.register_buffer("centre_y", ys.repeat_interleave(width).view(1, 1, -1), persistent=False)
        self.cell = (2.0 / width, 2.0 / height)   # one cell in normalised units (x, y)
        nn.init.normal_(self.offsets.weight, std=1e-3)
        nn.init.zeros_(self.offsets.bias)

    @property
    def cells(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def train_columns(self) -> int:
        """The width of the training-mode output (what a data.sets loss splits the heads by)."""
        if self.spec.map_loss:
            return 2 * self.num_points + 3 * self.num_points * self.cells
        return (5 if self.train_covariance else 2) * self.num_points

    def maps(self, fine: torch.Tensor, coarse: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> scores, x offsets, y offsets, each (N, P, K) (offsets in cell units)."""
        fused = self.fine(fine)
        if self.coarse is not None:
            fused = fused + self.upsample(self.coarse(coarse))
        fused = self.mix(fused)
        batch = fused.shape[0]
        scores = self.scores(fused).reshape(batch, self.num_points, self.cells)
        offsets = self.offsets(fused).reshape(batch, 2, self.num_points, self.cells)
        return scores, offsets[:, 0], offsets[:, 1]

    def points(self, scores: torch.Tensor, off_x: torch.Tensor, off_y: torch.Tensor) -> torch.Tensor:
        """Decode (N, P, K) maps -> (N, 2P) normalised crop coordinates (x0, y0, x1, y1, ...)."""
        if self.spec.decode == "argmax":
            weights = (scores == scores.amax(dim=2, keepdim=True)).to(scores.dtype)
            weights = weights / weights.sum(dim=2, keepdim=True)
        else:
            weights = torch.softmax(scores, dim=2)
        x = (weights * (self.centre_x + off_x * self.cell[0])).sum(dim=2)
        y = (weights * (self.centre_y + off_y * self.cell[1])).sum(dim=2)
        return torch.stack([x, y], dim=2).flatten(1)

    def covariance(self, scores: torch.Tensor, off_x: torch.Tensor, off_y: torch.Tensor) -> torch.Tensor:
        """(N, P, K) maps -> (N, P, 3): per point the covariance (xx, xy, yy), in normalised crop
        units squared, of the integral decoding's cell points (centre plus offsets) under the
        softmax weights, about the decoded point: the shape of the head's belief about the point."""
        weights = torch.softmax(scores, dim=2)
        x, y = self.centre_x + off_x * self.cell[0], self.centre_y + off_y * self.cell[1]
        dx = x - (weights * x).sum(dim=2, keepdim=True)
        dy = y - (weights * y).sum(dim=2, keepdim=True)
        return torch.stack([(weights * dx * dx).sum(dim=2), (weights * dx * dy).sum(dim=2),
                            (weights * dy * dy).sum(dim=2)], dim=2)

    def spread(self, scores: torch.Tensor, off_x: torch.Tensor, off_y: torch.Tensor) -> torch.Tensor:
        """(N, P, K) maps -> (N, P): the root-mean-square distance, in normalised crop units, of the
        integral decoding's cell points from the decoded point (the root of the covariance's trace).
        Small when the head puts its mass on one place: its confidence in that point."""
        covariance = self.covariance(scores, off_x, off_y)
        return (covariance[..., 0] + covariance[..., 2]).sqrt()

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor | None = None) -> torch.Tensor:
        scores, off_x, off_y = self.maps(fine, coarse)
        coords = self.points(scores, off_x, off_y)
        if not self.training:
            return coords
        if self.spec.map_loss:
            return torch.cat([coords, scores.flatten(1), off_x.flatten(1), off_y.flatten(1)], dim=1)
        if self.train_covariance:
            return torch.cat([coords, self.covariance(scores, off_x, off_y).flatten(1)], dim=1)
        return coords


class GridLandmarkNet(nn.Module):
    """A timm backbone cut after its last tapped block (no pooling, no classifier) and a GridHead on
    its stride-16 [and stride-32] feature maps; (N, 3, S, S) normalised input -> GridHead's output.
    `indices` are timm's forward_intermediates indices: of every block when `extra_blocks`, else of
    its feature_info stages."""

    def __init__(self, backbone: nn.Module, head: GridHead, indices: tuple[int, ...], extra_blocks: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.indices = list(indices)
        self.extra_blocks = extra_blocks

    @staticmethod
    def tap_options(extra_blocks: bool) -> dict[str, bool]:
        """timm's prune_intermediate_layers / forward_intermediates keywords for these taps (only
        models that take extra_blocks are given it)."""
        return {"extra_blocks": True} if extra_blocks else {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_intermediates(images, indices=self.indices, intermediates_only=True,
                                                       **self.tap_options(self.extra_blocks))
        return self.head(*features)


class SchemeHeadsNet(GridLandmarkNet):
    """A GridLandmarkNet with one more GridHead per extra landmark scheme (data.sets) on the same
    backbone taps. Eval mode returns the main head's (N, 2P) alone, so eval, validate and export
    see the main scheme's model; training mode returns every head's training output concatenated,
    main first, then `extra` in order (N, sum of GridHead.train_columns: 2P each, 5P with the
    covariance of train.loss star), split by facemark.train.multiset.
    `scheme_view(name)` is the GridLandmarkNet of one extra scheme, sharing these modules."""

    def __init__(self, backbone: nn.Module, head: GridHead, indices: tuple[int, ...], extra_blocks: bool,
                 extra: dict[str, GridHead]) -> None:
        super().__init__(backbone, head, indices, extra_blocks)
        self.extra_heads = nn.ModuleDict(extra)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_intermediates(images, indices=self.indices, intermediates_only=True,
                                                       **self.tap_options(self.extra_blocks))
        main = self.head(*features)
        if not self.training:
            return main
        return torch.cat([main, *(head(*features) for head in self.extra_heads.values())], dim=1)

    def read_heads(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every head's (N, 2P) points and (N, P) spread (GridHead.spread), the main head first,
        then the extra heads in order, from one pass of the backbone (what a self-training teacher reads)."""
        features = self.backbone.forward_intermediates(images, indices=self.indices, intermediates_only=True,
                                                       **self.tap_options(self.extra_blocks))
        read = []
        for head in (self.head, *self.extra_heads.values()):
            maps = head.maps(*features)
            read.append((head.points(*maps), head.spread(*maps)))
        return read

    def scheme_view(self, name: str | None = None) -> GridLandmarkNet:
        """The one-scheme model of extra scheme `name` (None: the main scheme's), sharing modules."""
        head = self.head if name is None else self.extra_heads[name]
        view = GridLandmarkNet(self.backbone, head, tuple(self.indices), self.extra_blocks)
        view.weights_source = getattr(self, "weights_source", None)
        return view.train(self.training)


class RealNVP(nn.Module):
    """A 2-D RealNVP normalising flow (Dinh et al. 2017), the residual density of RLE: three pairs of
    affine couplings, each scale/translation an MLP of 64 units, over a standard normal prior."""

    def __init__(self, couplings: int = 6, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("masks", torch.tensor([[0.0, 1.0], [1.0, 0.0]] * (couplings // 2)))
        self.scale = nn.ModuleList(self._mlp(hidden, nn.Tanh()) for _ in range(couplings))
        self.shift = nn.ModuleList(self._mlp(hidden) for _ in range(couplings))

    @staticmethod
    def _mlp(hidden: int, last: nn.Module | None = None) -> nn.Sequential:
        layers = [nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 2)]
        for layer in layers[::2]:   # near-identity start: the flow begins as the prior
            nn.init.xavier_uniform_(layer.weight, gain=0.01)
            nn.init.zeros_(layer.bias)
        return nn.Sequential(*layers, *([last] if last is not None else []))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(M, 2) samples -> (M,) log density under the flow."""
        log_det, z = x.new_zeros(x.shape[0]), x
        for mask, scale, shift in reversed(list(zip(self.masks, self.scale, self.shift))):
            kept = mask * z
            s, t = scale(kept) * (1 - mask), shift(kept) * (1 - mask)
            z = (1 - mask) * (z - t) * torch.exp(-s) + kept
            log_det = log_det - s.sum(dim=1)
        return -0.5 * (z ** 2).sum(dim=1) - math.log(2 * math.pi) + log_det


class RleLinear(nn.Linear):
    """The regression Linear with RLE's training-only parts (Li et al., ICCV 2021): a second Linear
    predicting each coordinate's scale sigma, and the residual flow. Eval mode is the plain Linear,
    so the exported graph is the one without RLE; training mode returns (N, 2P + 2P) = coordinates
    then sigma logits, for facemark.train.losses.RleLoss."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features)
        self.sigma = nn.Linear(in_features, out_features)
        self.flow = RealNVP()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        coords = super().forward(features)
        return torch.cat([coords, self.sigma(features)], dim=1) if self.training else coords


def with_rle(model: nn.Module) -> RleLinear:
    """Swap the model's final regression Linear (timm classifier or SpatialHead.fc) for an RleLinear
    of the same shape -> that RleLinear."""
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    owner = getattr(model, classifier)
    owner, name = (owner, "fc") if isinstance(owner, SpatialHead) else (model, classifier)
    linear = getattr(owner, name)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{type(linear).__name__} is not a Linear")
    rle = RleLinear(linear.in_features, linear.out_features)
    setattr(owner, name, rle)
    return rle
