"""facemark.metrics against values computed by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from facemark import metrics
from facemark.errors import ArtifactError, DataError
from facemark.schemes import Scheme, load_scheme

# 4 points on a line: 0 and 1 are the pupils, 2 and 3 the outer corners.
TINY = Scheme(name="tiny4", num_points=4, pupils=((0,), (1,)), corners=(2, 3),
              regions={"eyes": (0, 1), "other": (2, 3)}, flip=(1, 0, 3, 2))
# iBUG-68 style: no pupil points, each pupil is the mean of a group.
GROUPED = Scheme(name="grouped4", num_points=4, pupils=((0, 1), (2, 3)), corners=(0, 3),
                 regions={"left": (0, 1), "right": (2, 3)}, flip=(3, 2, 1, 0))


def two_faces() -> tuple[np.ndarray, np.ndarray]:
    """Face 0: inter-pupil 10, corners 14, errors (5, 0, 1, 0) -> NME 0.15 / (1.5 / 14).
    Face 1: the same face scaled x2 (inter-pupil 20, corners 28), every point off by 1 -> NME 0.05 / (1 / 28)."""
    gt0 = np.array([[0, 0], [10, 0], [-2, 0], [12, 0]], float)
    pred0 = gt0 + np.array([[3, 4], [0, 0], [0, 1], [0, 0]], float)
    gt1 = gt0 * 2
    pred1 = gt1 + np.array([0.6, 0.8])
    return np.stack([pred0, pred1]), np.stack([gt0, gt1])


def test_nme_pupil_and_corner():
    pred, gt = two_faces()
    np.testing.assert_allclose(metrics.nme(pred, gt, TINY, "pupil"), [0.15, 0.05])
    np.testing.assert_allclose(metrics.nme(pred, gt, TINY, "corner"), [1.5 / 14, 1 / 28])
    np.testing.assert_allclose(metrics.nme(pred, gt, TINY), [0.15, 0.05])  # pupil is the default


def test_nme_grouped_pupils_are_group_means():
    gt = np.array([[[0, 0], [2, 0], [8, 0], [10, 0]]], float)   # pupils (1, 0) and (9, 0): 8 apart
    pred = gt.copy()
    pred[0, 1] += [0, 4]                                         # one point off by 4 -> mean error 1
    np.testing.assert_allclose(metrics.nme(pred, gt, GROUPED, "pupil"), [1 / 8])
    np.testing.assert_allclose(metrics.nme(pred, gt, GROUPED, "corner"), [1 / 10])


def test_nme_ibug68_uses_eye_contour_means():
    rng = np.random.default_rng(0)
    scheme = load_scheme("ibug68")
    gt = rng.uniform(0, 100, (2, 68, 2))
    pred = gt + rng.normal(0, 1, gt.shape)
    left, right = gt[:, 36:42].mean(axis=1), gt[:, 42:48].mean(axis=1)
    expected = np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / np.linalg.norm(left - right, axis=-1)
    np.testing.assert_allclose(metrics.nme(pred, gt, scheme), expected)
    corner = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    np.testing.assert_allclose(metrics.nme(pred, gt, scheme, "corner"),
                               np.linalg.norm(pred - gt, axis=-1).mean(axis=1) / corner)


def test_failure_rate_and_auc_by_hand():
    nmes = np.array([0.15, 0.05])
    assert metrics.failure_rate(nmes, 0.1) == 0.5
    assert metrics.failure_rate(np.array([0.1, 0.05]), 0.1) == 0.0   # exactly at the threshold passes
    # CED is 0 below 0.05 and 0.5 from 0.05 to 0.1: area 0.5 * 0.05 = 0.025, / 0.1 -> 0.25
    assert metrics.auc(nmes, 0.1) == pytest.approx(0.25)
    assert metrics.auc(nmes, 0.08) == pytest.approx(0.5 * 0.03 / 0.08)
    assert metrics.auc(np.zeros(3), 0.1) == pytest.approx(1.0)
    assert metrics.auc(np.full(3, 0.2), 0.1) == 0.0


def test_auc_matches_simpson_on_a_fine_grid():
    from scipy.integrate import simpson

    nmes = np.random.default_rng(1).gamma(4.0, 0.015, 500)
    xs = np.arange(0, 0.1 + 1e-5, 1e-5)
    ys = (nmes[None, :] <= xs[:, None]).mean(axis=1)
    assert metrics.auc(nmes, 0.1) == pytest.approx(simpson(ys, x=xs) / 0.1, abs=1e-3)


def test_ced_fractions():
    xs, fractions = metrics.ced(np.array([0.15, 0.05]), threshold=0.1, steps=5)
    np.testing.assert_allclose(xs, [0, 0.025, 0.05, 0.075, 0.1])
    np.testing.assert_allclose(fractions, [0, 0, 0.5, 0.5, 0.5])


def test_region_nme_by_hand():
    pred, gt = two_faces()
    regions = metrics.region_nme(pred, gt, TINY, "pupil")
    # eyes: face 0 errors (5, 0) / 10 -> 0.25, face 1 (1, 1) / 20 -> 0.05; other: 0.05 and 0.05
    assert regions == pytest.approx({"eyes": 0.15, "other": 0.05})
    corner = metrics.region_nme(pred, gt, TINY, "corner")
    assert corner["eyes"] == pytest.approx((2.5 / 14 + 1 / 28) / 2)


def test_summarize_by_hand():
    pred, gt = two_faces()
    summary = metrics.summarize(pred, gt, TINY)
    assert summary["nme_pupil"] == pytest.approx(0.10)
    assert summary["nme_corner"] == pytest.approx((1.5 / 14 + 1 / 28) / 2)
    assert summary["fr@0.1"] == 0.5 and summary["fr@0.08"] == 0.5
    assert summary["auc@0.1"] == pytest.approx(0.25)
    assert summary["auc@0.08"] == pytest.approx(0.1875)
    # numpy's linear percentile between 0.05 and 0.15
    assert [summary[k] for k in ("p50", "p90", "p95", "p99")] == pytest.approx([0.10, 0.14, 0.145, 0.149])
    assert summary["regions"] == pytest.approx({"eyes": 0.15, "other": 0.05})
    assert summary["count"] == 2
    import json

    json.dumps(summary)  # plain Python numbers only


def test_nan_prediction_is_refused():
    pred, gt = two_faces()
    pred[1, 2, 0] = np.nan
    with pytest.raises(ArtifactError, match=r"NaN/inf for 1 of 2 faces \(first: face 1\)"):
        metrics.nme(pred, gt, TINY)
    with pytest.raises(ArtifactError, match="NaN"):
        metrics.summarize(pred, gt, TINY)
    with pytest.raises(ArtifactError, match="NaN"):
        metrics.auc(np.array([0.1, np.nan]))


def test_bad_inputs_name_the_problem():
    pred, gt = two_faces()
    with pytest.raises(ValueError, match="valid: pupil, corner"):
        metrics.nme(pred, gt, TINY, "ocular")
    with pytest.raises(ArtifactError, match=r"shape \(2, 3, 2\)"):
        metrics.nme(pred[:, :3], gt, TINY)
    with pytest.raises(DataError, match=r"expected \(N, 4, 2\)"):
        metrics.nme(pred[:, :3], gt[:, :3], TINY)
    flat = gt.copy()
    flat[0, 1] = flat[0, 0]   # pupils coincide
    with pytest.raises(DataError, match="pupil distance is zero for 1 faces"):
        metrics.nme(pred, flat, TINY)
    with pytest.raises(ValueError, match="steps"):
        metrics.ced(np.array([0.1]), 0.1, steps=1)
