"""The Android app's JVM core (android-demo/core) against golden vectors from PyTorch, and its tracker
and filter against Python's on a recorded sequence (the app's own files: tests/test_android_app.py).

The core is plain Java, compiled here with the JDK's javac; the app itself needs Google Maven
and is not built in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from drawn_faces import FRAME, ScriptedScene, face_path, make_drawn_split
from java_core import needs_jdk, run_checker
from margins import DATA_SEED, above

from facemark import codec
from facemark.config import load_config
from facemark.errors import ArtifactError
from facemark.convert.golden import GOLDEN_FORMAT, write_golden
from facemark.data.crops import CropSet, load_crop_set
from facemark.manifest import MANIFEST_NAME, new_manifest, save_manifest
from facemark.model import build_model, checkpoint_dict, weights_source
from facemark.schemes import load_scheme
from facemark.weights import IMAGENET


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory) -> Path:
    """A run folder with a tiny perturbed model's manifest and golden vectors from two drawn faces."""
    root = tmp_path_factory.mktemp("android_golden")
    make_drawn_split(root / "data", "test", 2, seed=3)
    cfg = load_config(overrides=["model.pretrained=false", "model.arch=mobilenetv3_small_050", "data.input_size=64",
                                 "data.detector=drawn", "infer.flip=true", "infer.passes=3"])
    scheme = load_scheme(cfg.data.scheme)
    torch.manual_seed(DATA_SEED)
    model = build_model(cfg.model, scheme.num_points).eval()
    with torch.no_grad():  # random init gives near-constant outputs; perturb so every value matters
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    run = root / "run"
    export_dir = run / "export"
    export_dir.mkdir(parents=True)
    ckpt = run / "best.pt"
    torch.save(checkpoint_dict(model, cfg), ckpt)
    save_manifest(export_dir, new_manifest(cfg, scheme.facts(), ckpt, weights_source(model).norm))
    crop_set = load_crop_set(root / "data", "test", cfg.data, workers=1)
    golden = write_golden(run, export_dir, crop_set, model, cfg, weights_source(model).norm)
    assert golden == export_dir / "golden"
    return run


def read_kv(path: Path) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in path.read_text().splitlines() if line.strip()}


def test_golden_files_are_consistent(golden_run):
    """The writer's own numbers hang together: PNG -> warp -> crop.bin, outputs -> landmarks."""
    import cv2

    golden = golden_run / "export" / "golden"
    index = read_kv(golden / "golden.txt")
    assert index["format"] == [GOLDEN_FORMAT] and index["input_size"] == ["64"]
    assert index["cases"] == ["case_0", "case_1", "case_2"] and index["pupils_left"] == ["104"]
    sizes, moved = [], []
    for name in index["cases"]:
        case = read_kv(golden / f"{name}.txt")
        frame = cv2.cvtColor(cv2.imread(str(golden / case["image"][0])), cv2.COLOR_BGR2RGB)
        sizes.append(frame.shape[0])
        matrix = np.array(case["matrix"], float).reshape(2, 3)
        np.testing.assert_array_equal(codec.crop_matrix(np.array(case["box"], float), 64, 0.2), matrix)
        crop = np.frombuffer((golden / case["crop"][0]).read_bytes(), np.uint8).reshape(64, 64, 3)
        np.testing.assert_array_equal(codec.warp_crop(frame, matrix, 64), crop)
        outputs = np.array(case["outputs"], float).reshape(1, 106, 2)
        above("android: perturbed model output spread", outputs.std(), 0.02)  # different per point
        landmarks = codec.to_image(outputs, matrix[None], 64)[0]
        np.testing.assert_allclose(np.array(case["landmarks"], float).reshape(106, 2), landmarks, atol=1e-12)
        assert int(case["image_sum"][0]) == int(frame.sum())
        moved.append(check_refinement_case(golden, case, frame))
    above("android: the golden second pass moves the landmarks (px)", max(moved), 0.5)   # a real pass, not a copy
    assert index["infer_flip"] == ["true"] and index["infer_passes"] == ["3"]   # the manifest's, not the sequence's
    assert index["refine_flip"] == ["true"] and index["refine_passes"] == ["2"]
    assert sizes == [64, 102, 45]  # frame scales 1.0, 1.6, 0.7 of the 64 px crop
    last = np.frombuffer((golden / "case_2_crop.bin").read_bytes(), np.uint8).reshape(64, 64, 3)
    assert (last.reshape(-1, 3).max(axis=1) == 0).mean() > 0.1  # the shifted box reaches past the frame


