"""The Python API: a trained or shipped model as one object that finds faces and their landmarks.

    from facemark import Landmarker
    lm = Landmarker()                                             # the shipped 68-point model
    for face in lm.predict("photo.jpg"):                          # a path or (H, W, 3) uint8 RGB
        print(face.box, face.score, face.landmarks.shape)         # image pixels; (P, 2)

A model is named by a shipped model's name (`ibug68`, `datatang106`, or `NAME:ARTIFACT`: facemark.pretrained,
`facemark models`; None: base.yaml's predict.model), a packaged model folder (`facemark package`),
an artifact listed in its folder's manifest.json (checked on load: file hash, contract), a RUN
folder (its verified ONNX float artifact, else its best.pt), or a checkpoint file. Artifacts run on
onnxruntime or LiteRT alone (`pip install "facemark[runtime]"`); a checkpoint needs the full
install (`facemark[train]`). Faces come
from the detector (base.yaml `predict.detector`, kept when scoring at least `predict.min_score`) or
from given boxes; each face is cropped, run and refined as the manifest's `infer` record says
(facemark.runtime.refine), exactly as `facemark validate` and `facemark predict` run the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facemark import codec
from facemark.backends import BACKENDS
from facemark.errors import ArtifactError, DataError
from facemark.io import sha256_of
from facemark.runtime import Runner
from facemark.rundir import RunDir
from facemark.runtime.refine import Refinement, from_config, from_manifest
from facemark.schemes import Scheme, load_scheme
from facemark.status import Status


@dataclass(frozen=True)
class Face:
    """One face of an image: where it is and its landmarks, all in image pixels."""

    box: np.ndarray         # (4,) float64 x0 y0 x1 y1
    score: float            # the detector's score; 1.0 for a given box
    landmarks: np.ndarray   # (P, 2) float64 x, y in the scheme's point order

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box and landmarks rounded to 1/1000 pixel, score to 5 decimals."""
        return {"box": [round(float(v), 3) for v in self.box], "score": round(float(self.score), 5),
                "landmarks": np.round(self.landmarks, 3).tolist()}


