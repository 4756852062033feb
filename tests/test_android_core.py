"""The Android app's JVM core (android-demo/core) against golden vectors from PyTorch, and the
consistency of the app's files with the Python side (asset names, copy script, XML, Gradle catalog).

The core is plain Java, compiled here with the JDK's javac; the app itself needs Google Maven
and is not built in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from drawn_faces import FRAME, ScriptedScene, face_path, make_drawn_split
from java_core import ANDROID, CORE, REPO, needs_jdk, run_checker
from margins import DATA_SEED, above

from facemark import codec
from facemark.config import load_config
from facemark.errors import ArtifactError
from facemark.convert.formats import float_artifact
from facemark.convert.golden import GOLDEN_FORMAT, write_golden
from facemark.data.crops import CropSet, load_crop_set
from facemark.manifest import MANIFEST_NAME, artifact_entry, new_manifest, record_artifact, save_manifest
from facemark.model import build_model, checkpoint_dict, weights_source
from facemark.schemes import load_scheme
from facemark.weights import IMAGENET

APP_DEFAULTS = CORE / "main" / "java" / "org" / "facemark" / "core" / "AppDefaults.java"
KOTLIN = ANDROID / "app" / "src" / "main" / "java"

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


def _java_constant(name: str) -> str:
    match = re.search(rf"\b{name}\s*=\s*(.+?);", APP_DEFAULTS.read_text())
    assert match, f"{APP_DEFAULTS}: no constant {name}"
    return match.group(1).strip()


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


def test_app_constants_match_python_side():
    model_file = float_artifact("tflite", "float32", False).file
    assert _java_constant("MANIFEST_ASSET") == f'"{MANIFEST_NAME}"'
    assert _java_constant("MODEL_ASSET") == f'"{model_file}"'
    script = (ANDROID / "copy_assets.sh").read_text()
    assert f"default_model={model_file}" in script and "app/src/main/assets" in script
    threads = int(_java_constant("DEFAULT_THREADS"))
    choices = [int(v) for v in re.findall(r"\d+", _java_constant("THREAD_CHOICES"))]
    assert threads in choices and choices == sorted(choices)
    kotlin = "\n".join(p.read_text() for p in KOTLIN.rglob("*.kt"))
    # the app uses the constants instead of repeating the names
    assert "AppDefaults.MODEL_ASSET" in kotlin and "AppDefaults.MANIFEST_ASSET" in kotlin
    assert model_file not in kotlin and f'"{MANIFEST_NAME}"' not in kotlin
    assert "android-demo/copy_assets.sh $(if $(filter command line,$(origin RUN)),$(RUN))" in (REPO / "Makefile").read_text()
    predict = load_config().predict
    expected = (f"new Tracker.Settings({str(predict.track).lower()}, {predict.redetect_every}, {predict.lost_iou!r}, "
                f"{predict.match_iou!r}, {str(predict.filter == 'one_euro').lower()}, {predict.min_cutoff!r}, "
                f"{predict.beta!r}, {predict.d_cutoff!r})")
    assert _java_constant("TRACKING") == expected   # the app tracks and filters as `facemark predict` does
    assert "AppDefaults.TRACKING" in kotlin


def _fake_export(run: Path, cfg_overrides: list[str]) -> Path:
    cfg = load_config(overrides=cfg_overrides)
    export_dir = run / "export"
    export_dir.mkdir(parents=True)
    ckpt = run / "best.pt"
    ckpt.write_bytes(b"checkpoint")
    save_manifest(export_dir, new_manifest(cfg, load_scheme(cfg.data.scheme).facts(), ckpt, IMAGENET))
    (export_dir / "model_fp32.tflite").write_bytes(b"TFL3 not a real model")
    record_artifact(export_dir, "tflite_fp32", artifact_entry(export_dir, Path("model_fp32.tflite"),
                                                              format="tflite", layout="NHWC",
                                                              precision="float32", status="verified"))
    return export_dir


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_copy_assets_script(tmp_path):
    export_dir = _fake_export(tmp_path / "run", ["model.pretrained=false"])
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "old_model.tflite").write_bytes(b"stale")
    env = {"PATH": "/usr/bin:/bin", "ASSETS_DIR": str(assets)}
    script = str(ANDROID / "copy_assets.sh")
    done = subprocess.run(["sh", script, str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in assets.iterdir()) == ["manifest.json", "model_fp32.tflite"]
    assert (assets / "manifest.json").read_bytes() == (export_dir / "manifest.json").read_bytes()

    (export_dir / "model_fp32.tflite").write_bytes(b"TFL3 replaced after export")
    tampered = subprocess.run(["sh", script, str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert tampered.returncode == 1 and "sha256" in tampered.stderr
    unlisted = subprocess.run(["sh", script, str(tmp_path / "run"), "best.pt"], env=env, capture_output=True, text=True)
    assert unlisted.returncode == 1
    missing = subprocess.run(["sh", script, str(tmp_path / "nowhere")], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "manifest.json not found" in missing.stderr


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX sh")
def test_copy_assets_defaults_to_the_shipped_model(tmp_path):
    """No argument: the shipped 68-point model's int8 TFLite and manifest, so the app works on a
    real face without training anything."""
    from facemark import pretrained

    assets = tmp_path / "assets"
    env = {"PATH": "/usr/bin:/bin", "ASSETS_DIR": str(assets)}
    done = subprocess.run(["sh", str(ANDROID / "copy_assets.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    folder = pretrained.ROOT / "ibug68"
    card = pretrained.read_card(folder)
    model = card["artifacts"][card["default"]]["file"]
    assert sorted(p.name for p in assets.iterdir()) == ["manifest.json", model]
    assert (assets / model).read_bytes() == (folder / model).read_bytes()


def test_android_xml_parses_and_resources_exist():
    xml_files = sorted(ANDROID.rglob("*.xml"))
    assert len(xml_files) >= 5
    for path in xml_files:
        ET.parse(path)  # raises ParseError naming the line
    android = "{http://schemas.android.com/apk/res/android}"
    manifest = ET.parse(ANDROID / "app" / "src" / "main" / "AndroidManifest.xml").getroot()
    assert "android.permission.CAMERA" in [p.get(f"{android}name") for p in manifest.iter("uses-permission")]
    assert [a.get(f"{android}name") for a in manifest.iter("activity")] == [".MainActivity"]
    res = ANDROID / "app" / "src" / "main" / "res"
    declared_ids = {m for p in res.rglob("*.xml") for m in re.findall(r'@\+id/(\w+)', p.read_text())}
    strings = {e.get("name") for p in res.rglob("*.xml") for e in ET.parse(p).getroot().iter("string")}
    kotlin = "\n".join(p.read_text() for p in KOTLIN.rglob("*.kt"))
    used_ids = set(re.findall(r"R\.id\.(\w+)", kotlin))
    used_strings = set(re.findall(r"R\.string\.(\w+)", kotlin))
    used_strings |= {m for p in res.rglob("*.xml") for m in re.findall(r"@string/(\w+)", p.read_text())}
    assert used_ids and used_ids <= declared_ids, used_ids - declared_ids
    assert used_strings <= strings, used_strings - strings


def test_gradle_catalog_covers_every_alias():
    catalog = tomllib.loads((ANDROID / "gradle" / "libs.versions.toml").read_text())
    scripts = [ANDROID / "build.gradle.kts", *(ANDROID / module / "build.gradle.kts" for module in ("app", "core"))]
    text = "\n".join(p.read_text() for p in scripts)
    for table, pattern in (("libraries", r"\blibs\.(?!plugins\.|versions\.)([\w.]+)"),
                           ("plugins", r"\blibs\.plugins\.([\w.]+)")):
        declared = {k.replace("-", ".").replace("_", ".") for k in catalog[table]}
        used = set(re.findall(pattern, text))
        assert used and used <= declared, (table, used - declared)
    for entry in list(catalog["libraries"].values()) + list(catalog["plugins"].values()):
        ref = entry.get("version", {}).get("ref") if isinstance(entry, dict) else None
        assert ref is None or ref in catalog["versions"], entry
    core_script = (ANDROID / "core" / "build.gradle.kts").read_text()
    assert "java-library" in core_script and "implementation(" not in core_script  # no third-party deps
    assert 'project(":core")' in (ANDROID / "app" / "build.gradle.kts").read_text()
    wrapper = (ANDROID / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    assert re.search(r"distributionUrl=https\\://services\.gradle\.org/distributions/gradle-[\d.]+-bin\.zip", wrapper)
