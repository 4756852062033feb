"""The One Euro filter's arithmetic (facemark/filters.py): first sample passed through, a constant
converges, beta 0 is a first-order low-pass at min_cutoff, a step is followed within a few frames
with beta and far more slowly without, noise is cut, speeds are in face sizes (scale invariance)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from facemark.filters import NoFilter, OneEuroFilter, create_filter, smoothing_factor

FPS = 30.0


def run(filt, values: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """(T, P, 2) samples at FPS -> (T, P, 2) outputs."""
    return np.stack([filt(v, i / FPS, scale) for i, v in enumerate(values)])


def test_first_sample_passes_and_a_constant_converges():
    values = np.concatenate([np.zeros((1, 3, 2)), np.full((59, 3, 2), 10.0)])
    out = run(OneEuroFilter(1.0, 0.0, 1.0), values)
    np.testing.assert_array_equal(out[0], values[0])
    assert abs(out[-1] - 10.0).max() < 0.01          # 2 s at a 1 Hz cutoff: within 0.1 %
    assert np.all(np.diff(out[:, 0, 0]) >= 0)        # a low-pass never overshoots a step


def test_beta_zero_is_a_first_order_low_pass_at_min_cutoff():
    out = run(OneEuroFilter(2.0, 0.0, 1.0), np.stack([np.zeros((1, 2)), np.ones((1, 2)), np.ones((1, 2))]))
    alpha = 1.0 / (1.0 + FPS / (2 * math.pi * 2.0))
    assert smoothing_factor(2.0, 1 / FPS) == pytest.approx(alpha)
    np.testing.assert_allclose(out[1], alpha)
    np.testing.assert_allclose(out[2], alpha + alpha * (1 - alpha))


def test_a_step_is_followed_within_a_few_frames_with_beta_not_without():
    """A 50 px jump of a 100 px face: beta opens the cutoff with the speed."""
    values = np.concatenate([np.zeros((5, 1, 2)), np.full((30, 1, 2), 50.0)])

    def frames_to_90_percent(beta: float) -> int:
        out = run(OneEuroFilter(1.0, beta, 1.0), values)[5:, 0, 0]
        return int(np.argmax(out >= 45.0))

    assert frames_to_90_percent(10.0) <= 3
    assert frames_to_90_percent(0.0) >= 10


def test_still_noise_is_cut_and_moving_lag_stays_small():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, (120, 5, 2))
    still = run(OneEuroFilter(1.0, 10.0, 1.0), noise)
    raw_jitter = np.sqrt((np.diff(noise, axis=0) ** 2).mean())
    assert np.sqrt((np.diff(still[30:], axis=0) ** 2).mean()) < raw_jitter / 4
    ramp = np.arange(60.0)[:, None, None] * np.array([3.0, 0.0])   # 3 px per frame = 0.9 face sizes / s
    moving = run(OneEuroFilter(1.0, 10.0, 1.0), ramp + noise[:60])
    lag_px = (ramp - moving)[30:, :, 0].mean()
    assert 0.0 < lag_px < 3.0                                         # under one frame of motion


def test_speed_in_face_sizes_makes_the_filter_scale_invariant():
    rng = np.random.default_rng(1)
    path = np.cumsum(rng.normal(0.0, 2.0, (40, 4, 2)), axis=0)
    small = run(OneEuroFilter(1.0, 5.0, 1.0), path, scale=50.0)
    large = run(OneEuroFilter(1.0, 5.0, 1.0), path * 3.0, scale=150.0)
    np.testing.assert_allclose(large, small * 3.0, rtol=1e-9, atol=1e-9)


def test_reset_restarts_and_times_must_increase():
    filt = OneEuroFilter(1.0, 0.0, 1.0)
    filt(np.zeros((1, 2)), 0.0, 10.0)
    with pytest.raises(ValueError, match="increase"):
        filt(np.ones((1, 2)), 0.0, 10.0)
    filt.reset()
    np.testing.assert_array_equal(filt(np.ones((1, 2)), 0.0, 10.0), np.ones((1, 2)))


def test_factory_by_name():
    cfg = SimpleNamespace(filter="none", min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    assert isinstance(create_filter(cfg), NoFilter)
    assert isinstance(create_filter(SimpleNamespace(**{**vars(cfg), "filter": "one_euro"})), OneEuroFilter)
    with pytest.raises(ValueError, match="one_euro, none"):
        create_filter(SimpleNamespace(**{**vars(cfg), "filter": "kalman"}))
