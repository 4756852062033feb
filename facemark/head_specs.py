"""The landmark heads (model.head) as one table: how each attaches to the backbone, decodes and trains.

Every other place that depends on the head reads HEADS: the config's choices, build_model's
attachment (facemark.model), GridHead's decoding and training output (facemark.heads), the
training loss (facemark.train.losses) and the data.sets rule (facemark.config). A new head is one
row here, plus its decoder in facemark.heads when it needs a new one. This module is a leaf
(stdlib only): the config reads it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class HeadSpec:
    """One model.head.

    attach: "pool" keeps timm's global pool -> Linear(2P) (the paper's head); "spatial" replaces
    them with facemark.heads.SpatialHead (a 1x1 conv, then one Linear over every position of the
    last feature map); "grid" cuts the backbone at stride 16 under a facemark.heads.GridHead (per
    point score maps and cell offsets). decode (grid heads): "argmax", the best cell's centre plus
    its offsets (PIPNet); "softmax", the score-weighted mean of every cell's point (soft-argmax).
    map_loss: it trains on its maps (PipMapLoss: one-hot scores, the true cell's offsets) instead
    of train.loss on the coordinates. multi_scheme: it can carry one head per data.sets scheme.
    """

    name: str
    attach: str
    decode: str | None = None
    map_loss: bool = False
    multi_scheme: bool = False

    @property
    def regression(self) -> bool:
        """Its coordinates come from a Linear, which train.loss rle extends with sigma and a flow."""
        return self.attach != "grid"


HEADS: dict[str, HeadSpec] = {spec.name: spec for spec in (
    HeadSpec("pool", "pool"),
    HeadSpec("spatial", "spatial"),
    HeadSpec("pip", "grid", decode="argmax", map_loss=True),
    HeadSpec("integral", "grid", decode="softmax", multi_scheme=True),
)}
