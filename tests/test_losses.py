"""Losses against hand computations, on both branches of Wing."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from facemark.config import load_config
from facemark.errors import ConfigError
from facemark.train.losses import StarLoss, WingLoss, build_loss


def test_mse_is_mean_square_over_coordinates():
    pred = torch.tensor([[0.1, -0.2, 0.3, 0.0]])
    target = torch.tensor([[0.0, 0.0, 0.0, 0.5]])
    cfg = load_config(overrides=["train.loss=mse"]).train
    # (0.01 + 0.04 + 0.09 + 0.25) / 4
    assert build_loss(cfg)(pred, target).item() == pytest.approx(0.0975, abs=1e-7)


def test_wing_small_branch_is_logarithmic():
    loss = WingLoss(w=0.1, epsilon=0.02)
    # |x| = 0.05 < w: 0.1 * ln(1 + 0.05 / 0.02) = 0.1 * ln(3.5)
    value = loss(torch.tensor([0.05]), torch.tensor([0.0])).item()
    assert value == pytest.approx(0.1 * math.log(3.5), rel=1e-6)
    assert value == pytest.approx(0.125276, abs=1e-6)


def test_wing_large_branch_is_linear_with_offset():
    loss = WingLoss(w=0.1, epsilon=0.02)
    # |x| = 0.3 >= w: 0.3 - C, C = 0.1 - 0.1 * ln(1 + 0.1 / 0.02) = 0.1 - 0.1 * ln 6
    expected = 0.3 - (0.1 - 0.1 * math.log(6.0))
    value = loss(torch.tensor([-0.3]), torch.tensor([0.0])).item()
    assert value == pytest.approx(expected, rel=1e-6)
    assert value == pytest.approx(0.379176, abs=1e-6)


def test_wing_mean_over_mixed_branches_and_continuity():
    loss = WingLoss(w=0.1, epsilon=0.02)
    pred = torch.tensor([[0.05, 0.3], [0.0, 0.0]])
    target = torch.zeros(2, 2)
    expected = (0.1 * math.log(3.5) + 0.3 - 0.1 + 0.1 * math.log(6.0)) / 4
    assert loss(pred, target).item() == pytest.approx(expected, rel=1e-6)
    # the two branches meet at |x| = w
    below = loss(torch.tensor([0.1 - 1e-6]), torch.tensor([0.0])).item()
    above = loss(torch.tensor([0.1 + 1e-6]), torch.tensor([0.0])).item()
    assert below == pytest.approx(above, abs=1e-5)


def test_wing_gradient_is_larger_than_l1_for_small_errors():
    loss = WingLoss(w=0.1, epsilon=0.02)
    pred = torch.tensor([0.01], requires_grad=True)
    loss(pred, torch.tensor([0.0])).backward()
    # d/dx w ln(1 + x/eps) = w / (eps + x) = 0.1 / 0.03
    assert pred.grad.item() == pytest.approx(0.1 / 0.03, rel=1e-5)


def test_l1_is_mean_absolute_error_over_coordinates():
    pred = torch.tensor([[0.1, -0.2, 0.3, 0.0]])
    target = torch.tensor([[0.0, 0.0, 0.0, 0.5]])
    # (0.1 + 0.2 + 0.3 + 0.5) / 4, in normalised units
    assert build_loss(load_config(overrides=["train.loss=l1"]).train)(pred, target).item() == pytest.approx(0.275)


def test_smooth_l1_is_quadratic_below_beta_and_linear_above():
    cfg = load_config(overrides=["train.loss=smooth_l1", "train.smooth_l1_beta=0.02"]).train
    loss = build_loss(cfg)
    # |x| = 0.01 < beta: 0.01^2 / (2 * 0.02) = 0.0025; |x| = 0.3 >= beta: 0.3 - 0.01 = 0.29
    assert loss(torch.tensor([0.01]), torch.tensor([0.0])).item() == pytest.approx(0.0025, rel=1e-6)
    assert loss(torch.tensor([-0.3]), torch.tensor([0.0])).item() == pytest.approx(0.29, rel=1e-6)
    assert loss(torch.tensor([[0.01, -0.3]]), torch.zeros(1, 2)).item() == pytest.approx((0.0025 + 0.29) / 2, rel=1e-6)
    # the gradient below beta shrinks with the error (x / beta), above it is 1 like L1
    pred = torch.tensor([0.01, 0.3], requires_grad=True)
    loss(pred, torch.zeros(2)).backward()
    assert pred.grad.tolist() == pytest.approx([0.01 / 0.02 / 2, 1.0 / 2], rel=1e-5)


def test_loss_configuration_errors():
    with pytest.raises(ConfigError, match="'train.loss' star needs model.head integral .* got model.head spatial"):
        load_config(overrides=["train.loss=star", "model.head=spatial"])
    with pytest.raises(ConfigError, match="'train.loss' must be one of mse, wing, smooth_l1, l1, rle, star, got 'huber'"):
        load_config(overrides=["train.loss=huber"])   # refused when the config loads, before build_loss
    with pytest.raises(ConfigError, match="valid: l1, mse, rle, smooth_l1, star, wing"):
        build_loss(dataclasses.replace(load_config().train, loss="huber"))
    with pytest.raises(ConfigError, match="smooth_l1_beta"):
        build_loss(dataclasses.replace(load_config().train, loss="smooth_l1", smooth_l1_beta=0.0))
    with pytest.raises(ConfigError, match="wing_w"):
        build_loss(dataclasses.replace(load_config().train, loss="wing", wing_w=0.0))


def _star_output(mu: tuple[float, float], cov: tuple[float, float, float]) -> torch.Tensor:
    """One point's (1, 5) training output: normalised coordinates, then covariance (xx, xy, yy)."""
    return torch.tensor([[*mu, *cov]], dtype=torch.float64, requires_grad=True)


