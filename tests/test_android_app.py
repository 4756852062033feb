"""The Android app's files agree with the Python side: the asset names and defaults the app and its
copy script use, the copy script itself, the XML resources and the Gradle version catalog."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from java_core import ANDROID, CORE, REPO

from facemark.config import load_config
from facemark.convert.formats import float_artifact
from facemark.manifest import MANIFEST_NAME, artifact_entry, new_manifest, record_artifact, save_manifest
from facemark.schemes import load_scheme
from facemark.weights import IMAGENET

APP_DEFAULTS = CORE / "main" / "java" / "org" / "facemark" / "core" / "AppDefaults.java"
KOTLIN = ANDROID / "app" / "src" / "main" / "java"


def _java_constant(name: str) -> str:
    match = re.search(rf"\b{name}\s*=\s*(.+?);", APP_DEFAULTS.read_text())
    assert match, f"{APP_DEFAULTS}: no constant {name}"
    return match.group(1).strip()


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
