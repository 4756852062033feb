"""The bad-input catalogue, run folders and artifacts: manifests that leave their folder or bend
the contract, tampered or missing artifacts, misuse of the Landmarker, full and read-only disks.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark import Landmarker
from facemark.cli import main
from facemark.errors import ArtifactError, DataError
from facemark.manifest import drop_artifact, verify_artifact

from cli_errors import error_line, no_partial


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


@pytest.mark.parametrize("model", ["pytorch", "onnx", "tflite"])
def test_one_landmarker_serves_eight_threads(exported_run, model):
    """Servers share one model across a thread pool: every backend gives, from 8 threads at once,
    the landmarks it gives from one (LiteRT: an interpreter per thread, facemark.runtime.runners)."""
    path = {"pytorch": exported_run / "best.pt", "onnx": exported_run / "export" / "model_fp32.onnx",
            "tflite": "ibug68"}[model]
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
