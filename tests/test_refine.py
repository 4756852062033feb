"""Test-time refinement (facemark/runtime/refine.py) with predictors whose answers are known exactly:
flip averaging of a flip-equivariant predictor, the landmark-box second pass of a fixed and of a
perfect predictor, the settings' rules and where they are recorded."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from facemark import codec
from facemark.config import load_config
from facemark.errors import ConfigError
from facemark.manifest import new_manifest
from facemark.runtime.refine import Refinement, from_config, from_manifest, infer_settings
from facemark.schemes import load_scheme
from facemark.weights import IMAGENET

SIZE, MARGIN = 64, 0.2
SCHEME = load_scheme("ibug68")
RNG_SEED = 5


def refinement(flip: bool, passes: int) -> Refinement:
    return Refinement(flip, passes, SCHEME.flip, SIZE, MARGIN)


def symmetric_shape(seed: int = RNG_SEED) -> np.ndarray:
    """(P, 2) normalised points equal to their own mirror image (x -> -x, renumbered by flip)."""
    shape = np.random.default_rng(seed).uniform(-0.6, 0.6, (SCHEME.num_points, 2))
    mirrored = shape[list(SCHEME.flip)] * np.array([-1.0, 1.0])
    return (shape + mirrored) / 2


def centroid_predictor(shape: np.ndarray):
    """A predictor that is exactly flip-equivariant: `shape` moved by the crop's brightness centroid
    (normalised units, pixel centres at integers, so a mirrored crop's centroid is x -> -x - 2/S)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]

    def predict(crops: np.ndarray) -> np.ndarray:
        weight = crops.astype(np.float64).sum(axis=-1)
        total = weight.sum(axis=(1, 2))
        centre = np.stack([(weight * xs).sum(axis=(1, 2)) / total, (weight * ys).sum(axis=(1, 2)) / total], -1)
        return shape[None] + codec.normalise(centre, SIZE)[:, None, :]

    return predict


def test_flip_of_a_flip_equivariant_predictor_is_the_single_pass():
    crops = np.random.default_rng(RNG_SEED).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    crops[:, 10:30, 2:20] = 255   # a bright patch off the centre: the mirror moves the centroid
    predict = centroid_predictor(symmetric_shape())
    matrices = np.repeat(np.eye(2, 3)[None], 3, axis=0)
    plain = refinement(False, 1).run(predict, crops, matrices)
    flipped = refinement(True, 1).run(predict, crops, matrices)
    np.testing.assert_allclose(flipped, plain, atol=1e-12)
    # not a trivial agreement: the mirrored crop's raw answer is elsewhere
    assert np.abs(predict(crops[:, :, ::-1]) - plain).max() > 0.05


def test_flip_averages_the_unmirrored_points_by_hand():
    rng = np.random.default_rng(RNG_SEED)
    crops = rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    answers = rng.uniform(-1, 1, (4, SCHEME.num_points, 2))
    calls = []

    def predict(batch):
        calls.append(batch.copy())
        return answers

    out = refinement(True, 1).run(predict, crops, np.repeat(np.eye(2, 3)[None], 2, axis=0))
    np.testing.assert_array_equal(calls[0][2:], crops[:, :, ::-1])   # one call: plain, then mirrored
    mirrored_px = codec.denormalise(answers[2:], SIZE)
    expected_px = (codec.denormalise(answers[:2], SIZE) +
                   np.stack([SIZE - 1 - mirrored_px[..., 0], mirrored_px[..., 1]], -1)[:, list(SCHEME.flip)]) / 2
    np.testing.assert_allclose(codec.denormalise(out, SIZE), expected_px, atol=1e-12)


def face_box_shape() -> np.ndarray:
    """A fixed answer whose tight box is the crop's own face box (the square of side S / (1 + margin)),
    so the landmark-box crop of its landmarks is the first crop again."""
    shape = symmetric_shape()
    low, high = shape.min(axis=0), shape.max(axis=0)
    return (shape - low) / (high - low) * (2 / (1 + MARGIN)) - 1 / (1 + MARGIN)


def test_second_pass_of_a_fixed_predictor_reaches_its_fixed_point():
    image = np.random.default_rng(RNG_SEED).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    box = np.array([30.0, 20.0, 70.0, 60.0])   # square: its landmark box is itself
    matrix = codec.crop_matrix(box, SIZE, MARGIN)
    crops = codec.warp_crop(image, matrix, SIZE)[None]
    shape = face_box_shape()
    trace = []
    out = refinement(False, 3).run(lambda c: np.repeat(shape[None], len(c), 0), crops, matrix[None], [image],
                                   trace=trace)
    np.testing.assert_allclose(out[0], shape, atol=1e-9)
    assert len(trace) == 3
    for later in trace[1:]:
        np.testing.assert_allclose(later.matrices[0], matrix, atol=1e-9)
        np.testing.assert_array_equal(later.crops[0], crops[0])


def coordinate_image(height: int = 160, width: int = 200) -> np.ndarray:
    """R = x + 40 and G = y + 40 at each pixel: a crop's pixels say exactly where they were sampled
    (bilinear interpolation of a linear ramp is exact up to uint8 rounding); black is 'outside'."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs + 40, ys + 40, np.full_like(xs, 255)], -1).astype(np.uint8)


def oracle(truth: np.ndarray):
    """A perfect predictor for coordinate_image crops: fits each crop's crop -> image affine from its
    pixels and answers the true (P, 2) image points in that crop's normalised coordinates (mirrored
    crops included)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]

    def predict(crops: np.ndarray) -> np.ndarray:
        out = []
        for crop in crops:
            inside = crop[..., 2] == 255
            design = np.stack([xs[inside], ys[inside], np.ones(inside.sum())], -1)
            target = crop[inside][:, :2].astype(np.float64) - 40
            crop_to_image = np.linalg.lstsq(design, target, rcond=None)[0].T
            # a mirrored crop shows a mirrored face: its point i is the real point flip[i]
            points = truth[list(SCHEME.flip)] if np.linalg.det(crop_to_image[:, :2]) < 0 else truth
            out.append(codec.normalise(codec.apply_affine(points, codec.invert_affine(crop_to_image)), SIZE))
        return np.stack(out)

    return predict


