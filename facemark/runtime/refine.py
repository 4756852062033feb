"""Test-time refinement: horizontal-flip averaging and extra passes on the landmark-box crop.

Two cheap steps on top of the one model call per face, set by configs/base.yaml's `infer:` and
recorded in the manifest at export. `facemark eval`, `facemark validate`, `facemark predict`, the
golden vectors and the Android core (android-demo/core: Refinement.java, LandmarkPipeline.landmarks)
all apply them through this file or its Java mirror:

- flip (infer.flip): the crop's columns reversed (crop pixels x -> S - 1 - x: an exact copy, no
  resampling), the model run on it, its points mirrored back and renumbered by the scheme's flip
  permutation (the mirrored face's image-left eye is the real image-right eye), then averaged with
  the plain crop's points. Training's flip (train/augment.py) mirrors x -> S - x inside its crop
  warp; the one-pixel difference in where the face sits is far inside the box jitter training sees;
- passes (infer.passes): pass k + 1 crops the photo again around the tight box of pass k's
  landmarks with the crop margin, codec.crop_matrix(codec.landmark_box(points)): the landmark-box
  crop that training draws with probability data.landmark_box_prob, so later passes see the crops
  the model learnt on (MediaPipe crops every video frame from the last frame's landmarks the same way).

Each pass makes one model call per face, two with flip: `model_calls` = passes x (1 + flip). The
result is in the normalised coordinates of the FIRST crop, so every consumer maps it to the photo
with the first crop's matrix (codec.to_image), exactly as it maps a 1-pass result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from facemark import codec
from facemark.contract import RunContract
from facemark.errors import ArtifactError

# (M, S, S, 3) uint8 RGB crops -> (M, P, 2) normalised crop coordinates: any Runner's predict,
# PyTorch through the TorchRunner, or a child process (validate)
Predict = Callable[[np.ndarray], np.ndarray]
CUT_WORKERS = 4   # threads cutting later-pass crops (cv2 releases the GIL while decoding and warping)


@dataclass
class Pass:
    """One pass of a refinement, for golden vectors and tests: matrices (N, 2, 3) image -> crop,
    crops (N, S, S, 3) uint8, outputs (N or 2N, P, 2) what `predict` returned (plain, then mirrored
    crops), points (N, P, 2) the pass's landmarks in image pixels."""

    matrices: np.ndarray
    crops: np.ndarray
    outputs: np.ndarray
    points: np.ndarray


