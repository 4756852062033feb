"""Temporal filters for landmarks on video: the One Euro filter (Casiez, Roussel, Vogel, CHI 2012).

A filter takes one face's (P, 2) image-pixel landmarks per frame with the frame's time in seconds
and the face's size in pixels, and returns the (P, 2) filtered landmarks in image pixels. Built by
name from FILTERS (base.yaml `predict.filter`); android-demo/core's OneEuroFilter.java is the
same arithmetic, checked on a recorded sequence (tests/test_android_core.py).

One Euro: a first-order low-pass per coordinate whose cutoff rises with the coordinate's speed,
cutoff = min_cutoff + beta * |speed|. A still face gets min_cutoff (Hz), which removes sensor-noise
jitter; a moving face gets a high cutoff, hence little lag. The speed is itself low-passed at
d_cutoff (Hz) so the noise does not open the filter. PyPI's `oneeurofilter` (0.2.1) filters one
scalar per call in pure Python and knows no face size; 212 coordinates per frame and the Java
mirror want the short vectorised form below.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np


class PointFilter(Protocol):
    def __call__(self, points: np.ndarray, time_s: float, scale: float) -> np.ndarray:
        """(P, 2) image pixels at `time_s` of a face `scale` pixels large -> (P, 2) filtered."""

    def reset(self) -> None:
        """Forget the past: the next call starts a new trajectory (a new or re-acquired face)."""


def smoothing_factor(cutoff_hz: float | np.ndarray, dt_s: float) -> float | np.ndarray:
    """The exponential smoothing factor alpha of a first-order low-pass at `cutoff_hz`, sampled every dt_s."""
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """One Euro on every coordinate of (P, 2) points, all in float64.

    The speed is measured in face sizes per second (pixel speed / `scale`, the face's size in
    pixels): a face twice as large moves twice as many pixels for the same head motion, so with
    pixel speeds one beta would be too eager on close faces and too sluggish on far ones.
    """

    def __init__(self, min_cutoff: float, beta: float, d_cutoff: float) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._points: np.ndarray | None = None   # (P, 2) last output
        self._speed: np.ndarray | None = None    # (P, 2) low-passed speed, pixels per second
        self._time = 0.0

    def __call__(self, points: np.ndarray, time_s: float, scale: float) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if self._points is None:
            self._points, self._speed, self._time = points.copy(), np.zeros_like(points), time_s
            return points.copy()
        dt = time_s - self._time
        if not dt > 0:
            raise ValueError(f"frame times must increase: {time_s} after {self._time}")
        speed = (points - self._points) / dt
        self._speed = self._speed + smoothing_factor(self.d_cutoff, dt) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed) / max(scale, 1.0)
        self._points = self._points + smoothing_factor(cutoff, dt) * (points - self._points)
        self._time = time_s
        return self._points.copy()


class NoFilter:
    """`predict.filter: none`: the raw landmarks."""

    def __call__(self, points: np.ndarray, time_s: float, scale: float) -> np.ndarray:
        return np.array(points, dtype=np.float64)

    def reset(self) -> None:
        pass


FILTERS = {"one_euro": lambda cfg: OneEuroFilter(cfg.min_cutoff, cfg.beta, cfg.d_cutoff),
           "none": lambda cfg: NoFilter()}


def create_filter(cfg) -> PointFilter:
    """The filter base.yaml's predict section names (cfg: PredictConfig: filter, min_cutoff, beta, d_cutoff)."""
    if cfg.filter not in FILTERS:
        raise ValueError(f"unknown filter {cfg.filter!r}; valid: {', '.join(FILTERS)}")
    return FILTERS[cfg.filter](cfg)
