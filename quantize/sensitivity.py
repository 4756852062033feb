"""Per-layer int8 sensitivity: how much error each layer's quantisation adds, top offenders first.

The measures every format shares: SQNR (signal-to-quantisation-noise ratio, dB: higher is better,
20 dB = noise at a tenth of the signal's amplitude), the order recovery keeps layers in float, and
the share of multiply-adds in int8. The formats: sensitivity_onnx.py (onnxruntime's
qdq_loss_debug) and sensitivity_tflite.py (LiteRT's QuantizationDebugger); the --explain report:
sensitivity_report.py. Each row also carries the layer's multiply-adds (`macs`, batch 1): a layer
left in float costs its MACs of the int8 budget (quantize.mixed_min_int8_macs).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


# SQNR of a tensor that is exactly reproduced (no noise): reported as this, not infinity
EXACT_DB = 99.0
# channels with less than this fraction of the strongest channel's power (amplitude 1/30000) are left out of the
# per-channel SQNR (measured: near-empty squeeze-excite channels gave -700 dB otherwise)
CHANNEL_FLOOR = 1e-9


def sqnr_db(reference: np.ndarray, actual: np.ndarray, channel_axis: int | None = None) -> float:
    """10 log10(signal power / noise power) of `actual` against `reference`, in dB (EXACT_DB when
    the noise is zero). With `channel_axis`, each channel's noise is taken relative to its own
    signal and the ratios averaged (in linear units, so one ruined channel is not hidden by good
    ones): one activation scale shared by channels of very different ranges rounds the small
    channels to nothing, which the whole-tensor figure (dominated by the large channels) misses."""
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    if channel_axis is not None and reference.ndim > 1:
        axes = tuple(i for i in range(reference.ndim) if i != channel_axis % reference.ndim)
        signal, noise = np.sum(reference ** 2, axis=axes), np.sum((reference - actual) ** 2, axis=axes)
        # a channel (nearly) zero in float has no scale to be ruined by: its ratio would be noise / 0
        live = signal > CHANNEL_FLOOR * signal.max()
        # each channel's noise/signal capped at 1 (0 dB: the channel is gone; worse says no more),
        # so a channel of one tiny value (a squeeze-excite gate of one image) cannot swamp the mean
        ratio = float(np.mean(np.minimum(noise[live] / signal[live], 1.0))) if live.any() else float(np.sum(noise) > 0)
        return _db(1.0, ratio)
    return _db(float(np.sum(reference ** 2)), float(np.sum((reference - actual) ** 2)))


def _db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return EXACT_DB
    if signal == 0.0:
        return 0.0
    return round(max(-EXACT_DB, min(EXACT_DB, 10.0 * math.log10(signal / noise))), 3)


def recovery_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order recovery keeps layers in float: largest accumulated-SQNR loss first (damage_db),
    the own-SQNR ranking for rows without one (TFLite)."""
    if any(r.get("damage_db") is not None for r in rows):
        return sorted(rows, key=lambda r: -(r.get("damage_db") or 0.0))
    return rows


def keep_float(producer: str, consumers: list[str], macs: dict[str, int]) -> dict[str, Any]:
    """What keeping one activation in float takes: its producer and every consumer out of int8 (an
    int8 consumer would quantise it again on its way in) -> {"exclude": names, "exclude_macs"}."""
    names = list(dict.fromkeys([producer, *consumers]))
    return {"exclude": names, "exclude_macs": int(sum(macs.get(n, 0) for n in names))}


def decode_tail(ops: list[tuple[str, list[str], list[str]]], mac_ops: set[str]) -> list[str]:
    """Names of the ops, of (name, input tensors, output tensors) in graph order, that no
    multiply-add op (`mac_ops`) depends on: what follows the model's last conv or matmul, such as a
    grid head's softmax and soft-argmax (facemark.heads). quantize.float_decode keeps them in float:
    they cost no multiply-adds, and int8 rounding there (softmax probabilities in 1/256 steps, a
    weighted sum of 100 cells rounded again) reaches the landmarks with nothing after it to absorb it."""
    feeds: set[str] = set()   # tensors a multiply-add op reads, directly or through other ops
    upstream: set[str] = set()
    for name, inputs, outputs in reversed(ops):
        if name in mac_ops or feeds.intersection(outputs):
            feeds.update(inputs)
            upstream.add(name)
    return [name for name, _, _ in ops if name and name not in upstream]


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst first: lowest own SQNR, ties broken by the accumulated SQNR."""
    return sorted(rows, key=lambda r: (r["sqnr_db"], r.get("xmodel_sqnr_db") or EXACT_DB))


def int8_mac_fraction(macs: dict[str, int], int8_layers: set[str]) -> float:
    """Share of the model's multiply-adds computed in int8 (1.0 when nothing has MACs)."""
    total = sum(macs.values())
    return 1.0 if total == 0 else sum(m for name, m in macs.items() if name in int8_layers) / total
