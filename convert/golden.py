"""Golden vectors: what the Android app's JVM core (android-demo/core) must reproduce, from PyTorch.

`facemark export RUN --golden` writes RUN/export/golden/; CI (tests/test_android_core.py) runs the
Java checker (android-demo/core/src/test/java/org/facemark/core/GoldenCheck.java) against such a
folder, so a change on either side that breaks agreement fails.

Each case starts from a real evaluation crop, made into a small "camera frame" (resized by a case
factor, so the core both shrinks and enlarges) with a face box around it (shifted and stretched by
the case; one case pushes the crop past the frame's border so black fill is exercised):

    golden/golden.txt        index: format, contract (input size, margin, mean, std, infer), scheme, cases
    golden/case_K.txt        one case: box, matrix, stats and expected numbers (text, see below)
    golden/case_K.png        the frame, 8-bit RGB PNG (image pixels)
    golden/case_K_crop.bin   the expected crop: S*S*3 uint8 RGB, row-major (codec.warp_crop)
    golden/case_K_mirror.bin, case_K_pass2.bin, case_K_pass2_mirror.bin   the refinement's other crops

Text files hold one `key value value ...` line per fact, floats written with Python's repr (exact
round trip). Keys of a case: image, image_size (W H), image_sum (sum of all RGB bytes), box
(x0 y0 x1 y1, image px), matrix (2x3 image->crop, row-major), crop, input_mean / input_std (per
RGB channel of the normalised NHWC input tensor), input_samples (flat NHWC index, value pairs),
outputs (2P PyTorch outputs, normalised crop units), crop_points (2P, crop px), landmarks (2P,
image px), pupils (image-left x y, image-right x y, image px).

Every case also holds the test-time refinement sequence (facemark/runtime/refine.py) of
GOLDEN_REFINEMENT, flip + 2 passes, whatever the run's own infer settings (golden.txt records
those as infer_flip / infer_passes, the Java core must read the same from the manifest): mirror_crop
(file) and mirror_outputs, flip_landmarks (the flip-averaged first pass, image px), pass2_box (the
tight box of flip_landmarks), pass2_matrix, pass2_crop and pass2_mirror_crop (files),
pass2_outputs, pass2_mirror_outputs and refined_landmarks (image px).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch import nn

from facemark import codec
from facemark.config import Config
from facemark.contract import CropSpec, InputSpec
from facemark.data.crops import CropSet, to_input
from facemark.errors import ArtifactError
from facemark.io import atomic_path
from facemark.manifest import load_manifest, manifest_path
from facemark.runtime import TorchRunner
from facemark.schemes import Scheme, load_scheme
from facemark.weights import Normalisation

GOLDEN_FORMAT = "facemark-golden-v2"
GOLDEN_REFINEMENT = (True, 2)   # (flip, passes) of the recorded sequence: every step of the refinement
GOLDEN_DIR = "golden"
# (frame scale, box shift x, box shift y in box sides, box aspect w/h) per case, cycled
CASES = ((1.0, 0.0, 0.0, 1.0), (1.6, 0.07, -0.05, 0.8), (0.7, -0.3, 0.25, 1.15))
SAMPLE_COUNT = 16


def write_golden(run: Path, export_dir: Path, crop_set: CropSet, model: nn.Module, cfg: Config,
                 norm: Normalisation, count: int = 3) -> Path:
    """Write `count` golden cases from the first faces of `crop_set` -> the golden folder.

    The contract (input size, margin, mean, std) comes from export_dir/manifest.json when it
    exists, else from `cfg` and `norm` (the checkpoint's input normalisation); the two must agree.
    The crops must have the contract's size. Written atomically: the folder appears complete or not at all.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    contract = _contract(Path(export_dir), cfg, norm)
    infer = _infer(Path(export_dir), cfg)
    size = contract.size
    if len(crop_set) == 0 or crop_set.crops.shape[1:] != (size, size, 3):
        raise ArtifactError(f"golden vectors need {size}x{size} RGB crops; got {crop_set.crops.shape} "
                            f"from split {crop_set.split!r}")
    scheme = load_scheme(cfg.data.scheme)
    was_training = model.training
    model.eval()
    final = Path(export_dir) / GOLDEN_DIR
    with atomic_path(final) as tmp:
        tmp.mkdir()
        names = []
        for k in range(count):
            name = f"case_{k}"
            frame, box = _frame_and_box(crop_set.crops[k % len(crop_set)], CASES[k % len(CASES)], contract)
            facts = _expected(frame, box, model, contract, scheme)
            _write_case(tmp, name, frame, facts)
            names.append(name)
        lines = [("format", [GOLDEN_FORMAT]), ("run", [Path(run).name]), ("input_size", [size]),
                 ("margin", [contract.crop.margin]), ("mean", list(contract.input.mean)),
                 ("std", list(contract.input.std)),
                 ("color", ["RGB"]), ("scheme", [scheme.name]), ("num_points", [scheme.num_points]),
                 ("pupils_left", list(scheme.pupils[0])), ("pupils_right", list(scheme.pupils[1])),
                 ("infer_flip", [str(infer.flip).lower()]), ("infer_passes", [infer.passes]),
                 ("flip_permutation", list(scheme.flip)), ("refine_flip", [str(GOLDEN_REFINEMENT[0]).lower()]),
                 ("refine_passes", [GOLDEN_REFINEMENT[1]]), ("cases", names)]
        _write_lines(tmp / "golden.txt", lines)
    model.train(was_training)
    return final


@dataclass(frozen=True)
class CropContract:
    """The part of the run contract (facemark.contract) golden vectors exercise: the input crop
    and the crop rule."""

    input: InputSpec
    crop: CropSpec

    @property
    def size(self) -> int:
        return self.input.size

    def facts(self) -> dict[str, Any]:
        return {"size": self.size, "margin": self.crop.margin, "mean": list(self.input.mean),
                "std": list(self.input.std)}


def _contract(export_dir: Path, cfg: Config, norm: Normalisation) -> CropContract:
    """The manifest's input and crop contract when there is one (checked against cfg and norm),
    else cfg's and norm's."""
    fresh = CropContract(InputSpec(cfg.data.input_size, norm.mean, norm.std),
                         CropSpec(cfg.data.margin, cfg.data.detector))
    if not manifest_path(export_dir).is_file():
        return fresh
    declared = load_manifest(export_dir).contract
    found = CropContract(declared.input, declared.crop)
    if found.facts() != fresh.facts():
        raise ArtifactError(f"{manifest_path(export_dir)}: input/crop contract {found.facts()} differs from the "
                            f"run's config and checkpoint {fresh.facts()}; re-export before writing golden vectors")
    return found


def _infer(export_dir: Path, cfg: Config):
    """The infer settings the Java core must read from the contract: the manifest's when there is
    one (export may have overridden the config's), else the config's."""
    from facemark.runtime.refine import infer_settings

    if manifest_path(export_dir).is_file():
        recorded = load_manifest(export_dir).contract.infer
        return infer_settings(None if recorded is None else recorded.to_json(), [], "export",
                              str(manifest_path(export_dir)))
    return cfg.infer


def _frame_and_box(crop: np.ndarray, case: tuple[float, float, float, float],
                   contract: CropContract) -> tuple[np.ndarray, np.ndarray]:
    """A real crop made into a camera-like frame, and a face box in it (image px, fractional).

    The box is the detector box the crop was cut from (the central square of side S/(1+margin)),
    scaled with the frame, then shifted and stretched by the case.
    """
    scale, shift_x, shift_y, aspect = case
    size = crop.shape[0]
    side = max(8, int(round(size * scale)))
    interpolation = cv2.INTER_AREA if side < size else cv2.INTER_LINEAR
    frame = cv2.resize(crop, (side, side), interpolation=interpolation) if side != size else crop.copy()
    box_side = side / (1.0 + contract.crop.margin)
    cx = side / 2.0 - 0.5 + shift_x * box_side
    cy = side / 2.0 - 0.5 + shift_y * box_side
    half_w, half_h = box_side * np.sqrt(aspect) / 2.0, box_side / np.sqrt(aspect) / 2.0
    return np.ascontiguousarray(frame), np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


def _expected(frame: np.ndarray, box: np.ndarray, model: nn.Module, contract: CropContract,
              scheme: Scheme) -> dict[str, Any]:
    """Everything the Java core must reproduce for one frame and box."""
    size = contract.size
    matrix = codec.crop_matrix(box, size, contract.crop.margin)
    crop = codec.warp_crop(frame, matrix, size)
    input_norm = Normalisation(contract.input.mean, contract.input.std)
    tensor = to_input(crop[None], input_norm, "NHWC")[0].astype(np.float64)
    runner = TorchRunner(model, size, input_norm)
    outputs = runner.predict(crop[None]).reshape(-1)
    if outputs.size != 2 * scheme.num_points:
        raise ArtifactError(f"model gives {outputs.size} values; scheme {scheme.name} needs "
                            f"{2 * scheme.num_points} (2 x {scheme.num_points} points)")
    norm = outputs.reshape(1, -1, 2)
    landmarks = codec.to_image(norm, matrix[None], size)[0]
    flat = tensor.reshape(-1)
    samples = np.linspace(0, flat.size - 1, SAMPLE_COUNT).round().astype(int)
    return {
        "box": box, "matrix": matrix, "crop": crop,
        "input_mean": tensor.reshape(-1, 3).mean(axis=0), "input_std": tensor.reshape(-1, 3).std(axis=0),
        "input_samples": [v for i in samples for v in (int(i), float(np.float32(flat[i])))],
        "outputs": outputs, "crop_points": codec.denormalise(norm.astype(np.float64), size)[0],
        "landmarks": landmarks, "pupils": scheme.pupil_points(landmarks),
        **_refinement_facts(frame, crop, matrix, norm, runner, contract, scheme),
    }


def _refinement_facts(frame: np.ndarray, crop: np.ndarray, matrix: np.ndarray, outputs: np.ndarray,
                      runner: TorchRunner, contract: CropContract, scheme: Scheme) -> dict[str, Any]:
    """The GOLDEN_REFINEMENT sequence of one face, through facemark.runtime.refine, from the plain
    pass's `outputs` ((1, P, 2), as recorded) on `crop`."""
    from facemark.runtime.refine import Refinement

    refinement = Refinement(*GOLDEN_REFINEMENT, scheme.flip, contract.size, contract.crop.margin)
    first = np.concatenate([outputs, runner.predict(refinement.mirror(crop[None]))])
    trace = []
    refinement.run(runner.predict, crop[None], matrix[None], [frame], first=first, trace=trace)
    one, two = trace
    return {"mirror_crop": refinement.mirror(crop[None])[0], "mirror_outputs": one.outputs[1],
            "flip_landmarks": one.points[0], "pass2_box": codec.landmark_box(one.points[0]),
            "pass2_matrix": two.matrices[0], "pass2_crop": two.crops[0],
            "pass2_mirror_crop": refinement.mirror(two.crops)[0], "pass2_outputs": two.outputs[0],
            "pass2_mirror_outputs": two.outputs[1], "refined_landmarks": two.points[0]}


def _write_case(folder: Path, name: str, frame: np.ndarray, facts: dict[str, Any]) -> None:
    png = f"{name}.png"
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ArtifactError(f"{folder / png}: PNG encoding failed")
    (folder / png).write_bytes(encoded.tobytes())
    height, width = frame.shape[:2]
    lines = [("image", [png]), ("image_size", [width, height]), ("image_sum", [int(frame.sum(dtype=np.int64))])]
    for key, file in (("crop", "crop"), ("mirror_crop", "mirror"), ("pass2_crop", "pass2"),
                      ("pass2_mirror_crop", "pass2_mirror")):
        (folder / f"{name}_{file}.bin").write_bytes(np.ascontiguousarray(facts[key]).tobytes())
        lines.append((key, [f"{name}_{file}.bin"]))
    for key in ("box", "matrix", "input_mean", "input_std", "input_samples", "outputs", "crop_points",
                "landmarks", "pupils", "mirror_outputs", "flip_landmarks", "pass2_box", "pass2_matrix",
                "pass2_outputs", "pass2_mirror_outputs", "refined_landmarks"):
        lines.append((key, np.asarray(facts[key]).reshape(-1).tolist() if key != "input_samples"
                      else facts[key]))
    _write_lines(folder / f"{name}.txt", lines)


def _write_lines(path: Path, lines: list[tuple[str, list]]) -> None:
    """`key v1 v2 ...` per line; floats as repr (shortest exact round trip), ints as ints."""
    def text(value) -> str:
        return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)

    path.write_text("".join(f"{key} {' '.join(text(v) for v in values)}\n" for key, values in lines))
