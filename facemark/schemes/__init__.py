"""Landmark schemes as data: one YAML per scheme in this folder, loaded into a `Scheme`.

A scheme gives the point count, the pupils (each the mean of a group of indices, so a scheme
without pupil points such as iBUG 68 uses the eye contour), the outer eye corners, named regions
and the horizontal-flip permutation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

from facemark.contract import SchemeFacts
from facemark.errors import ConfigError


@dataclass(frozen=True)
class Scheme:
    name: str
    num_points: int
    pupils: tuple[tuple[int, ...], tuple[int, ...]]   # index groups: image-left, image-right
    corners: tuple[int, int]                           # outer eye corners: image-left, image-right
    regions: dict[str, tuple[int, ...]]                # region name -> point indices
    flip: tuple[int, ...]                              # flip[i] = index of i's mirror point

    def pupil_points(self, points: np.ndarray) -> np.ndarray:
        """(..., P, 2) landmarks -> (..., 2, 2): image-left and image-right pupil positions."""
        return np.stack([points[..., list(group), :].mean(axis=-2) for group in self.pupils], axis=-2)

    def interpupil(self, points: np.ndarray) -> np.ndarray:
        """(..., P, 2) -> (...,) inter-pupil distance in the points' units."""
        pupils = self.pupil_points(points)
        return np.linalg.norm(pupils[..., 0, :] - pupils[..., 1, :], axis=-1)

    def intercorner(self, points: np.ndarray) -> np.ndarray:
        """(..., P, 2) -> (...,) outer-eye-corner distance in the points' units."""
        a, b = self.corners
        return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)

    def facts(self) -> SchemeFacts:
        """The scheme as a manifest records it (facemark.contract)."""
        return SchemeFacts(self.name, self.num_points, tuple(tuple(g) for g in self.pupils), tuple(self.corners))


def available_schemes() -> list[str]:
    folder = resources.files(__name__)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


@functools.cache
def load_scheme(name: str) -> Scheme:
    """Load a shipped scheme by name; an unknown name raises ConfigError listing the valid ones."""
    names = available_schemes()
    if name not in names:
        raise ConfigError(f"unknown landmark scheme {name!r}; available: {', '.join(names)}")
    raw = yaml.safe_load((resources.files(__name__) / f"{name}.yaml").read_text())
    return _from_raw(raw, origin=f"{name}.yaml")


def _from_raw(raw: dict, origin: str) -> Scheme:
    count = int(raw["num_points"])
    flip = list(range(count))
    for a, b in raw["flip_pairs"]:
        flip[a], flip[b] = b, a
    regions = {
        region: tuple(i for start, end in spans for i in range(start, end + 1))
        for region, spans in raw["regions"].items()
    }
    scheme = Scheme(
        name=raw["name"], num_points=count,
        pupils=(tuple(raw["pupils"][0]), tuple(raw["pupils"][1])),
        corners=(int(raw["corners"][0]), int(raw["corners"][1])),
        regions=regions, flip=tuple(flip),
    )
    _validate(scheme, origin)
    return scheme


def _validate(scheme: Scheme, origin: str) -> None:
    indices = [i for group in scheme.pupils for i in group] + list(scheme.corners) + list(scheme.flip)
    if any(not 0 <= i < scheme.num_points for i in indices):
        raise ConfigError(f"{origin}: an index is outside 0..{scheme.num_points - 1}")
    if sorted(scheme.flip) != list(range(scheme.num_points)):
        raise ConfigError(f"{origin}: flip_pairs use an index twice")
    covered = sorted(i for idx in scheme.regions.values() for i in idx)
    if covered != list(range(scheme.num_points)):
        raise ConfigError(f"{origin}: regions must cover every point exactly once")