def check_refinement_case(golden: Path, case: dict[str, list[str]], frame: np.ndarray) -> float:
    """The recorded flip + 2 passes sequence recomputed by hand from its own numbers: mirrored
    crops reversed, the flip average, the second crop on the landmark box, the final landmarks
    -> how far the second pass moved them (px)."""
    flip = load_scheme("lapa106").flip

    def crop_file(key: str) -> np.ndarray:
        return np.frombuffer((golden / case[key][0]).read_bytes(), np.uint8).reshape(64, 64, 3)

    def averaged(plain_key: str, mirror_key: str, matrix: np.ndarray) -> np.ndarray:
        plain = codec.denormalise(np.array(case[plain_key], float).reshape(106, 2), 64)
        mirrored = codec.denormalise(np.array(case[mirror_key], float).reshape(106, 2), 64)
        mirrored[:, 0] = 63 - mirrored[:, 0]   # x -> S - 1 - x, then point i is mirrored point flip[i]
        return codec.apply_affine((plain + mirrored[list(flip)]) / 2, codec.invert_affine(matrix))

    np.testing.assert_array_equal(crop_file("mirror_crop"), crop_file("crop")[:, ::-1])
    np.testing.assert_array_equal(crop_file("pass2_mirror_crop"), crop_file("pass2_crop")[:, ::-1])
    first = averaged("outputs", "mirror_outputs", np.array(case["matrix"], float).reshape(2, 3))
    np.testing.assert_allclose(np.array(case["flip_landmarks"], float).reshape(106, 2), first, atol=1e-9)
    second = codec.crop_matrix(codec.landmark_box(first), 64, 0.2)
    np.testing.assert_allclose(np.array(case["pass2_matrix"], float).reshape(2, 3), second, rtol=1e-12)
    np.testing.assert_array_equal(crop_file("pass2_crop"), codec.warp_crop(frame, second, 64))
    refined = averaged("pass2_outputs", "pass2_mirror_outputs", second)
    np.testing.assert_allclose(np.array(case["refined_landmarks"], float).reshape(106, 2), refined, atol=1e-9)
    return float(np.abs(refined - first).max())


def test_golden_refuses_a_contract_it_cannot_honour(golden_run, tmp_path):
    export_dir = tmp_path / "export"
    shutil.copytree(golden_run / "export", export_dir)
    cfg = load_config(overrides=["model.pretrained=false", "model.arch=mobilenetv3_small_050", "data.input_size=64"])
    model = build_model(cfg.model, 106).eval()
    crops = np.zeros((1, 64, 64, 3), np.uint8)
    crop_set = CropSet("test", ["a"], crops, np.zeros((1, 2, 3)), np.zeros((1, 106, 2)), "drawn")
    other_margin = load_config(overrides=["model.pretrained=false", "data.input_size=64", "data.margin=0.3"])
    with pytest.raises(ArtifactError, match="margin.*differs from the run's config"):
        write_golden(tmp_path, export_dir, crop_set, model, other_margin, IMAGENET)
    small = CropSet("test", ["a"], crops[:, :32, :32], np.zeros((1, 2, 3)), np.zeros((1, 106, 2)), "drawn")
    with pytest.raises(ArtifactError, match="need 64x64 RGB crops"):
        write_golden(tmp_path, export_dir, small, model, cfg, IMAGENET)
    assert sorted(p.name for p in (export_dir / "golden").iterdir()) == sorted(
        p.name for p in (golden_run / "export" / "golden").iterdir())  # the old folder is untouched