def test_star_splits_the_error_along_the_distributions_axes_in_crop_widths():
    loss = StarLoss(omega=1.0)
    eps = StarLoss.EPS
    # axis-aligned: variance 0.04 along x, 0.01 along y (normalised units); error (0.1, 0.1)
    value = loss(_star_output((0.1, 0.1), (0.04, 0.0, 0.01)), torch.zeros(1, 2, dtype=torch.float64)).item()
    # crop widths: error 0.05 per axis, variances 0.01 and 0.0025, trace 0.0125
    expected = 0.05 / math.sqrt(0.01 + eps) + 0.05 / math.sqrt(0.0025 + eps) + 0.0125
    assert value == pytest.approx(expected, rel=1e-9)
    # the same distribution turned 45 degrees: an error along its long axis costs less than across it
    a, b = 0.04, 0.01
    turned = ((a + b) / 2, (a - b) / 2, (a + b) / 2)
    along = loss(_star_output((0.1, 0.1), turned), torch.zeros(1, 2, dtype=torch.float64)).item()
    across = loss(_star_output((0.1, -0.1), turned), torch.zeros(1, 2, dtype=torch.float64)).item()
    length = 0.05 * math.sqrt(2)
    assert along == pytest.approx(length / math.sqrt(a / 4 + eps) + (a + b) / 4, rel=1e-9)
    assert across == pytest.approx(length / math.sqrt(b / 4 + eps) + (a + b) / 4, rel=1e-9)


def test_star_gradients_are_finite_where_eigenvalues_meet_and_push_a_point_to_its_target():
    loss = StarLoss(omega=1.0)
    for cov in ((0.02, 0.0, 0.02), (0.0, 0.0, 0.0)):   # isotropic (eigh's backward is infinite there) and collapsed
        output = _star_output((0.1, -0.05), cov)
        loss(output, torch.zeros(1, 2, dtype=torch.float64)).backward()
        assert torch.isfinite(output.grad).all(), cov
        assert output.grad[0, 0] > 0 and output.grad[0, 1] < 0    # descent moves mu towards (0, 0)
    # a wide distribution is penalised by omega x its trace, a wrong point by the scaled error: both pull
    output = _star_output((0.0, 0.0), (0.5, 0.0, 0.5))
    loss(output, torch.zeros(1, 2, dtype=torch.float64)).backward()
    assert output.grad[0, 2] > 0 and output.grad[0, 4] > 0