class Landmarker:
    """A model under the manifest contract, with the face detector predict uses.

    `model`: a shipped model's NAME, a packaged model folder, ARTIFACT, RUN or CHECKPOINT (see the
    module docstring); None: base.yaml's predict.model. `detector` and `min_score`:
    None takes base.yaml's predict section; the detector is created on first use, so given boxes
    need none. `overrides`: `infer.KEY=VALUE` settings that replace the recorded refinement.
    `max_pixels`: the image-size limit for paths (None: base.yaml's data.max_image_pixels).
    """

    runner: Runner
    identity: dict[str, Any]   # name, file, format, sha256 of what runs
    size: int                  # crop side in pixels
    margin: float              # crop margin around the box, a fraction of its size
    scheme: Scheme
    refinement: Refinement

    def __init__(self, model: str | Path | None = None, detector: str | None = None,
                 min_score: float | None = None, overrides: list[str] | None = None,
                 max_pixels: int | None = None) -> None:
        from facemark.config import base_value, check_value

        # base_value, not load_config: the whole config's check imports timm and torch (model.arch)
        model = base_value("predict.model") if model is None else model
        for key, value in (("predict.detector", detector), ("predict.min_score", min_score)):
            if value is not None:
                check_value(key, value, origin=f"Landmarker({key.split('.')[1]}={value!r})")
        self.detector_name = detector or base_value("predict.detector")
        self.min_score = base_value("predict.min_score") if min_score is None else float(min_score)
        self.max_pixels = max_pixels
        self._detector = None
        self.runner, self.identity, self.size, self.margin, self.scheme, self.refinement = _load(model, overrides)

    def detect(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """(H, W, 3) uint8 RGB -> [(box (4,), score)] of detections >= min_score, largest first."""
        if self._detector is None:
            from facemark.data.detectors import create_detector

            self._detector = create_detector(self.detector_name)
        found = [(np.asarray(box, np.float64), float(score)) for box, score in self._detector.detect(image)
                 if score >= self.min_score]
        return sorted(found, key=lambda face: -(face[0][2] - face[0][0]) * (face[0][3] - face[0][1]))

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB and (F, 4) boxes -> (F, P, 2) refined landmarks in image pixels."""
        if len(boxes) == 0:
            return np.zeros((0, self.scheme.num_points, 2))
        matrices = np.stack([codec.crop_matrix(box, self.size, self.margin) for box in boxes])
        crops = np.stack([codec.warp_crop(image, matrix, self.size) for matrix in matrices])
        norm = self.refinement.run(self.runner.predict, crops, matrices, images=[image] * len(boxes))
        return codec.to_image(norm, matrices, self.size)

    def predict(self, image: str | Path | np.ndarray, boxes: Any = None) -> list[Face]:
        """Every face of `image` (a photo's path, read upright as its EXIF says, or (H, W, 3) uint8
        RGB) -> [Face]: the detector's faces, largest first, or one per given box ((4,) or (F, 4)
        x0 y0 x1 y1 in image pixels, in that order)."""
        pixels = self._image(image)
        if boxes is None:
            found = self.detect(pixels)
        else:
            found = [(box, 1.0) for box in _boxes(boxes, pixels.shape[1], pixels.shape[0])]
        points = self.landmarks(pixels, np.array([box for box, _ in found]).reshape(-1, 4))
        return [Face(box, score, landmarks) for (box, score), landmarks in zip(found, points)]

    def _image(self, image: str | Path | np.ndarray) -> np.ndarray:
        if isinstance(image, (str, Path)):
            from facemark.data.layout import read_photo

            return read_photo(Path(image), self.max_pixels)
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise DataError(f"Landmarker.predict: expected an (H, W, 3) uint8 RGB image, got {pixels.dtype} "
                            f"{tuple(pixels.shape)}")
        return pixels


def _boxes(boxes: Any, width: int, height: int) -> list[np.ndarray]:
    """Given boxes ((4,) or (F, 4) x0 y0 x1 y1, image pixels) -> their rows, each checked to be a
    finite box that overlaps the width x height image (a face may run off the border; a box with no
    pixel of the image would give landmarks of padding, placed off the image)."""
    array = np.asarray(boxes, dtype=np.float64)
    array = array[None] if array.shape == (4,) else array
    if array.ndim != 2 or array.shape[1] != 4:
        raise DataError(f"boxes: expected (4,) or (F, 4) x0 y0 x1 y1, got shape {tuple(array.shape)}")
    bad = [i for i, (x0, y0, x1, y1) in enumerate(array) if not (np.isfinite([x0, y0, x1, y1]).all()
                                                                and x1 > x0 and y1 > y0)]
    if bad:
        raise DataError(f"boxes[{bad[0]}] = {array[bad[0]].tolist()}: expected finite X0 Y0 X1 Y1 with X1 > X0 "
                        f"and Y1 > Y0")
    outside = [i for i, (x0, y0, x1, y1) in enumerate(array) if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height]
    if outside:
        raise DataError(f"boxes[{outside[0]}] = {array[outside[0]].tolist()}: lies entirely outside the "
                        f"{width}x{height} image (a box must overlap it)")
    return list(array)


Loaded = tuple[Runner, dict[str, Any], int, float, Scheme, Refinement]


ARTIFACT_SUFFIXES = tuple(backend.suffix for backend in BACKENDS.values())
MODEL_SUFFIXES = (".pt", *ARTIFACT_SUFFIXES)


def names_a_model(text: str | Path) -> bool:
    """Whether a command-line path names a model rather than an input: a shipped model's name that
    is no existing path, a model file (.pt, .onnx, .tflite, .mlpackage) or a folder holding a
    model (RUN with best.pt or export/, a packaged model, an export folder with its manifest)."""
    from facemark import pretrained

    path = Path(text)
    if not path.exists():
        return pretrained.is_model_name(str(text)) or path.suffix in MODEL_SUFFIXES
    if path.is_dir() and path.suffix not in ARTIFACT_SUFFIXES:   # an .mlpackage is a folder
        return any((path / name).exists() for name in ("best.pt", "export", "manifest.json"))
    return path.suffix in MODEL_SUFFIXES


def _load(text: str | Path, overrides: list[str] | None) -> Loaded:
    """NAME, model folder, ARTIFACT, RUN or CHECKPOINT -> (runner, identity, crop size, margin,
    scheme, refinement)."""
    from facemark import pretrained
    from facemark.manifest import artifact_path, load_manifest, manifest_path

    path = Path(text)
    if not path.exists() and pretrained.is_model_name(str(text)):
        return _load_artifact(pretrained.resolve(str(text)), overrides)
    if path.is_dir() and (path / pretrained.CARD_NAME).is_file():
        return _load_artifact(pretrained.artifact_of(path), overrides)
    run = RunDir(path)
    if path.is_dir() and run.best.is_file():
        export_dir = run.export
        # not exported yet: the checkpoint itself; a manifest that exists must be readable
        manifest = load_manifest(export_dir) if manifest_path(export_dir).is_file() else None
        float_onnx = manifest.artifacts.get("onnx_fp32") if manifest else None
        if float_onnx is not None and float_onnx.status == Status.VERIFIED:
            onnx = artifact_path(export_dir, "onnx_fp32", manifest)
            if onnx.is_file():
                return _load_artifact(onnx, overrides)
        return _load_checkpoint(run.best, overrides)
    if not path.exists():
        raise ArtifactError(f"{path}: no such artifact, run folder, checkpoint or shipped model "
                            f"(shipped: {', '.join(pretrained.model_names()) or 'none'})")
    if path.is_file() and path.suffix == ".pt":
        return _load_checkpoint(path, overrides)
    return _load_artifact(path, overrides)


def _load_artifact(path: Path, overrides: list[str] | None) -> Loaded:
    from facemark.manifest import load_manifest, manifest_normalisation, manifest_path, verify_artifact
    from facemark.runtime import Feed, create_runner

    export_dir = path.parent
    manifest = load_manifest(export_dir)
    contract = manifest.contract
    names = [name for name, entry in manifest.artifacts.items() if entry.file == path.name]
    if not names:
        raise ArtifactError(f"{path}: not listed in {manifest_path(export_dir)} (the artifact's contract)")
    name, entry = names[0], manifest.artifacts[names[0]]
    verify_artifact(export_dir, name, manifest)
    if not BACKENDS[entry.format].runs_here():
        raise ArtifactError(f"{path}: a {entry.format} artifact {BACKENDS[entry.format].where_it_runs()}")
    norm = manifest_normalisation(contract, str(manifest_path(export_dir)))
    scheme = load_scheme(contract.scheme.name)
    runner = create_runner(entry.format, path, Feed.of(entry), contract.size, norm, values=2 * scheme.num_points)
    identity = {"name": name, "file": str(path), "format": entry.format, "sha256": entry.sha256}
    refinement = from_manifest(contract, overrides, "predict", str(manifest_path(export_dir)))
    return runner, identity, contract.size, contract.crop.margin, scheme, refinement


def _load_checkpoint(ckpt_path: Path, overrides: list[str] | None) -> Loaded:
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ArtifactError(f"{ckpt_path}: a PyTorch checkpoint needs the full install (pip install "
                            f"\"facemark[train]\"); this one runs ONNX and TFLite artifacts and shipped models")
    from facemark.model import load_checkpoint
    from facemark.runtime import TorchRunner

    model, cfg, _ = load_checkpoint(ckpt_path)
    runner = TorchRunner(model, cfg.data.input_size)
    identity = {"name": "pytorch", "file": str(ckpt_path), "format": "pytorch", "sha256": sha256_of(ckpt_path)}
    return runner, identity, cfg.data.input_size, cfg.data.margin, load_scheme(cfg.data.scheme), \
        from_config(cfg, overrides, "predict", str(ckpt_path))