@dataclass(frozen=True)
class Refinement:
    """The refinement a command applies (infer.flip, infer.passes) and the contract it needs:
    `permutation` the scheme's flip (permutation[i] = index of i's mirror point), `size` S and
    `margin` of the crop (data.margin, the manifest's crop.margin)."""

    flip: bool
    passes: int
    permutation: tuple[int, ...]
    size: int
    margin: float

    def __post_init__(self) -> None:
        if self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if sorted(self.permutation) != list(range(len(self.permutation))):
            raise ValueError("permutation must hold every point index once")

    @property
    def model_calls(self) -> int:
        """Model calls per face."""
        return self.passes * (2 if self.flip else 1)

    @property
    def active(self) -> bool:
        """False for the plain single pass (nothing to refine)."""
        return self.model_calls > 1

    @property
    def label(self) -> str:
        """Short display label: "1 pass", "flip", "2 passes", "flip + 2 passes"."""
        passes = f"{self.passes} pass{'es' if self.passes > 1 else ''}"
        if not self.flip:
            return passes
        return "flip" if self.passes == 1 else f"flip + {passes}"

    def record(self) -> dict[str, Any]:
        """What a report row or a predict record says it ran."""
        return {"flip": self.flip, "passes": self.passes, "model_calls": self.model_calls, "label": self.label}

    def mirror(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) crops with their columns reversed: crop pixel x -> S - 1 - x."""
        return np.ascontiguousarray(crops[:, :, ::-1])

    def unmirror(self, norm_points: np.ndarray) -> np.ndarray:
        """(N, P, 2) normalised points predicted on mirrored crops -> the same landmarks in the
        unmirrored crops: x -> S - 1 - x in crop pixels, then point i is mirrored point permutation[i]."""
        points = codec.denormalise(np.asarray(norm_points, dtype=np.float64), self.size)
        points[..., 0] = self.size - 1 - points[..., 0]
        return codec.normalise(points[:, list(self.permutation)], self.size)

    def pass_crops(self, crops: np.ndarray) -> np.ndarray:
        """The crops one pass sends to the model: (N, ...) plain, or (2N, ...) plain then mirrored."""
        return np.concatenate([crops, self.mirror(crops)]) if self.flip else crops

    def combine(self, outputs: np.ndarray, count: int) -> np.ndarray:
        """`predict`'s output on pass_crops of `count` faces -> (count, P, 2) float64 normalised:
        the plain points, or with flip the mean of the plain and the unmirrored points."""
        outputs = np.asarray(outputs, dtype=np.float64)
        if len(outputs) != count * (2 if self.flip else 1):
            raise ValueError(f"{len(outputs)} predictions for {count} faces (flip {self.flip})")
        if not self.flip:
            return outputs
        return (outputs[:count] + self.unmirror(outputs[count:])) / 2.0

    def landmark_matrices(self, points: np.ndarray) -> np.ndarray:
        """(N, P, 2) image-pixel landmarks -> (N, 2, 3) image -> crop matrices of their landmark boxes."""
        return np.stack([codec.crop_matrix(codec.landmark_box(p), self.size, self.margin) for p in points])

    def run(self, predict: Predict, crops: np.ndarray, matrices: np.ndarray,
            images: Sequence[np.ndarray] | None = None, first: np.ndarray | None = None,
            trace: list[Pass] | None = None) -> np.ndarray:
        """Refined landmarks of N faces -> (N, P, 2) float64 normalised coordinates of `crops`.

        crops (N, S, S, 3) uint8 and matrices (N, 2, 3) image -> crop: the first (detector-box)
        crops; images: face i's photo ((H, W, 3) uint8 RGB, the space of `matrices`), needed when
        passes > 1 (a lazy sequence is fine: each is read once per later pass); first: `predict`'s
        output on pass_crops(crops) when the caller already has it; trace: gets one Pass per pass.
        """
        count = len(crops)
        outputs = predict(self.pass_crops(crops)) if first is None else first
        norm = self.combine(outputs, count)
        if trace is not None:
            trace.append(Pass(matrices, crops, np.asarray(outputs), codec.to_image(norm, matrices, self.size)))
        if self.passes == 1:
            return norm
        if images is None or len(images) != count:
            raise ValueError(f"infer.passes {self.passes} needs the photo of each of the {count} faces")
        points = codec.to_image(norm, matrices, self.size)
        for _ in range(self.passes - 1):
            if not np.isfinite(points).all():
                raise ArtifactError("predictions are not finite (NaN or inf): no landmark box to crop the "
                                    "next refinement pass from")
            boxed = self.landmark_matrices(points)
            cut = self.cut(images, boxed)
            outputs = predict(self.pass_crops(cut))
            points = codec.to_image(self.combine(outputs, count), boxed, self.size)
            if trace is not None:
                trace.append(Pass(boxed, cut, np.asarray(outputs), points))
        return codec.normalise(codec.apply_affine(points, matrices), self.size)

    def cut(self, images: Sequence[np.ndarray], matrices: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) crops of images[i] through matrices[i] (codec.warp_crop)."""
        def one(i: int) -> np.ndarray:
            return codec.warp_crop(images[i], matrices[i], self.size)

        with ThreadPoolExecutor(max_workers=max(1, min(CUT_WORKERS, len(matrices)))) as pool:
            return np.stack(list(pool.map(one, range(len(matrices)))))

    def latency_crops(self, crop: np.ndarray) -> np.ndarray:
        """(model_calls, S, S, 3): the batch-1 inputs one refined face sends to the model, in order,
        for timing. Later passes reuse the first crop: these models' time does not depend on the
        pixel values, and the photo is not at hand where the timing runs."""
        return np.stack([crop, crop[:, ::-1]] * self.passes if self.flip else [crop] * self.passes)

    def manifest_record(self) -> dict[str, Any]:
        """The manifest's `infer` section (facemark.manifest; read by ModelContract.java)."""
        return {"flip": self.flip, "passes": self.passes, "model_calls": self.model_calls,
                "flip_permutation": list(self.permutation),
                "later_crops": "tight box of the previous pass's landmarks, crop.margin"}


def infer_settings(recorded: dict[str, Any] | None, overrides: list[str] | None, verb: str, origin: str):
    """The InferConfig a command applies: `recorded` (a run config's or a manifest's infer section;
    None: base.yaml's, the single pass every run made before these keys existed) with the command's
    `--set infer.KEY=VALUE` overrides. A bad value is a ConfigError naming the key and its origin."""
    from facemark.config import section_from_saved

    values = {} if recorded is None else {k: recorded[k] for k in ("flip", "passes") if k in recorded}
    return section_from_saved("infer", values, overrides or [], verb, origin)


def from_config(cfg, overrides: list[str] | None = None, verb: str = "eval", origin: str = "config") -> Refinement:
    """The Refinement of a run's Config (its infer, data.scheme, data.input_size, data.margin), with
    `--set infer.*` overrides."""
    from facemark.schemes import load_scheme

    infer = infer_settings(cfg.infer.__dict__, overrides, verb, origin)
    return Refinement(infer.flip, infer.passes, load_scheme(cfg.data.scheme).flip, cfg.data.input_size,
                      cfg.data.margin)


def from_manifest(contract: RunContract, overrides: list[str] | None, verb: str, origin: str) -> Refinement:
    """The Refinement a manifest's contract records (none recorded: the single pass), with
    `--set infer.*` overrides."""
    from facemark.schemes import load_scheme

    recorded = None if contract.infer is None else contract.infer.to_json()
    infer = infer_settings(recorded, overrides, verb, origin)
    return Refinement(infer.flip, infer.passes, load_scheme(contract.scheme.name).flip, contract.size,
                      contract.crop.margin)