def test_second_crop_of_a_perfect_predictor_is_the_training_landmark_box_crop():
    truth = np.random.default_rng(RNG_SEED).uniform([70, 50], [130, 110], (SCHEME.num_points, 2))
    image = coordinate_image()
    detector_box = np.array([55.0, 45.0, 150.0, 125.0])   # looser and off-centre: the first pass is not the answer
    matrix = codec.crop_matrix(detector_box, SIZE, MARGIN)
    trace = []
    out = refinement(True, 2).run(oracle(truth), codec.warp_crop(image, matrix, SIZE)[None], matrix[None], [image],
                                  trace=trace)
    training_crop = codec.crop_matrix(codec.landmark_box(truth), SIZE, MARGIN)   # train/augment.py's landmark box
    np.testing.assert_allclose(trace[1].matrices[0], training_crop, rtol=1e-3, atol=1e-2)
    # cv2 samples at 1/32 px and the ramp is rounded to uint8: the oracle reads ~0.02 px off
    np.testing.assert_allclose(codec.to_image(out, matrix[None], SIZE)[0], truth, atol=0.05)


def test_settings_rules_and_overrides():
    with pytest.raises(ConfigError, match=r"'infer.passes' must be an integer from 1 to 8, got 0"):
        load_config(overrides=["infer.passes=0"])
    assert infer_settings(None, None, "eval", "x").__dict__ == {"flip": False, "passes": 1}
    assert infer_settings({"flip": True, "passes": 2, "model_calls": 4}, ["infer.passes=3"], "eval", "x").passes == 3
    with pytest.raises(ConfigError, match="only infer.\\* keys"):
        infer_settings(None, ["train.lr=1"], "predict", "x")
    with pytest.raises(ConfigError, match="manifest.json: 'infer.flip' expects bool"):
        infer_settings({"flip": "yes"}, None, "validate", "manifest.json")
    assert [refinement(f, p).label for f, p in ((False, 1), (True, 1), (False, 2), (True, 3))] == \
        ["1 pass", "flip", "2 passes", "flip + 3 passes"]
    assert refinement(True, 3).model_calls == 6 and not refinement(False, 1).active


def test_manifest_records_the_settings_and_reads_them_back(tmp_path):
    cfg = load_config(overrides=["data.scheme=ibug68", "infer.flip=true", "infer.passes=2", "model.pretrained=false"])
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"weights")
    manifest = new_manifest(cfg, SCHEME.facts(), checkpoint, IMAGENET)
    infer = manifest.contract.infer
    assert infer.flip is True and infer.passes == 2
    assert infer.model_calls == 4 and infer.flip_permutation == tuple(SCHEME.flip)
    assert from_manifest(manifest.contract, None, "validate", "m") == from_config(cfg)
    assert from_manifest(manifest.contract, ["infer.flip=false"], "validate", "m").label == "2 passes"
    before = dataclasses.replace(manifest.contract, infer=None)   # a manifest from before the refinement
    assert from_manifest(before, None, "predict", "m").label == "1 pass"


def test_non_finite_landmarks_stop_a_later_pass_with_a_clear_error():
    from facemark.errors import ArtifactError

    image = np.zeros((80, 80, 3), np.uint8)
    matrix = codec.crop_matrix(np.array([10.0, 10.0, 70.0, 70.0]), SIZE, MARGIN)
    nan = np.full((1, SCHEME.num_points, 2), np.nan)
    with pytest.raises(ArtifactError, match="not finite"):
        refinement(False, 2).run(lambda c: nan, codec.warp_crop(image, matrix, SIZE)[None], matrix[None], [image])
