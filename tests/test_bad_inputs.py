"""The bad-input catalogue: one case per way a user can get things wrong, across all stages.

Each case runs the real CLI (facemark.cli.main) and asserts a non-zero exit, a one-line error that
names the offending file or key (no traceback), and that nothing partial is left under a final name.
Data is a tiny synthetic dataset made by `facemark synth`; models are untrained tiny checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from facemark import Landmarker
from facemark.cli import main
from facemark.config import base_config_path, leaf_fields, load_config
from facemark.data.fingerprint import fingerprint_split
from facemark.data.layout import SPLITS
from facemark.data.synth import generate_dataset
from facemark.errors import ArtifactError, DataError
from facemark.manifest import drop_artifact, verify_artifact
from facemark.model import build_model, checkpoint_dict
from facemark.runlock import lock_path
from facemark.train.engine import train

sys.path.insert(0, str(Path(__file__).parent))
from drawn_faces import make_drawn_split  # noqa: E402

COUNTS = {"train": 6, "val": 3, "test": 3}


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad") / "synth"
    generate_dataset(root, scheme="lapa106", counts=COUNTS, seed=3)
    return root


@pytest.fixture()
def data(clean_data, tmp_path) -> Path:
    """A private copy each case may break."""
    root = tmp_path / "data"
    shutil.copytree(clean_data, root)
    return root


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory, clean_data) -> Path:
    """A run folder with an untrained 64 px MobileNetV3-L checkpoint on the synthetic data."""
    run = tmp_path_factory.mktemp("run") / "run"
    run.mkdir()
    cfg = load_config(overrides=["model.pretrained=false", "data.input_size=64", "data.detector=synth",
                                 "export.formats=[onnx]", "export.parity_images=2"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 106).eval()
    fingerprints = {split: fingerprint_split(clean_data, split, cfg.data) for split in SPLITS}  # as train records
    torch.save(checkpoint_dict(model, cfg, epoch=1, val_nme=None, data_root=str(clean_data),
                               data_fingerprint=fingerprints), run / "best.pt")
    return run


def error_line(capsys, argv: list[str], code: int = 2) -> str:
    """Run the CLI; assert the exit code, no traceback and exactly one error line; return that line."""
    got = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if ": error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def first(root: Path, split: str, sub: str) -> Path:
    return sorted((root / split / sub).iterdir())[0]


def no_partial(folder: Path) -> None:
    leftovers = [p for p in folder.rglob("*") if p.name.endswith(".partial")]
    assert not leftovers, leftovers


# ---------------------------------------------------------------- data: check-data lists each problem
def _corrupt(root):
    path = first(root, "train", "images")
    path.write_bytes(b"this is not a jpeg at all")
    return path


def _truncated(root):
    path = first(root, "train", "images")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


def _count_vs_scheme(root):
    path = first(root, "train", "landmarks")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["68"] + lines[1:69]) + "\n")
    return path


def _count_vs_lines(root):
    path = first(root, "train", "landmarks")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-3]) + "\n")
    return path


def _replace_line(root: Path, split: str, index: int, text: str) -> Path:
    """Overwrite line `index` (0 = the count line) of the split's first landmark file."""
    path = first(root, split, "landmarks")
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")
    return path


def _nan(root):
    return _replace_line(root, "val", 5, "nan 12.0")


def _non_numeric(root):
    return _replace_line(root, "val", 7, "12.0 abc")


def _outside(root):
    return _replace_line(root, "test", 3, "99999.0 12.0")


def _image_without_landmarks(root):
    path = first(root, "train", "landmarks")
    path.unlink()
    return path.stem


def _landmarks_without_image(root):
    path = first(root, "train", "images")
    path.unlink()
    return path.stem


def _empty_split(root):
    for path in (root / "val" / "images").iterdir():
        path.unlink()
    for path in (root / "val" / "landmarks").iterdir():
        path.unlink()
    return root / "val" / "images"


@pytest.mark.parametrize("breaker", [_corrupt, _truncated, _count_vs_scheme, _count_vs_lines, _nan,
                                     _non_numeric, _outside, _image_without_landmarks,
                                     _landmarks_without_image, _empty_split])
def test_check_data_names_the_bad_file(data, capsys, breaker):
    culprit = breaker(data)
    assert main(["check-data", str(data), "--scheme", "lapa106"]) == 1
    out = capsys.readouterr().out
    assert str(culprit) in out or (isinstance(culprit, str) and culprit in out), out


def test_train_refuses_a_dataset_that_fails_the_checks(data, capsys, tmp_path):
    culprit = _nan(data)
    line = error_line(capsys, ["train", "--data", data, "--run", tmp_path / "run", "--set", "data.detector=synth",
                               "--set", "model.pretrained=false", "--set", "data.input_size=64",
                               "--set", "train.epochs=1", "--set", "train.warmup_epochs=0", "--set", "train.device=cpu"])
    assert str(culprit) in line
    assert not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("convert", ["RGBA", "GRAY"])
def test_png_with_alpha_and_grayscale_are_accepted(data, capsys, convert):
    """Not errors: an alpha channel is dropped and grayscale is expanded, and check-data agrees."""
    path = first(data, "train", "images")
    image = cv2.imread(str(path))
    image = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA if convert == "RGBA" else cv2.COLOR_BGR2GRAY)
    path.unlink()
    cv2.imwrite(str(path.with_suffix(".png")), image)
    assert main(["check-data", str(data), "--scheme", "lapa106"]) == 0, capsys.readouterr().out


def test_missing_split_and_missing_root(data, capsys, tmp_path):
    shutil.rmtree(data / "test")
    assert main(["check-data", str(data), "--split", "test"]) == 1
    assert str(data / "test") in capsys.readouterr().out
    line = error_line(capsys, ["eval", "--ckpt", tmp_path / "x.pt", "--data", tmp_path / "nowhere"])
    assert "x.pt" in line


def test_unknown_scheme(data, capsys):
    line = error_line(capsys, ["check-data", data, "--scheme", "lapa107"])
    assert "lapa107" in line and "lapa106" in line


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("override, key", [("train.epohcs=2", "train.epohcs"), ("train.epochs=two", "train.epochs"),
                                           ("data.scheme=nope", "nope"), ("model.arch=resnet1800", "resnet1800")])