@needs_jdk
def test_java_core_reproduces_golden_vectors(core_classes, golden_run):
    result = run_checker(core_classes, golden_run / "export" / "golden")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "golden check: OK" in result.stdout
    diffs = [int(m) for m in re.findall(r"crop max diff (\d+)", result.stdout)]
    assert len(diffs) == 3 and max(diffs) <= 1, result.stdout  # 0 on x86 OpenCV 4.x: bit-exact warpAffine
    refined = [int(m) for m in re.findall(r"refinement crops max diff (\d+)", result.stdout)]
    assert len(refined) == 3 and max(refined) <= 1, result.stdout


def _bump_value(path: Path, key: str, position: int, delta: float) -> None:
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        parts = line.split()
        if parts[0] == key:
            parts[1 + position] = repr(float(parts[1 + position]) + delta)
            lines[i] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")


def _bump_crop_byte(path: Path, index: int, delta: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] = (data[index] + delta) % 256
    path.write_bytes(bytes(data))


def _bump_manifest_margin(export_dir: Path) -> None:
    manifest = export_dir / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"margin": 0.2', '"margin": 0.25'))


def _bump_manifest_passes(export_dir: Path) -> None:
    manifest = export_dir / MANIFEST_NAME
    manifest.write_text(manifest.read_text().replace('"passes": 3', '"passes": 2'))


CORRUPTIONS = {
    "landmark": (lambda e: _bump_value(e / "golden" / "case_1.txt", "landmarks", 7, 0.01), "case_1 landmarks"),
    "output": (lambda e: _bump_value(e / "golden" / "case_0.txt", "outputs", 3, 1e-3), "case_0 landmarks"),
    "crop_pixel": (lambda e: _bump_crop_byte(e / "golden" / "case_2_crop.bin", 5000, 3), "case_2 crop"),
    "input_mean": (lambda e: _bump_value(e / "golden" / "case_0.txt", "input_mean", 1, 1e-4), "case_0 input_mean"),
    "manifest_margin": (_bump_manifest_margin, "contract margin"),
    "manifest_passes": (_bump_manifest_passes, "contract infer_passes"),
    "mirror_crop": (lambda e: _bump_crop_byte(e / "golden" / "case_0_mirror.bin", 700, 2), "case_0 mirror crop"),
    "mirror_output": (lambda e: _bump_value(e / "golden" / "case_2.txt", "mirror_outputs", 10, 1e-3),
                      "case_2 flip_landmarks (flip)"),
    "pass2_output": (lambda e: _bump_value(e / "golden" / "case_1.txt", "pass2_outputs", 4, 1e-3),
                     "case_1 refined_landmarks (flip + 2 passes)"),
    "refined_landmark": (lambda e: _bump_value(e / "golden" / "case_0.txt", "refined_landmarks", 9, 1e-3),
                         "case_0 refined_landmarks"),
    "pass2_crop": (lambda e: _bump_crop_byte(e / "golden" / "case_1_pass2.bin", 6000, 9), "case_1 refinement crop"),
}


@needs_jdk
@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_any_disagreement_fails(core_classes, golden_run, tmp_path, corruption):
    export_dir = tmp_path / "export"
    shutil.copytree(golden_run / "export", export_dir)
    corrupt, message = CORRUPTIONS[corruption]
    corrupt(export_dir)
    result = run_checker(core_classes, export_dir / "golden")
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stdout, result.stdout


@needs_jdk
def test_missing_golden_folder_is_a_usage_error(core_classes, tmp_path):
    result = run_checker(core_classes, tmp_path / "nothing")
    assert result.returncode == 2 and "golden.txt: missing" in result.stderr


