"""Landmark schemes: every shipped YAML loads and its flip permutation mirrors the face consistently."""

from __future__ import annotations

import numpy as np
import pytest

from facemark.errors import ConfigError
from facemark.schemes import _from_raw, available_schemes, load_scheme

SHIPPED = {"datatang106": 106, "ibug68": 68, "lapa106": 106, "wflw98": 98}


def test_every_shipped_scheme_loads() -> None:
    assert available_schemes() == sorted(SHIPPED)
    for name, count in SHIPPED.items():
        scheme = load_scheme(name)
        assert scheme.name == name and scheme.num_points == count and len(scheme.flip) == count
        assert sorted(i for idx in scheme.regions.values() for i in idx) == list(range(count))


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_flip_is_an_involution_without_fixed_eyes(name: str) -> None:
    scheme = load_scheme(name)
    flip = np.array(scheme.flip)
    assert (flip[flip] == np.arange(scheme.num_points)).all()
    # an eye point never mirrors onto itself: the eyes are off the symmetry axis
    eyes = np.array(scheme.regions["eyes"])
    assert (flip[eyes] != eyes).all()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_flip_swaps_left_and_right(name: str) -> None:
    scheme = load_scheme(name)
    left, right = scheme.pupils
    assert sorted(scheme.flip[i] for i in left) == sorted(right)
    assert sorted(scheme.flip[i] for i in right) == sorted(left)
    assert (scheme.flip[scheme.corners[0]], scheme.flip[scheme.corners[1]]) == scheme.corners[::-1]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_flip_keeps_every_region(name: str) -> None:
    """A mirrored brow point is a brow point, a mirrored contour point a contour point, ..."""
    scheme = load_scheme(name)
    for region, indices in scheme.regions.items():
        assert sorted(scheme.flip[i] for i in indices) == sorted(indices), region


def _symmetric_face(name: str, width: float, seed: int) -> np.ndarray:
    """(P, 2) points symmetric by construction: each pair mirrored about x = width / 2,
    unpaired points on the axis."""
    scheme = load_scheme(name)
    rng = np.random.default_rng(seed)
    points = np.zeros((scheme.num_points, 2))
    for i, j in enumerate(scheme.flip):
        if i < j:
            x, y = rng.uniform(0, width / 2 - 1), rng.uniform(0, width)
            points[i], points[j] = (x, y), (width - x, y)
        elif i == j:
            points[i] = (width / 2, rng.uniform(0, width))
    return points


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_flip_augmentation_is_consistent(name: str) -> None:
    """Mirroring the image (x -> W - x) and reordering by flip gives back a symmetric face, and
    maps a random face's pupils and corners onto the mirrored other side."""
    scheme, width = load_scheme(name), 64.0
    flip = list(scheme.flip)
    face = _symmetric_face(name, width, seed=1)
    mirrored = face.copy()
    mirrored[:, 0] = width - mirrored[:, 0]
    np.testing.assert_allclose(mirrored[flip], face)

    rng = np.random.default_rng(2)
    random_face = rng.uniform(0, width, (scheme.num_points, 2))
    flipped = random_face.copy()
    flipped[:, 0] = width - flipped[:, 0]
    flipped = flipped[flip]
    pupils, flipped_pupils = scheme.pupil_points(random_face), scheme.pupil_points(flipped)
    np.testing.assert_allclose(flipped_pupils[0], [width - pupils[1, 0], pupils[1, 1]])
    np.testing.assert_allclose(scheme.interpupil(flipped), scheme.interpupil(random_face))
    np.testing.assert_allclose(scheme.intercorner(flipped), scheme.intercorner(random_face))
    # flipping twice is the identity on the points themselves
    twice = flipped.copy()
    twice[:, 0] = width - twice[:, 0]
    np.testing.assert_allclose(twice[flip], random_face)


def test_distances_on_known_points() -> None:
    scheme = load_scheme("ibug68")
    points = np.zeros((2, 68, 2))
    points[:, 36:42] = [10.0, 20.0]      # left eye collapsed to one point
    points[:, 42:48] = [40.0, 60.0]
    points[1] *= 2.0
    np.testing.assert_allclose(scheme.pupil_points(points)[0], [[10, 20], [40, 60]])
    np.testing.assert_allclose(scheme.interpupil(points), [50.0, 100.0])
    np.testing.assert_allclose(scheme.intercorner(points), [50.0, 100.0])


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match=r"unknown landmark scheme 'lapa98'; available: datatang106, "
                                          r"ibug68, lapa106, wflw98$"):
        load_scheme("lapa98")


def _raw(**changes) -> dict:
    raw = {"name": "toy", "num_points": 4, "pupils": [[0], [1]], "corners": [0, 1],
           "regions": {"eyes": [[0, 1]], "rest": [[2, 3]]}, "flip_pairs": [[0, 1]]}
    raw.update(changes)
    return raw


@pytest.mark.parametrize("changes, message", [
    ({"corners": [0, 4]}, r"toy\.yaml: an index is outside 0\.\.3"),
    ({"flip_pairs": [[0, 1], [1, 2]]}, r"toy\.yaml: flip_pairs use an index twice"),
    ({"regions": {"eyes": [[0, 1]], "rest": [[1, 3]]}}, r"toy\.yaml: regions must cover every point"),
])
def test_invalid_scheme_file(changes: dict, message: str) -> None:
    assert _from_raw(_raw(), "toy.yaml").flip == (1, 0, 2, 3)
    with pytest.raises(ConfigError, match=message):
        _from_raw(_raw(**changes), "toy.yaml")