def test_config_errors_name_the_key(data, capsys, tmp_path, override, key):
    line = error_line(capsys, ["train", "--data", data, "--run", tmp_path / "run",
                               "--set", "model.pretrained=false", "--set", "data.detector=synth",
                               "--set", "data.input_size=64", "--set", "train.epochs=1", "--set", "train.warmup_epochs=0",
                               "--set", override])
    assert key in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_config_file_unknown_key_names_file(data, capsys, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("train:\n  epochs: 2\n  lerning_rate: 0.1\n")
    line = error_line(capsys, ["train", "--config", config, "--data", data, "--run", tmp_path / "run"])
    assert str(config) in line and "train.lerning_rate" in line


def test_offline_pretrained_without_file(data, capsys, tmp_path):
    line = error_line(capsys, ["train", "--data", data, "--run", tmp_path / "run", "--set", "model.arch=resnet18",
                               "--set", "data.detector=synth", "--set", "model.pretrained=true"])
    assert "pretrained_file" in line


def test_missing_box_cache_names_the_command(data, capsys, tmp_path):
    line = error_line(capsys, ["train", "--data", data, "--run", tmp_path / "run", "--set", "data.detector=mtcnn",
                               "--set", "model.pretrained=false", "--set", "data.input_size=64"])
    assert "facemark boxes" in line and "mtcnn" in line


def test_detector_finds_no_face_anywhere(data, capsys, ckpt_run, tmp_path):
    for path in (data / "test" / "boxes" / "synth").glob("*.txt"):
        path.write_text("miss\n")
    run = tmp_path / "run"
    shutil.copytree(ckpt_run, run)
    cfg = torch.load(run / "best.pt", weights_only=True)
    cfg["config"]["data"]["on_miss"] = "skip"
    torch.save(cfg, run / "best.pt")
    line = error_line(capsys, ["eval", "--ckpt", run / "best.pt", "--data", data, "--split", "test"])
    assert "missed all" in line and str(data / "test") in line


@pytest.mark.parametrize("detector, fragment", [("yolo9000", "mtcnn"), ("synth", "synth")])
def test_boxes_unknown_or_pseudo_detector(data, capsys, detector, fragment):
    line = error_line(capsys, ["boxes", data, "--detector", detector])
    assert detector in line and fragment in line


def test_synth_into_someone_elses_folder(capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    line = error_line(capsys, ["synth", "--out", tmp_path / "mine", "--n-train", 2, "--n-val", 1, "--n-test", 1])
    assert str(tmp_path / "mine") in line
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


# ---------------------------------------------------------------- checkpoints
def test_missing_checkpoint(data, capsys, tmp_path):
    line = error_line(capsys, ["eval", "--ckpt", tmp_path / "none.pt", "--data", data])
    assert str(tmp_path / "none.pt") in line


def test_truncated_checkpoint(data, capsys, ckpt_run, tmp_path):
    broken = tmp_path / "best.pt"
    broken.write_bytes((ckpt_run / "best.pt").read_bytes()[:5000])
    line = error_line(capsys, ["eval", "--ckpt", broken, "--data", data])
    assert str(broken) in line and "not a readable checkpoint" in line


def test_checkpoint_of_another_scheme(capsys, ckpt_run, tmp_path):
    other = tmp_path / "ibug"
    generate_dataset(other, scheme="ibug68", counts=COUNTS, seed=1)
    line = error_line(capsys, ["eval", "--ckpt", ckpt_run / "best.pt", "--data", other, "--split", "test"])
    assert "68 points" in line and "106" in line


def test_resume_without_checkpoint_and_overwrite_refusal(data, capsys, tmp_path, ckpt_run):
    run = tmp_path / "run"
    line = error_line(capsys, ["train", "--data", data, "--run", run, "--resume", "--set", "data.detector=synth",
                               "--set", "model.pretrained=false"])
    assert str(run) in line
    shutil.copytree(ckpt_run, run)
    (run / "last.pt").write_bytes((run / "best.pt").read_bytes())
    line = error_line(capsys, ["train", "--data", data, "--run", run, "--set", "data.detector=synth",
                               "--set", "model.pretrained=false"])
    assert str(run) in line and "--resume" in line


# ---------------------------------------------------------------- CLI usage
@pytest.mark.parametrize("argv", [["validate", "run", "--threads", "0"], ["export", "run", "--format", "tensorrt"],
                                  ["quantize", "run", "--calibration-count", "0"], ["train", "--set", "x=1"]])
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_bad_override_syntax(data, capsys, tmp_path):
    line = error_line(capsys, ["train", "--data", data, "--run", tmp_path / "r", "--set", "train.epochs"])
    assert "train.epochs" in line and "KEY=VALUE" in line


# ---------------------------------------------------------------- export, quantize, validate
@pytest.fixture(scope="module")
def exported_run(tmp_path_factory, ckpt_run) -> Path:
    """ckpt_run with an ONNX export (the cheapest format) and its manifest."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(ckpt_run, run)
    assert main(["export", str(run), "--format", "onnx"]) == 0
    return run


@pytest.fixture()
def run_copy(exported_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(exported_run, run)
    return run


def _escape(run: Path, kind: str) -> str:
    """Point the manifest's onnx_fp32 entry at a copy of its file outside RUN/export, by `kind`:
    a `..` name, an absolute path, or a symlink inside the folder -> the name written."""
    export = run / "export"
    outside = run / "outside.onnx"
    shutil.copyfile(export / "model_fp32.onnx", outside)
    name = {"dotdot": "../outside.onnx", "absolute": str(outside), "symlink": "link.onnx"}[kind]
    if kind == "symlink":
        (export / "link.onnx").symlink_to(outside)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"]["onnx_fp32"]["file"] = name
    (export / "manifest.json").write_text(json.dumps(manifest))
    return name


# each reader: (run, tmp) -> a CLI argv (exit 2, one error line) or a callable (raises ArtifactError)
ESCAPE_READERS = {
    "landmarker run": lambda run, tmp: lambda: Landmarker(run),
    "landmarker artifact": lambda run, tmp: lambda: Landmarker(run / "export" / "model_fp32.onnx"),
    "verify_artifact": lambda run, tmp: lambda: verify_artifact(run / "export", "onnx_fp32"),
    "drop_artifact": lambda run, tmp: lambda: drop_artifact(run / "export", "onnx_fp32"),
    "predict": lambda run, tmp: ["predict", run, tmp / "face.png", "--out", tmp / "out"],
    "validate": lambda run, tmp: ["validate", run],
    "quantize": lambda run, tmp: ["quantize", run, "--format", "onnx"],
    "package": lambda run, tmp: ["package", run, "--name", "x", "--out", tmp / "x"],
}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
@pytest.mark.parametrize("reader", sorted(ESCAPE_READERS))
def test_a_manifest_file_outside_its_folder_is_refused(run_copy, tmp_path, capsys, kind, reader):
    """Zip-slip: every reader of a manifest refuses a file name that leaves RUN/export, in one line,
    before opening it; the file outside is never read (its bytes are still there, unhashed)."""
    name = _escape(run_copy, kind)
    cv2.imwrite(str(tmp_path / "face.png"), np.full((64, 64, 3), 128, np.uint8))
    expected = (f"manifest.json: artifacts.onnx_fp32.file {name!r} "
                + ("must be a file name relative to" if kind == "absolute" else "leads outside"))
    action = ESCAPE_READERS[reader](run_copy, tmp_path)
    if isinstance(action, list):
        assert expected in error_line(capsys, action)
    else:
        with pytest.raises(ArtifactError, match=re.escape(expected)):
            action()
    assert (run_copy / "outside.onnx").is_file()


def _bend(run: Path, **changes) -> None:
    """Edit the run-level contract of RUN/export/manifest.json: `section__key=value` pairs."""
    path = run / "export" / "manifest.json"
    manifest = json.loads(path.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        manifest[section][key] = value
    path.write_text(json.dumps(manifest))


# (contract edit, the one line every reader gives); the run is 64 px, lapa106 (106 points)
BENT_CONTRACTS = {
    "size out of range": ({"input__size": 100000}, "manifest.json: input.size (bounded as data.input_size) must be "
                                                   "an integer from 32 to 1024 (pixels), got 100000"),
    "size not the artifact's": ({"input__size": 128}, "model_fp32.onnx: the artifact takes [1, 3, 64, 64] (NCHW) "
                                                      "inputs, its manifest says input.size 128"),
    "margin out of range": ({"crop__margin": -1}, "manifest.json: crop.margin (bounded as data.margin) must be "
                                                  "a fraction of the box size in [0, 2], got -1"),
    "unknown scheme": ({"scheme__name": "dlib5"}, "manifest.json: scheme.name: unknown landmark scheme 'dlib5'"),
    "points not the scheme's": ({"scheme__num_points": 68}, "manifest.json: scheme lapa106 has 106 points (212 output "
                                                            "values), the manifest says scheme.num_points 68"),
    "another scheme": ({"scheme__name": "ibug68", "scheme__num_points": 68, "output__values": 136},
                       "model_fp32.onnx: the artifact returns 212 values per face, its manifest's scheme has 68 "
                       "points (136 values)"),
}


@pytest.mark.parametrize("case", sorted(BENT_CONTRACTS))
def test_a_bent_contract_is_refused_at_load(run_copy, tmp_path, capsys, case):
    """A manifest edited to a size out of range, another size or scheme than its artifact's: one
    line from Landmarker, predict and validate, before a crop is cut or a number is reported."""
    changes, expected = BENT_CONTRACTS[case]
    _bend(run_copy, **changes)
    with pytest.raises(ArtifactError, match=re.escape(expected)):
        Landmarker(run_copy / "export" / "model_fp32.onnx")
    cv2.imwrite(str(tmp_path / "face.png"), np.full((64, 64, 3), 128, np.uint8))
    assert expected in error_line(capsys, ["predict", run_copy / "export" / "model_fp32.onnx", tmp_path / "face.png",
                                           "--out", tmp_path / "out"])
    if "artifact" not in expected:   # validate checks the manifest against the checkpoint (next test)
        assert expected in error_line(capsys, ["validate", run_copy])


def test_validate_refuses_a_manifest_whose_scheme_is_not_the_checkpoints(run_copy, capsys):
    _bend(run_copy, scheme__name="ibug68", scheme__num_points=68, output__values=136)
    # the checkpoint is lapa106, the manifest now says ibug68: refused before any row runs
    line = error_line(capsys, ["validate", run_copy])
    assert "ibug68" in line and "lapa106" in line


def test_landmarker_misuse_has_one_answer_each():
    """Empty and 1x1 images have no face (the detector finds none); a given box with no pixel of
    the image is a DataError naming it (its landmarks would be padding's, off the image); a box
    that runs off the border is a face at the edge and is kept."""
    landmarker = Landmarker("ibug68")
    for shape in [(0, 0, 3), (1, 1, 3), (2, 2, 3)]:
        assert landmarker.predict(np.zeros(shape, np.uint8)) == []
    image = np.zeros((100, 120, 3), np.uint8)
    with pytest.raises(DataError, match=re.escape("boxes[1] = [200.0, 10.0, 260.0, 70.0]: lies entirely "
                                                  "outside the 120x100 image (a box must overlap it)")):
        landmarker.predict(image, boxes=[[10, 10, 60, 60], [200, 10, 260, 70]])
    with pytest.raises(DataError, match="lies entirely outside the 0x0 image"):
        landmarker.predict(np.zeros((0, 0, 3), np.uint8), boxes=[0, 0, 10, 10])
    edge = landmarker.predict(image, boxes=[90, -20, 150, 40])[0]
    assert edge.landmarks.shape == (68, 2) and np.isfinite(edge.landmarks).all()


@pytest.mark.parametrize("source", ["pytorch", "onnx", "tflite"])
def test_one_landmarker_serves_eight_threads(exported_run, source):
    """Servers share one model across a thread pool: every backend gives, from 8 threads at once,
    the landmarks it gives from one (LiteRT: an interpreter per thread, facemark.runtime.runners)."""
    path = {"pytorch": exported_run / "best.pt", "onnx": exported_run / "export" / "model_fp32.onnx",
            "tflite": "ibug68"}[source]
    landmarker = Landmarker(path)
    images = list(np.random.default_rng(0).integers(0, 256, (12, 96, 96, 3), dtype=np.uint8))
    box = [12.0, 10.0, 84.0, 88.0]
    serial = [landmarker.predict(image, boxes=box)[0].landmarks for image in images]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda image: landmarker.predict(image, boxes=box)[0].landmarks, images * 4))
    for i, points in enumerate(threaded):
        np.testing.assert_array_equal(points, serial[i % len(images)])


def test_tampered_artifact_is_refused(run_copy, capsys):
    onnx_path = run_copy / "export" / "model_fp32.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:-10] + b"0123456789")
    assert main(["quantize", str(run_copy), "--format", "onnx"]) == 1  # a failed row, not a crash
    captured = capsys.readouterr()
    assert "model_fp32.onnx" in captured.out + captured.err and "sha256" in captured.out + captured.err
    assert not list((run_copy / "export").glob("*int8*"))
    assert main(["validate", str(run_copy), "--limit", "2"]) == 1
    assert str(onnx_path) in capsys.readouterr().err


# quantize exports what a format lacks instead (tests/test_quantize_sources.py)
@pytest.mark.parametrize("verb", ["validate"])
def test_manifest_missing(run_copy, capsys, verb):
    (run_copy / "export" / "manifest.json").unlink()
    line = error_line(capsys, [verb, run_copy])
    assert str(run_copy / "export" / "manifest.json") in line


def test_manifest_not_json(run_copy, capsys):
    (run_copy / "export" / "manifest.json").write_text("{ half a manifest")
    line = error_line(capsys, ["validate", run_copy])
    assert "manifest.json" in line and "JSON" in line


def test_validate_with_no_artifacts(run_copy, capsys):
    path = run_copy / "export" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["artifacts"] = {}
    path.write_text(json.dumps(manifest))
    line = error_line(capsys, ["validate", run_copy])
    assert "manifest.json" in line and "artifact" in line


def test_export_of_a_run_without_checkpoint(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    line = error_line(capsys, ["export", tmp_path / "run", "--format", "onnx"])
    assert str(tmp_path / "run" / "best.pt") in line


def test_calibration_set_smaller_than_asked(run_copy, capsys):
    """Not fatal: all faces are used and a one-line warning names the split and the count."""
    code = main(["quantize", str(run_copy), "--format", "onnx", "--calibration-count", "500"])
    err = capsys.readouterr().err
    assert code == 0, err
    warning = [line for line in err.splitlines() if "warning" in line and "train" in line]
    assert warning and "6" in warning[0]


def _export_in_child(run: Path, limit_bytes: int | None = None, readonly: Path | None = None):
    """Run `facemark export` in a child process with a file-size limit (a full disk) ."""
    import resource
    import signal
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG like a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "facemark", "export", str(run), "--format", "onnx"],
                          capture_output=True, text=True, preexec_fn=limit if limit_bytes else None)


def test_export_to_a_full_disk_leaves_nothing_partial(ckpt_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ckpt_run, run)
    result = _export_in_child(run, limit_bytes=1_000_000)
    # the format's row fails with the OS error's first line; the exit code says something failed
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr and "File too large" in result.stdout
    export = run / "export"
    assert not (export / "model_fp32.onnx").exists()
    no_partial(run)


def test_export_to_a_read_only_folder(ckpt_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ckpt_run, run)
    (run / "export").mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(run / "export")],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        result = _export_in_child(run)
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if ": error:" in line]
        assert len(errors) == 1 and str(run / "export") in errors[0] and "Read-only" in errors[0]
    finally:
        subprocess.run(["umount", str(run / "export")], check=True)


# ---------------------------------------------------------------- config values, every key of base.yaml
# At least one out-of-range, wrong-choice (or, for booleans, wrong-type) value per key. A key added
# to base.yaml without a line here fails test_every_base_key_has_bad_values.
BAD_VALUES: dict[str, list[str]] = {
    "model.arch": ["resnet1800"],
    "model.pretrained": ["maybe"],
    "model.pretrained_file": ["''"],
    "model.freeze_blocks": ["-1"],
    "model.drop_rate": ["1.0", "-0.1"],
    "model.head": ["gap"],
    "model.head_channels": ["0", "4096"],
    "model.grid_coarse": ["middle"],
    "data.scheme": ["lapa107"],
    "data.input_size": ["0", "4096"],
    "data.margin": ["-0.1", "5"],
    "data.detector": ["../boxes", "''"],
    "data.landmark_box_prob": ["1.5", "-0.5"],
    "data.on_miss": ["ignore"],
    "data.skip_bad_samples": ["2"],
    "data.limit": ["0"],
    "data.workers": ["-1"],
    "data.max_image_pixels": ["0", "2000000000"],    # above 2^30, OpenCV's own decoder limit
    "data.sets": ["data/dt", "[{root: data/dt}]", "[{root: data/dt, scheme: dlib5, weight: 1.0}]",
                  "[{root: data/dt, scheme: ibug68, weight: 0}]",
                  "[{root: a, scheme: ibug68, weight: 1}, {root: b, scheme: ibug68, weight: 1}]"],
    "augment.rotate": ["-5", "270"],
    "augment.box_shift": ["0.5"],
    "augment.brightness": ["1.5"],
    "augment.contrast": ["-0.2"],
    "augment.saturation": ["2"],
    "augment.hue": ["0.6"],
    "augment.flip": ["1.5", "-0.1"],
    "augment.scale": ["1.0", "-0.1"],
    "augment.translate": ["1.5"],
    "augment.occlusion": ["1.5"],
    "augment.occlusion_area": ["0", "2"],
    "augment.blur": ["-0.1"],
    "train.epochs": ["0"],
    "train.batch_size": ["0", "1"],
    "train.lr": ["0", "-0.001"],
    "train.weight_decay": ["-1"],
    "train.optimizer": ["adamx"],
    "train.scheduler": ["linear"],
    "train.warmup_epochs": ["-1", "60"],          # 60 = base.yaml's train.epochs (must be less)
    "train.lr_update": ["batch"],
    "train.loss": ["huber"],
    "train.wing_w": ["0"],
    "train.wing_epsilon": ["-0.02"],
    "train.smooth_l1_beta": ["0", "2"],
    "train.pip_map_weight": ["0", "-1"],
    "train.ema": ["often"],
    "train.ema_decay": ["1.0", "0"],
    "train.amp": ["3"],
    "train.channels_last": ["nhwc"],
    "train.seed": ["-1"],
    "train.device": ["tpu"],
    "train.threads": ["0", "two"],
    "train.transfer_weight": ["-0.1", "11"],
    "train.transfer_epoch": ["0"],
    "train.pseudo_weight": ["-0.1", "11"],
    "train.pseudo_epoch": ["0"],
    "train.pseudo_keep": ["0", "1.5"],
    "export.formats": ["[tensorrt]", "[]"],
    "export.opset": ["9", "99"],
    "export.dynamic_batch": ["perhaps"],
    "export.bake_preprocessing": ["1"],
    "export.parity_images": ["0"],
    "quantize.formats": ["[onnx, onnx]", "[tflite, ncnn]"],
    "quantize.calibration_count": ["0"],
    "quantize.calibration_seed": ["-3"],
    "quantize.tflite_io": ["int16"],
    "quantize.onnx_activation": ["int4"],
    "quantize.onnx_dynamic": ["sometimes"],
    "quantize.max_output_step": ["0", "2"],
    "quantize.calibration_method": ["kl"],
    "quantize.calibration_percentile": ["50", "100"],
    "quantize.float_decode": ["maybe"],
    "quantize.mixed": ["maybe"],
    "quantize.mixed_target": ["-0.1", "2"],
    "quantize.mixed_min_int8_macs": ["1.5"],
    "quantize.mixed_eval_faces": ["0"],
    "quantize.all_int8_margin": ["-0.1", "2"],
    "quantize.qat": ["often"],
    "quantize.qat_formats": ["[coreml]", "[onnx, onnx]"],
    "quantize.qat_epochs": ["0", "1000"],
    "quantize.qat_lr": ["0", "-1e-4"],
    "validate.threads": ["0"],
    "validate.warmup": ["-1"],
    "validate.runs": ["0"],
    "validate.max_nme_increase": ["-0.01"],
    "validate.max_nme": ["0"],
    "validate.stability_faces": ["-1"],
    "validate.stability_draws": ["0"],
    "validate.stability_shift": ["0", "0.5"],
    "validate.stability_noise": ["-1"],
    "validate.max_stability": ["0"],
    "validate.video_frames": ["-1", "8", "1.5"],
    "predict.model": ["3"],
    "predict.detector": ["dlib"],
    "predict.min_score": ["-0.5"],
    "predict.track": ["sometimes"],
    "predict.redetect_every": ["0", "2.5"],
    "predict.lost_iou": ["-0.1", "1"],
    "predict.match_iou": ["0", "1.5"],
    "predict.filter": ["kalman"],
    "predict.min_cutoff": ["0", "-1"],
    "predict.beta": ["-0.5"],
    "predict.d_cutoff": ["0"],
    "infer.flip": ["mirror"],
    "infer.passes": ["0", "9", "1.5"],
    "quantize.qat_weight_decay": ["-0.1"],
    "quantize.explain_faces": ["0"],
    "validate.batch": ["0", "2.5"],
    "synth.out": ["''"],
    "synth.train": ["0"],
    "synth.val": ["-1"],
    "synth.test": ["-1"],
    "synth.seed": ["-1"],
    "synth.workers": ["0"],
    "runs.train": ["''"],
    "runs.pipeline": ["''"],
}


def _leaves(section: dict, prefix: str = "") -> list[str]:
    return [leaf for key, value in section.items()
            for leaf in (_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])]


def test_every_base_key_has_bad_values():
    base = _leaves(yaml.safe_load(base_config_path().read_text()))
    assert sorted(BAD_VALUES) == sorted(base) == sorted(leaf_fields())


@pytest.mark.parametrize("key, value", [(key, value) for key, values in BAD_VALUES.items() for value in values])
def test_every_config_value_is_checked_before_data(capsys, tmp_path, key, value):
    """The data root does not exist: the one error line must be about the key, so the value was
    refused before any data was read, and no run folder was made."""
    line = error_line(capsys, ["train", "--data", tmp_path / "no-such-data", "--run", tmp_path / "run",
                               "--set", f"{key}={value}"])
    assert f"--set {key}={value}: " in line and f"'{key}" in line, line   # 'data.sets[0].scheme' is about data.sets
    assert "no-such-data" not in line
    assert not (tmp_path / "run").exists()


def test_config_file_value_names_the_file(capsys, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("data:\n  landmark_box_prob: 1.5\n")
    line = error_line(capsys, ["pipeline", "--config", config, "--data", tmp_path / "nowhere", "--run", tmp_path / "r"])
    assert line.endswith(f"{config}: 'data.landmark_box_prob' must be a probability in [0, 1], got 1.5")


def test_pipeline_refuses_int8_without_its_float_source(capsys, tmp_path):
    line = error_line(capsys, ["pipeline", "--data", tmp_path / "nowhere", "--run", tmp_path / "r",
                               "--set", "export.formats=[coreml]", "--set", "quantize.formats=[onnx]"])
    assert "'quantize.formats' has onnx" in line and "add onnx to export.formats" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, key", [(["validate", "RUN", "--max-nme-increase", "-1"], "validate.max_nme_increase"),
                                       (["validate", "RUN", "--max-nme", "0"], "validate.max_nme")])
def test_command_line_values_follow_the_key_rules(capsys, ckpt_run, argv, key):
    line = error_line(capsys, [ckpt_run if a == "RUN" else a for a in argv])
    assert f"'{key}' must be" in line and argv[2] in line


# ---------------------------------------------------------------- one writer per run folder
HOLDER = """\
import sys
from facemark.runlock import hold_run_lock
with hold_run_lock(sys.argv[1], "train"):
    print("held", flush=True)
    sys.stdin.read()   # until the test closes stdin
"""


def test_second_writer_is_refused_naming_the_holder(capsys, run_copy, data):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_copy)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in run_copy.rglob("*") if p.is_file()}
        for argv in (["export", run_copy, "--format", "onnx"], ["quantize", run_copy, "--format", "onnx"],
                     ["validate", run_copy], ["train", "--data", data, "--run", run_copy, "--resume",
                                              "--set", "data.detector=synth", "--set", "model.pretrained=false"],
                     ["pipeline", "--data", data, "--run", run_copy]):
            line = error_line(capsys, argv)
            assert f"{run_copy}: run folder is in use by pid {holder.pid} on {socket.gethostname()}, " \
                   f"`facemark train` since " in line, line
        assert {p: p.stat().st_mtime_ns for p in run_copy.rglob("*") if p.is_file()} == before   # nothing written
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    assert not lock_path(run_copy).exists()   # released by the holder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_lock_of_a_killed_process_is_taken_over(capsys, run_copy):
    pid = _dead_pid()
    lock_path(run_copy).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "verb": "export",
                                               "started": "2026-01-01T00:00:00+00:00", "process_start": None}))
    assert main(["export", str(run_copy), "--format", "onnx"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "stale lock" in line]
    assert len(notes) == 1 and f"pid {pid}" in notes[0] and str(lock_path(run_copy)) in notes[0]
    assert not lock_path(run_copy).exists()
    no_partial(run_copy)


def test_lock_from_another_host_is_not_guessed_at(capsys, run_copy):
    record = {"pid": os.getpid(), "host": "build-agent-7", "verb": "quantize", "started": "2026-01-01T00:00:00+00:00"}
    lock_path(run_copy).write_text(json.dumps(record))
    line = error_line(capsys, ["export", run_copy, "--format", "onnx"])
    assert "build-agent-7" in line and f"delete {lock_path(run_copy)}" in line
    assert json.loads(lock_path(run_copy).read_text()) == record   # left alone


# ---------------------------------------------------------------- Ctrl-C
TRAIN_SET = ["model.arch=mobilenetv3_small_050", "model.pretrained=false", "data.input_size=64", "data.detector=drawn",
             "data.workers=0", "train.epochs=8", "train.warmup_epochs=0", "train.batch_size=4", "train.device=cpu",
             "train.amp=false"]


def test_ctrl_c_during_training_exits_130_and_resumes(tmp_path):
    data, run = tmp_path / "drawn", tmp_path / "run"
    # 8 epochs of 6 steps: the SIGINT lands after epoch 1 with most of the run still to go
    make_drawn_split(data, "train", 24)
    make_drawn_split(data, "val", 2)
    argv = ["train", "--data", str(data), "--run", str(run)] + [a for item in TRAIN_SET for a in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT back to its default in the child: a test run started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    process = subprocess.Popen([sys.executable, "-m", "facemark", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (run / "last.pt").is_file():   # mid-training: after the first saved epoch
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"facemark train: interrupted (Ctrl-C); resume with: facemark {shlex.join(argv)} --resume"]
    no_partial(run)
    assert not lock_path(run).exists()
    saved = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= saved < 8
    hinted = shlex.split(lines[0].split("resume with: ")[1])
    assert main(hinted[1:]) == 0   # the hinted command, through the same CLI in this process
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == list(range(1, 9))


@pytest.mark.parametrize("verb_argv, hint", [
    (["export", "runs/x", "--format", "onnx"], "run the same command again to resume: facemark export runs/x --format onnx"),
    (["train", "--data", "d", "--run", "NEW"], "no epoch was saved; start again with: facemark train --data d --run NEW"),
])
def test_interrupt_hint_per_verb(tmp_path, verb_argv, hint):
    from facemark.cli import build_parser, resume_hint

    argv = [str(tmp_path / "new") if a == "NEW" else a for a in verb_argv]
    assert resume_hint(build_parser().parse_args(argv), argv) == hint.replace("NEW", str(tmp_path / "new"))


# ---------------------------------------------------------------- the faces behind the numbers
def _nudge_first_test_face(root: Path) -> Path:
    """Move one landmark of the first test face by one pixel: a still valid, different split."""
    path = first(root, "test", "landmarks")
    x, y = map(float, path.read_text().splitlines()[5].split())
    return _replace_line(root, "test", 5, f"{x + 1.0} {y}")


def test_changed_test_split_refused_by_baseline_and_warned_by_eval(capsys, run_copy, clean_data, data, tmp_path):
    assert main(["validate", str(run_copy), "--data", str(clean_data)]) in (0, 1)
    baseline = tmp_path / "blessed.json"
    shutil.copy(run_copy / "validation" / "validation.json", baseline)
    report = json.loads(baseline.read_text())
    assert report["data"]["fingerprint"] == fingerprint_split(clean_data, "test", load_config(
        overrides=["data.detector=synth"]).data)
    capsys.readouterr()
    _nudge_first_test_face(data)
    line = error_line(capsys, ["validate", run_copy, "--data", data, "--baseline", baseline])
    assert line.startswith(f"facemark validate: error: {baseline}: baseline was measured on other faces of the "
                           f"test split (file contents differ"), line
    assert json.loads((run_copy / "validation" / "validation.json").read_text()) == report   # untouched
    assert main(["eval", "--ckpt", str(run_copy / "best.pt"), "--data", str(data), "--out", str(tmp_path)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "test split differs from the one" in warnings[0] and "file contents" in warnings[0]


def test_fingerprint_follows_contents_not_location(clean_data, tmp_path):
    data_cfg = load_config(overrides=["data.detector=synth"]).data
    moved = tmp_path / "moved"
    shutil.copytree(clean_data, moved)
    assert fingerprint_split(moved, "test", data_cfg) == fingerprint_split(clean_data, "test", data_cfg)
    _nudge_first_test_face(moved)
    changed = fingerprint_split(moved, "test", data_cfg)
    assert changed["sha256"] != fingerprint_split(clean_data, "test", data_cfg)["sha256"]
    assert changed["count"] == COUNTS["test"] and changed["detector"] == "synth" and changed["scheme"] == "lapa106"


# ---------------------------------------------------------------- batches that keep going, image-size limits
def png_bomb(path: Path, width: int, height: int) -> Path:
    """A well-formed PNG of a few hundred bytes whose header claims width x height (8-bit grey): a
    decompression bomb. Its IDAT holds 16 rows of zeros; decoding it would need width x height bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 16, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def jpeg_bomb(path: Path, width: int, height: int) -> Path:
    """A real 16 x 16 JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def write_video(path: Path, frames: int, fourcc: str) -> Path:
    """`frames` frames of seeded noise (they compress little, so a cut file loses frames, not only headers)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (96, 96))
    for index in range(frames):
        writer.write(np.random.default_rng(index).integers(0, 256, (96, 96, 3), dtype=np.uint8))
    writer.release()
    return path


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


BOMB_REASON = ("image too large: its header claims 45000x45000 = 2,025,000,000 pixels, above "
               "data.max_image_pixels = 250,000,000; not decoded")


@pytest.fixture()
def mixed_folder(clean_data, tmp_path) -> tuple[Path, list[str], dict[str, str]]:
    """Good photos with bad files between them -> (folder, good names, {bad name: reason})."""
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted((clean_data / "test" / "images").iterdir())
    good = ["a_good.jpg", "d_good.jpg", "k_good.jpg"]
    for name, source in zip(good, sources):
        shutil.copy(source, folder / name)
    (folder / "b_empty.jpg").write_bytes(b"")
    (folder / "c_notes.jpg").write_text("not a photo")
    shutil.copy(sources[0], folder / "e_truncated.jpg")
    _cut(folder / "e_truncated.jpg", 0.5)
    png_bomb(folder / "f_bomb.png", 45000, 45000)
    jpeg_bomb(folder / "g_bomb.jpg", 60000, 60000)
    (folder / "h_iphone.jpg").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(64))
    _cut(write_video(folder / "i_clip.avi", 20, "MJPG"), 0.5)       # opens; its second half is gone
    _cut(write_video(folder / "j_clip.mp4", 20, "mp4v"), 0.5)       # its index (at the end) is gone
    bad = {"b_empty.jpg": "empty image file",
           "c_notes.jpg": "not an image (no JPEG, PNG or other known image header)",
           "e_truncated.jpg": "truncated JPEG (no end-of-image marker)",
           "f_bomb.png": BOMB_REASON,
           "g_bomb.jpg": BOMB_REASON.replace("45000x45000 = 2,025,000,000", "60000x60000 = 3,600,000,000"),
           "h_iphone.jpg": "unsupported codec: a HEIF/AVIF image (heic; convert it to JPEG or PNG)",
           "i_clip.avi": "video stopped decoding after 10 of 20 frames (truncated or corrupt)",
           "j_clip.mp4": "OpenCV cannot open this video (truncated, not a video, or a codec its FFmpeg lacks)"}
    return folder, good, bad


def test_predict_keeps_going_past_bad_files_and_lists_them(exported_run, mixed_folder, tmp_path, capsys):
    folder, good, bad = mixed_folder
    out = tmp_path / "out"
    argv = ["predict", exported_run / "export" / "model_fp32.onnx", folder, "--box", "20", "20", "300", "300",
            "--out", out]
    assert main([str(a) for a in argv]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    expected = [f"facemark predict: skipped {folder / name}: {reason}" for name, reason in bad.items()]
    expected[6] = expected[6].replace("skipped", "incomplete") + "; its 10 frames read are kept"   # i_clip.avi
    assert [line for line in captured.err.splitlines() if line.startswith("facemark")] == expected
    for name in good:
        record = json.loads((out / f"{Path(name).stem}.json").read_text())
        assert record["kind"] == "image" and len(record["faces"]) == 1
        assert (out / f"{Path(name).stem}.overlay.jpg").stat().st_size > 0
    clip = json.loads((out / "i_clip.json").read_text())   # the frames read before it broke are kept
    assert clip["frame_count"] == len(clip["frames"]) == 10 and clip["incomplete"].endswith(bad["i_clip.avi"])
    capture = cv2.VideoCapture(str(out / "i_clip.overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    capture.release()
    index = json.loads((out / "index.json").read_text())
    assert index["schema"] == "facemark-predict-index-v1" and index["inputs"] == 11
    assert [Path(entry["input"]).name for entry in index["written"]] == sorted(good + ["i_clip.avi"])
    assert [(Path(e["input"]).name, e["reason"]) for e in index["skipped"]] == list(bad.items())
    assert index["skipped"][6]["frames_kept"] == 10
    assert f"skipped 8 input(s), listed in {out / 'index.json'}:" in captured.out
    assert all(f"  {folder / name}: {reason}" in captured.out for name, reason in bad.items())
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("facemark")) == sorted(
        [f"{Path(n).stem}.{ext}" for n in good for ext in ("json", "overlay.jpg")]
        + ["i_clip.json", "i_clip.overlay.mp4", "index.json"])

    # --strict: today's stop at the first bad file, exit 2, nothing after it written
    strict = tmp_path / "strict"
    line = error_line(capsys, [*argv[:-1], strict, "--strict"])
    assert line == f"facemark predict: error: {folder / 'b_empty.jpg'}: empty image file"
    assert sorted(p.name for p in strict.iterdir()) == ["a_good.json", "a_good.overlay.jpg"]


def test_frame_and_image_limits_come_from_the_flag(exported_run, clean_data, tmp_path, capsys):
    image = sorted((clean_data / "test" / "images").iterdir())[0]   # 339 x 387
    video = write_video(tmp_path / "clip.avi", 3, "MJPG")
    code = main(["predict", str(exported_run), str(image), str(video), "--box", "10", "10", "60", "60",
                 "--out", str(tmp_path / "out"), "--max-image-pixels", "9000"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("facemark")]
    assert code == 1 and err == [
        f"facemark predict: skipped {image}: image too large: its header claims 339x387 = 131,193 pixels, "
        f"above data.max_image_pixels = 9,000; not decoded",
        f"facemark predict: skipped {video}: video too large: its frames are 96x96 = 9,216 pixels, above "
        f"data.max_image_pixels = 9,000; not decoded"]
    line = error_line(capsys, ["predict", exported_run, image, "--out", tmp_path / "x", "--max-image-pixels",
                               2_000_000_000])
    assert "--max-image-pixels 2000000000: 'data.max_image_pixels' must be an integer from 1 to 1073741824" in line


def test_header_bomb_is_one_line_everywhere_and_never_decoded(data, capsys, tmp_path):
    bomb = first(data, "train", "images")
    png_bomb(bomb, 45000, 45000)
    message = f"{bomb}: {BOMB_REASON}"
    assert main(["check-data", str(data)]) == 1
    assert message in capsys.readouterr().out.splitlines()
    tiny = ["model.arch=mobilenetv3_small_050", "model.pretrained=false", "data.input_size=64", "data.detector=synth",
            "data.workers=0", "train.epochs=1", "train.warmup_epochs=0", "train.device=cpu"]
    line = error_line(capsys, ["train", "--data", data, "--run", tmp_path / "run", *[a for item in tiny
                                                                                     for a in ("--set", item)]])
    assert line == f"facemark train: error: {message}"
    # a fresh process reads the bomb: its peak memory (VmHWM, which execve resets, unlike ru_maxrss)
    # stays that of the interpreter and its imports, ~60 MB (decoding would take 2 GB)
    probe = ("import re, sys\nfrom facemark.data.layout import read_image\nfrom facemark.errors import DataError\n"
             "try:\n    read_image(sys.argv[1])\nexcept DataError as exc:\n    print(exc)\n"
             "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)")
    result = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True, text=True, check=True)
    printed, peak_mb = result.stdout.splitlines()
    assert printed == message and 20 < int(peak_mb) < 200, result.stdout


def test_boxes_skip_unreadable_images_or_stop_with_strict(data, capsys):
    images = data / "val" / "images"
    empty, bomb = sorted(images.iterdir())[:2]
    empty.write_bytes(b"")
    png_bomb(bomb, 45000, 45000)
    assert main(["boxes", str(data), "--detector", "haar", "--split", "val"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"facemark boxes: skipped {empty}: empty image file",
                                         f"facemark boxes: skipped {bomb}: {BOMB_REASON}"]
    assert "val: 3 faces" in captured.out and "2 skipped" in captured.out
    assert len(list((data / "val" / "boxes" / "haar").glob("*.txt"))) == 1   # the readable one
    line = error_line(capsys, ["boxes", data, "--detector", "haar", "--split", "val", "--strict"])
    assert line == f"facemark boxes: error: {empty}: empty image file"


# ---------------------------------------------------------------- SIGTERM, like Ctrl-C
def _facemark_child(argv: list[str], **popen) -> subprocess.Popen:
    """`python -m facemark ARGV` in its own process group (as a container or a Slurm step runs it),
    stdout and stderr piped unless `popen` says otherwise."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([sys.executable, "-m", "facemark", *map(str, argv)], text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True, **popen)


def test_sigterm_during_training_saves_the_step_and_resumes_exactly(tmp_path):
    data, run, whole = tmp_path / "drawn", tmp_path / "run", tmp_path / "whole"
    make_drawn_split(data, "train", 60)   # 30 steps of 2 faces per epoch
    make_drawn_split(data, "val", 2)
    settings = ["model.arch=mobilenetv3_small_050", "model.pretrained=false", "data.input_size=64", "data.detector=drawn",
                "data.workers=1", "train.epochs=3", "train.warmup_epochs=0", "train.batch_size=2", "train.device=cpu",
                "train.amp=false"]
    argv = ["train", "--data", str(data), "--run", str(run)] + [a for item in settings for a in ("--set", item)]
    logs = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(logs[0], "w") as out_file, open(logs[1], "w") as err_file:
        process = _facemark_child(argv, stdout=out_file, stderr=err_file)
        # SIGTERM once epoch 2's progress bar (on stderr) shows step 3 or later: mid-epoch, whatever
        # the machine's speed (the bar refreshes every 0.1 s, a few steps)
        deadline = time.monotonic() + 120
        while not re.search(r"epoch 2/3:[^|]*\|[^|]*\| ([3-9]|[12]\d)/30", logs[1].read_text()):
            assert process.poll() is None and time.monotonic() < deadline, logs[1].read_text()
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)    # the whole group: the DataLoader worker gets it too
        process.wait(timeout=60)
    out, err = (path.read_text() for path in logs)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"facemark train: interrupted (SIGTERM); resume with: facemark {shlex.join(argv)} --resume"]
    saved = re.search(r"interrupted in epoch 2 after step (\d+)/30: saved (\S+) in", out)
    assert saved and 3 <= int(saved[1]) < 30 and saved[2] == str(run / "last.pt"), out
    no_partial(run)
    assert not lock_path(run).exists()

    hinted = shlex.split(lines[0].split("resume with: ")[1])
    assert main(hinted[1:]) == 0
    train(load_config(overrides=settings), data, whole, resume=False)
    metrics = [[json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
               for folder in (run, whole)]
    assert [m["epoch"] for m in metrics[0]] == [m["epoch"] for m in metrics[1]] == [1, 2, 3]
    for resumed, uninterrupted in zip(*metrics):
        for key in ("train_loss", "val_nme", "lr"):
            assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6), key
    a, b = (torch.load(folder / "last.pt", weights_only=True) for folder in (run, whole))
    assert a["interrupted_epoch"] is None and b["interrupted_epoch"] is None
    for name, tensor in b["model"].items():
        torch.testing.assert_close(a["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("verb, started", [("export", None), ("validate", "validating onnx_fp32"),
                                           ("quantize", "facemark quantize: calibrating"),
                                           ("qat", "facemark qat: calibrating")])
def test_sigterm_stops_a_verb_that_runs_again(run_copy, capsys, verb, started):
    """SIGTERM once the verb is under way (its lock taken, or the line `started` on stdout/stderr):
    one line, exit 143, no lock, nothing partial; the same command then finishes."""
    argv = {"export": ["export", run_copy, "--format", "onnx"], "validate": ["validate", run_copy, "--limit", "2"],
            "quantize": ["quantize", run_copy, "--format", "onnx", "--calibration-count", "4"],
            "qat": ["qat", run_copy, "--epochs", "1", "--set", "quantize.formats=[onnx]", "--set",
                    "quantize.qat_formats=[onnx]", "--set", "quantize.calibration_count=4"]}[verb]
    process = _facemark_child(argv)
    if started is None:
        deadline = time.monotonic() + 60
        while not lock_path(run_copy).exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.01)
    else:
        next(line for line in (process.stdout if verb in ("quantize", "qat") else process.stderr) if started in line)
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, out + err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        f"facemark {verb}: interrupted (SIGTERM); run the same command again to resume: "
        f"facemark {shlex.join(map(str, argv))}"]
    assert not lock_path(run_copy).exists()
    no_partial(run_copy)
    assert main([str(a) for a in argv]) == 0