class _Recorder:
    """A scripted scene whose detector and landmark calls are recorded, frame by frame, for the Java replay."""

    def __init__(self, scene: ScriptedScene) -> None:
        self.scene, self.frames = scene, []

    def detect(self, image: np.ndarray) -> list:
        found = self.scene.detect(image)
        self.frames[-1]["detections"] = [[*map(float, box), score] for box, score in found]
        return found

    def landmarks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        points = self.scene.landmarks(image, boxes)
        self.frames[-1]["calls"].append({"boxes": boxes.tolist(), "points": points.reshape(len(points), -1).tolist()})
        return points


def write_tracking_sequence(path: Path) -> dict[str, int]:
    """30 frames of two scripted faces through the Python Tracker (predict.* of base.yaml,
    redetect_every 5): face A drifts, jerks nearby at frame 12 (lost, found again, same id); face B
    enters at frame 3 (found by the frame-5 re-detection), jumps away at 18 (a new id) and is gone
    from 24. Writes what the Java replay needs -> the tracker's counts."""
    import dataclasses
    import json

    from facemark.tracking import Tracker

    a = face_path((90, 100), (0.8, 0.3), 12) + face_path((118, 104), (0.8, 0.3), 18)
    b = [None] * 3 + face_path((230, 130), (-0.6, 0.2), 15, half=22) + face_path((150, 60), (0.5, 0.0), 6, half=22)
    b += [None] * (30 - len(b))
    scene = ScriptedScene([a, b])
    recorder = _Recorder(scene)
    cfg = dataclasses.replace(load_config().predict, redetect_every=5)
    tracker = Tracker(recorder, cfg, fps=30.0)
    for scene.frame in range(30):
        recorder.frames.append({"detections": None, "calls": []})
        faces = tracker.step(FRAME)
        recorder.frames[-1]["faces"] = [{"id": f.id, "box": f.box.tolist(), "detected": f.detected,
                                         "landmarks": f.landmarks.reshape(-1).tolist(),
                                         "filtered": f.filtered.reshape(-1).tolist()} for f in faces]
    keys = ("track", "redetect_every", "lost_iou", "match_iou", "filter", "min_cutoff", "beta", "d_cutoff")
    path.write_text(json.dumps({"settings": {k: getattr(cfg, k) for k in keys}, "fps": 30.0, "width": FRAME.shape[1],
                                "height": FRAME.shape[0], "frames": recorder.frames}))
    ids = {face["id"] for frame in recorder.frames for face in frame["faces"]}
    return {**tracker.stats(), "ids": len(ids)}


def run_tracking_check(classes: Path, sequence: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", str(classes), "org.facemark.core.TrackingCheck", str(sequence)],
                          capture_output=True, text=True, timeout=60)


@needs_jdk
def test_java_tracker_and_filter_equal_python_on_a_recorded_sequence(core_classes, tmp_path):
    sequence = tmp_path / "sequence.json"
    stats = write_tracking_sequence(sequence)
    assert stats == {"frames": 30, "detector_calls": 9, "lost": 3, "ids": 3}   # jerk, jump, gone: every path
    result = run_tracking_check(core_classes, sequence)
    assert result.returncode == 0 and "tracking check: OK (30 frames)" in result.stdout, result.stdout + result.stderr
    text = sequence.read_text()
    recorded = json.loads(text)
    recorded["frames"][7]["faces"][0]["filtered"][3] += 1e-6
    sequence.write_text(json.dumps(recorded))
    result = run_tracking_check(core_classes, sequence)
    assert result.returncode == 1 and "FAIL frame 7 face 0 filtered[3]" in result.stdout, result.stdout
    recorded["frames"][7]["faces"][0]["filtered"][3] -= 1e-6
    recorded["frames"][4]["detections"] = [[10.0, 10.0, 40.0, 40.0, 0.9]]   # Python "ran" the detector on frame 4
    sequence.write_text(json.dumps(recorded))
    result = run_tracking_check(core_classes, sequence)
    assert result.returncode == 1 and "frame 4: Python ran the detector, Java did not" in result.stdout, result.stdout
