"""Video clips with ground truth (facemark/video_clips.py) and the lag metric (metrics.trajectory_lag):
a delayed copy of a path lags by its delay (to a fraction of a frame), the moving clip's truth is the
photo's landmarks through each frame's affine, the still clip's noise has the asked sigma, the
truth itself scores zero, and the clip detector answers only for its own frames."""

from __future__ import annotations

import numpy as np
import pytest

from drawn_faces import draw_face
from facemark.codec import apply_affine, landmark_box
from facemark.errors import DataError
from facemark.metrics import trajectory_lag
from facemark.schemes import load_scheme
from facemark.video_clips import ClipDetector, moving_clip, path_affines, score, still_clip


def _path(frames: int, delay: float) -> np.ndarray:
    """(frames, 3, 2) points moving along slow sines, `delay` frames late."""
    t = np.arange(frames) - delay
    centre = np.stack([40 * np.sin(2 * np.pi * t / 40), 25 * np.sin(2 * np.pi * t / 27 + 1)], axis=1)
    return centre[:, None, :] + np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


@pytest.mark.parametrize("delay", [0.0, 2.0, 0.5, -1.0])
def test_lag_of_a_delayed_path_is_its_delay(delay):
    assert trajectory_lag(_path(90, delay), _path(90, 0.0)) == pytest.approx(delay, abs=0.1)


def test_lag_needs_long_equal_trajectories():
    with pytest.raises(DataError, match="more than 12 frames"):
        trajectory_lag(_path(10, 0.0), _path(10, 0.0))


def test_moving_clip_truth_follows_the_frames_affines():
    bgr, points = draw_face(5)
    clip = moving_clip(bgr[:, :, ::-1].copy(), points, 20)
    affines = path_affines(20, points.mean(axis=0), (bgr.shape[1], bgr.shape[0]), 0.08, 10.0, 0.15, 1.5)
    np.testing.assert_allclose(clip.truth, np.stack([apply_affine(points, m) for m in affines]))
    assert clip.frames.shape == (20, *bgr.shape) and np.abs(np.diff(clip.truth, axis=0)).max() > 0.5
    np.testing.assert_allclose(affines[0], [[1, 0, 0], [0, 1, 0.08 * bgr.shape[0] * np.sin(1.0)]], atol=1e-9)


def test_still_clip_noise_and_a_perfect_prediction_scores_zero():
    bgr, points = draw_face(6)
    clip = still_clip(np.full_like(bgr, 128), points, 16, noise=3.0, seed=0)
    assert clip.frames.std() == pytest.approx(3.0, rel=0.05)
    figures = score(clip.truth, clip, load_scheme("lapa106"), lag=False)
    assert figures == {"jitter": 0.0, "nme": 0.0, "lag": None, "found": 16}
    missing = clip.truth.copy()
    missing[3] = np.nan
    assert score(missing, clip, load_scheme("lapa106"), lag=True)["found"] == 15


def test_clip_detector_answers_for_its_own_frames_only():
    bgr, points = draw_face(7)
    clip = moving_clip(bgr[:, :, ::-1].copy(), points, 16)
    detect = ClipDetector(clip)
    boxes = [detect(frame) for frame in clip.frames]
    for found, truth in zip(boxes, clip.truth):
        if found:   # a simulated miss now and then, as MTCNN's
            tight = landmark_box(truth)
            assert np.abs(found[0][0] - tight).max() < 0.3 * (tight[2] - tight[0])
    assert detect(clip.frames[4])[0][0].tolist() == boxes[4][0][0].tolist()   # seeded per frame
    with pytest.raises(ValueError, match="not a frame of its clip"):
        detect(np.zeros_like(clip.frames[0]))
