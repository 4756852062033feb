"""`facemark predict` and the stability column of `facemark validate`, on a tiny run of drawn faces:
predict's landmarks equal validate's for the same artifact and boxes (test-time refinement
included); EXIF orientation; video with frame-to-frame motion; RUN resolution; one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from drawn_faces import IMAGE_SIZE, DrawnFaceDetector, draw_face, face_dependent_model, make_validation_root, write_video
from margins import above, below
from facemark.cli import main
from facemark.config import load_config
from facemark.convert.export import export_run
from facemark.data.boxes import box_dir, read_box
from facemark.model import checkpoint_dict
from facemark.train.evaluate import evaluate_checkpoint

FACES = 8
SIZE = 64
STABILITY_FACES, DRAWS = 4, 2


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_validation_root(tmp_path_factory.mktemp("drawn"), FACES)


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory, data_root) -> Path:
    """RUN with best.pt, export/model_fp32.onnx and validation/ written by `facemark validate`."""
    run = tmp_path_factory.mktemp("run")
    cfg = load_config(overrides=["model.pretrained=false", "model.arch=mobilenetv3_small_050",
                                 f"data.input_size={SIZE}", "data.detector=drawn", "validate.warmup=1",
                                 "validate.runs=2", f"validate.stability_faces={STABILITY_FACES}",
                                 f"validate.stability_draws={DRAWS}"])
    model = face_dependent_model(cfg)
    torch.save(checkpoint_dict(model, cfg, epoch=0, data_root=str(data_root)), run / "best.pt")
    assert export_run(run, ["onnx"], data_root=None, bake=False, golden=False) == 0
    assert main(["validate", str(run)]) == 0
    return run


def test_predict_equals_validate_for_the_same_artifact_and_boxes(validated_run, data_root, tmp_path):
    out = tmp_path / "out"
    boxes = box_dir(data_root, "test", "drawn")
    code = main(["predict", validated_run / "export" / "model_fp32.onnx", data_root / "test" / "images",
                 "--boxes", boxes, "--out", out])
    assert code == 0
    stored = np.load(validated_run / "validation" / "landmarks.npz")
    stems = list(stored["stems"])
    compared = 0
    for stem in sorted(p.stem for p in (data_root / "test" / "images").iterdir()):
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["schema"] == "facemark-predict-v1" and record["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
        assert record["artifact"]["name"] == "onnx_fp32" and len(record["artifact"]["sha256"]) == 64
        assert (out / f"{stem}.overlay.jpg").stat().st_size > 0
        if read_box(boxes / f"{stem}.txt") is None:   # a cached miss: no face (validate fell back to landmarks)
            assert record["faces"] == []
            continue
        (face,) = record["faces"]
        np.testing.assert_allclose(np.array(face["landmarks"]), stored["onnx_fp32"][stems.index(stem)], atol=2e-3)
        compared += 1
    assert compared == FACES - 1


def test_landmarker_api_equals_predict_and_validate(validated_run, data_root, tmp_path):
    """`from facemark import Landmarker` on the artifact gives predict's JSON landmarks exactly and
    validate's stored ones, for the same boxes; a path and its pixels give the same faces."""
    from facemark import Face, Landmarker
    from facemark.data.layout import read_photo
    from facemark.errors import ArtifactError, DataError

    artifact = validated_run / "export" / "model_fp32.onnx"
    boxes, images = box_dir(data_root, "test", "drawn"), data_root / "test" / "images"
    assert main(["predict", artifact, images, "--boxes", boxes, "--out", tmp_path / "out"]) == 0
    stored = np.load(validated_run / "validation" / "landmarks.npz")
    stems = list(stored["stems"])
    lm = Landmarker(artifact)
    assert lm.identity["name"] == "onnx_fp32" and lm.scheme.num_points == 106 and lm.refinement.passes == 1
    compared = 0
    for path in sorted(images.iterdir()):
        box = read_box(boxes / f"{path.stem}.txt")
        if box is None:
            continue
        (face,) = lm.predict(path, boxes=box)
        assert isinstance(face, Face) and face.score == 1.0 and face.landmarks.shape == (106, 2)
        record = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
        assert face.to_dict() == record["faces"][0]
        np.testing.assert_allclose(face.landmarks, stored["onnx_fp32"][stems.index(path.stem)], atol=2e-3)
        (again,) = lm.predict(read_photo(path), boxes=[box])
        np.testing.assert_array_equal(again.landmarks, face.landmarks)
        compared += 1
    assert compared == FACES - 1
    # the checkpoint itself, by file and by RUN folder without an export: PyTorch, the same points
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(validated_run / "best.pt", bare / "best.pt")
    path = sorted(images.iterdir())[0]
    box = read_box(boxes / f"{path.stem}.txt")
    by_file, by_run = (Landmarker(model).predict(path, boxes=box)[0] for model in (bare / "best.pt", bare))
    np.testing.assert_array_equal(by_file.landmarks, by_run.landmarks)
    np.testing.assert_allclose(by_file.landmarks, lm.predict(path, boxes=box)[0].landmarks, atol=2e-3)
    with pytest.raises(DataError, match=r"boxes\[0\] = \[10.0, 10.0, 5.0, 20.0\]: expected finite X0 Y0 X1 Y1"):
        lm.predict(path, boxes=[10, 10, 5, 20])
    with pytest.raises(DataError, match=r"expected an \(H, W, 3\) uint8 RGB image, got float32 \(4, 4, 3\)"):
        lm.predict(np.zeros((4, 4, 3), np.float32), boxes=box)
    with pytest.raises(ArtifactError, match="no such artifact, run folder, checkpoint or shipped model"):
        Landmarker(tmp_path / "missing.tflite")


def test_validation_reports_stability_for_every_row(validated_run):
    report = json.loads((validated_run / "validation" / "validation.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == {"pytorch", "onnx_fp32"}
    for row in rows.values():
        figures = row["stability"]
        assert figures["faces"] == STABILITY_FACES and figures["draws"] == DRAWS and figures["seed"] == 0
        assert 0 < figures["noise"] and 0 < figures["shift"] and figures["stability"] <= figures["p90"]
        assert figures["stability"] < 1.0   # a fraction of the inter-pupil distance
    # the same float model in two runtimes: the same jitter
    assert abs(rows["onnx_fp32"]["stability"]["stability"] - rows["pytorch"]["stability"]["stability"]) < 1e-4
    markdown = (validated_run / "validation" / "validation.md").read_text()
    assert "| jitter |" in markdown and "## Stability" in markdown
    assert report["gate"]["max_stability"] is None


def test_stability_gate_fails_an_artifact_over_the_bound(validated_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(validated_run, run, ignore=shutil.ignore_patterns("validation"))
    report = json.loads((validated_run / "validation" / "validation.json").read_text())
    jitter = min(row["stability"]["stability"] for row in report["rows"])
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["config"]["validate"]["max_stability"] = jitter / 2
    torch.save(ckpt, run / "best.pt")
    from facemark.io import sha256_of
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    manifest["checkpoint"]["sha256"] = sha256_of(run / "best.pt")
    (run / "export" / "manifest.json").write_text(json.dumps(manifest))
    assert main(["validate", str(run)]) == 1
    assert "stability" in capsys.readouterr().err


def _write_png(path: Path, rgb: np.ndarray, orientation: int | None = None) -> None:
    image = Image.fromarray(rgb)
    exif = image.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, exif=exif)


def test_exif_orientation_is_honoured(validated_run, tmp_path):
    """A phone stores a portrait shot sideways with Orientation 6 (rotate 90 degrees clockwise to
    view): predict sees the upright face, so its landmarks equal those on the upright file."""
    bgr, _ = draw_face(7)
    upright = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    (tmp_path / "in").mkdir()
    _write_png(tmp_path / "in" / "upright.png", upright)
    _write_png(tmp_path / "in" / "sideways.png", np.ascontiguousarray(np.rot90(upright, 1)), orientation=6)
    box = ["20", "18", "76", "80"]
    assert main(["predict", validated_run, tmp_path / "in", "--box", *box, "--out", tmp_path / "out"]) == 0
    first, second = (json.loads((tmp_path / "out" / f"{s}.json").read_text()) for s in ("upright", "sideways"))
    assert first["image_size"] == second["image_size"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert first["artifact"]["name"] == "onnx_fp32"   # RUN: its verified float ONNX
    np.testing.assert_array_equal(first["faces"][0]["landmarks"], second["faces"][0]["landmarks"])


def test_video_frames_and_frame_motion(validated_run, tmp_path):
    """MJPG codes each frame alone: a still video decodes to identical frames (motion exactly 0);
    a face moving 3 px per frame moves its landmarks."""
    bgr, _ = draw_face(11)
    still, moving = tmp_path / "still.avi", tmp_path / "moving.avi"
    write_video(still, [bgr] * 3)
    write_video(moving, [np.roll(bgr, 3 * i, axis=1) for i in range(4)])
    out = tmp_path / "out"
    assert main(["predict", validated_run / "best.pt", still, moving, "--box", "20", "18", "76", "80",
                 "--out", out]) == 0   # a checkpoint is a Landmarker source too (PyTorch)
    assert main(["predict", validated_run, still, moving, "--box", "20", "18", "76", "80", "--out", out]) == 0
    calm, busy = (json.loads((out / f"{s}.json").read_text()) for s in ("still", "moving"))
    assert calm["kind"] == "video" and calm["frame_count"] == 3 and len(calm["frames"]) == 3
    assert calm["frame_motion"]["median"] == 0.0 and calm["frame_motion"]["pairs"] == 2
    assert busy["frame_count"] == 4 and busy["frame_motion"]["median"] > 0.0
    capture = cv2.VideoCapture(str(out / "still.overlay.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_default_detector_finds_the_faces_and_its_score_bound_applies(validated_run, data_root, tmp_path,
                                                                      monkeypatch):
    """Without --box, base.yaml's predict.detector (mtcnn_onnx, here a stand-in that fires on drawn faces)
    gives the faces: its box and score are recorded with the landmarks; --min-score above its score
    leaves none; the same box given with --box gives the same landmarks."""
    from facemark.data import detectors

    monkeypatch.setitem(detectors.DETECTORS, "mtcnn_onnx", DrawnFaceDetector)
    image = data_root / "test" / "images" / "test000.png"
    assert main(["predict", validated_run, image, "--out", tmp_path / "out"]) == 0
    record = json.loads((tmp_path / "out" / "test000.json").read_text())
    (face,) = record["faces"]
    assert record["faces_from"] == "mtcnn_onnx" and face["box"] == [20.0, 18.0, 76.0, 80.0] and face["score"] == 0.99
    assert np.array(face["landmarks"]).shape == (106, 2)
    assert main(["predict", validated_run, image, "--min-score", "0.995", "--out", tmp_path / "strict"]) == 0
    assert json.loads((tmp_path / "strict" / "test000.json").read_text())["faces"] == []
    assert main(["predict", validated_run, image, "--box", "20", "18", "76", "80", "--out", tmp_path / "given"]) == 0
    given = json.loads((tmp_path / "given" / "test000.json").read_text())
    assert given["faces"][0]["landmarks"] == face["landmarks"] and given["faces_from"] == "given box"


@pytest.mark.parametrize("argv_tail, needle", [
    (["notes.txt"], "not an image or video"),
    (["missing.png"], "no such file or folder"),
    (["pipe.jpg"], "pipe.jpg: a FIFO, not an image, a video or a folder of them"),
    (["IMAGE", "--box", "10", "10", "5", "40"], "--box 10 10 5 40"),
    (["IMAGE", "--detector", "dlib"], "predict.detector"),
])
def test_bad_predict_inputs_are_one_line_errors(validated_run, data_root, tmp_path, capsys, argv_tail, needle):
    (tmp_path / "notes.txt").write_text("hello")
    os.mkfifo(tmp_path / "pipe.jpg")
    image = str(data_root / "test" / "images" / "test000.png")
    tail = [image if item == "IMAGE" else (str(tmp_path / item) if item.endswith((".txt", ".png", ".jpg")) else item)
            for item in argv_tail]
    assert main(["predict", validated_run, *tail, "--out", tmp_path / "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_run_without_export_uses_best_pt(validated_run, tmp_path):
    """A RUN not exported yet: PyTorch on best.pt, landmarks equal to its float ONNX's."""
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(validated_run / "best.pt", bare / "best.pt")
    bgr, _ = draw_face(3)
    cv2.imwrite(str(tmp_path / "face.png"), bgr)
    box = ["20", "18", "76", "80"]
    assert main(["predict", bare, tmp_path / "face.png", "--box", *box, "--out", tmp_path / "torch"]) == 0
    assert main(["predict", validated_run, tmp_path / "face.png", "--box", *box, "--out", tmp_path / "onnx"]) == 0
    torch_record, onnx_record = (json.loads((tmp_path / d / "face.json").read_text()) for d in ("torch", "onnx"))
    assert torch_record["artifact"]["name"] == "pytorch" and onnx_record["artifact"]["name"] == "onnx_fp32"
    np.testing.assert_allclose(torch_record["faces"][0]["landmarks"], onnx_record["faces"][0]["landmarks"], atol=2e-3)


def test_refinement_in_validate_eval_and_predict_agrees(validated_run, data_root, tmp_path, capsys):
    """--set infer.flip=true --set infer.passes=2: every validate row says what it ran, keeps its
    single-pass figures beside the refined ones, and predict and eval reproduce the refined landmarks."""
    run = tmp_path / "run"
    shutil.copytree(validated_run, run, ignore=shutil.ignore_patterns("validation"))
    single = {row["name"]: row for row in
              json.loads((validated_run / "validation" / "validation.json").read_text())["rows"]}
    refine = ["--set", "infer.flip=true", "--set", "infer.passes=2"]
    assert main(["validate", str(run), *refine]) == 0
    printed = capsys.readouterr().out
    assert "refined: flip + 2 passes (4 model calls per face" in printed and "NME flip+2p" in printed
    report = json.loads((run / "validation" / "validation.json").read_text())
    infer = {"flip": True, "passes": 2, "model_calls": 4, "label": "flip + 2 passes"}
    assert report["infer"] == infer
    rows = {row["name"]: row for row in report["rows"]}
    for name, row in rows.items():
        assert row["infer"] == infer and row["refined"]["infer"] == infer
        assert row["accuracy"] == single[name]["accuracy"] and row["stability"] == single[name]["stability"]
        assert row["refined"]["latency"]["calls"] == 4 and row["refined"]["latency"]["runs"] == 2
        # each run's four calls include the single pass's call
        assert row["refined"]["latency"]["min_ms"] > row["latency"]["min_ms"]
    onnx = rows["onnx_fp32"]["refined"]
    below("refined onnx_fp32 |relative NME change| vs refined PyTorch", abs(onnx["delta"]["rel"]), 1e-4)
    assert onnx["delta"]["reference"] == "pytorch" and rows["pytorch"]["refined"]["parity"] is None
    evaluated = evaluate_checkpoint(run / "best.pt", data_root, "test", out_dir=tmp_path / "eval",
                                    overrides=["infer.flip=true", "infer.passes=2"])
    assert evaluated["refined"]["infer"] == infer
    assert evaluated["refined"]["metrics"]["nme_pupil"] == pytest.approx(
        rows["pytorch"]["refined"]["accuracy"]["nme_pupil"], rel=1e-6)
    assert evaluated["metrics"]["nme_pupil"] == pytest.approx(rows["pytorch"]["accuracy"]["nme_pupil"], rel=1e-6)

    stored = np.load(run / "validation" / "landmarks.npz")
    stems = list(stored["stems"])
    above("refined landmarks move off the single pass's (px)",
          np.abs(stored["onnx_fp32_refined"] - stored["onnx_fp32"]).max(), 0.1)
    out = tmp_path / "out"
    assert main(["predict", run / "export" / "model_fp32.onnx", data_root / "test" / "images",
                 "--boxes", box_dir(data_root, "test", "drawn"), "--out", out, *refine]) == 0
    compared = 0
    for stem in stems:
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["infer"] == infer
        if record["faces"]:
            np.testing.assert_allclose(np.array(record["faces"][0]["landmarks"]),
                                       stored["onnx_fp32_refined"][stems.index(stem)], atol=2e-3)
            compared += 1
    assert compared == FACES - 1


def test_validation_reports_video_figures_for_every_row(validated_run):
    """validate/video.py: each evaluated row tracked and filtered on the drawn clips; the ONNX
    float row makes the tracker's decisions PyTorch does, so its figures agree with PyTorch's.
    (This random model loses the face on every frame, so the detector runs on each and the filter
    restarts: what the figures are worth on a trained model is in docs/streaming.md.)"""
    report = json.loads((validated_run / "validation" / "validation.json").read_text())
    videos = {row["name"]: row["video"] for row in report["rows"]}
    assert set(videos) == {"pytorch", "onnx_fp32"}
    for video in videos.values():
        assert video["frames"] == 36 and video["filter"] == "one_euro" and 1 <= video["detector_calls"] <= 36
        assert video["found"] >= 34 and 0 < video["jitter"] <= video["raw_jitter"] and video["nme"] > 0
    assert videos["onnx_fp32"]["detector_calls"] == videos["pytorch"]["detector_calls"]
    for key in ("jitter", "raw_jitter", "nme"):
        assert abs(videos["onnx_fp32"][key] - videos["pytorch"][key]) < 1e-4, key
    assert "## Video (tracked + filtered, drawn clip)" in (validated_run / "validation" / "validation.md").read_text()


def test_a_folder_of_hostile_files_is_read_file_by_file(validated_run, data_root, tmp_path):
    """A FIFO and a /dev/zero link named .jpg are not listed (opening either would block or never
    end); a 40 GB sparse .jpg with a 64x64 header and a video with no frame are skipped with their
    reason, from their size and first bytes (nothing read whole); the photo beside them is
    predicted. In a child process with a timeout: a regression would hang, not fail."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(data_root / "test" / "images" / "test000.png", folder / "face.png")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    huge = folder / "huge.jpg"
    huge.write_bytes(cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))[1].tobytes())
    os.truncate(huge, 40 << 30)   # sparse: 40 GB long, a few kB on disk
    write_video(folder / "empty.avi", [])
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "facemark", "predict", str(validated_run), str(folder),
                           "--box", "20", "18", "76", "80", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["inputs"] == 3 and [Path(r["input"]).name for r in index["written"]] == ["face.png"]
    reasons = {Path(item["input"]).name: item["reason"] for item in index["skipped"]}
    assert set(reasons) == {"empty.avi", "huge.jpg"}
    assert reasons["huge.jpg"] == "42,949,672,960 bytes, more than a 64x64 JPEG image can hold; not read"
    assert reasons["empty.avi"].startswith(("OpenCV cannot open this video", "no frame could be decoded")), reasons
    assert json.loads((out / "face.json").read_text())["faces"]


def test_two_predicts_into_one_folder_both_finish_with_whole_files(validated_run, data_root, tmp_path):
    """Two predict commands at once on the same inputs and --out: every file is written under a
    temporary name and renamed, so both exit 0 and each JSON file is whole (either writer's)."""
    images = sorted((data_root / "test" / "images").glob("*.png"))[:4]
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "facemark", "predict", str(validated_run), *map(str, images),
            "--box", "20", "18", "76", "80", "--out", str(out)]
    both = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in both:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    records = [json.loads((out / f"{image.stem}.json").read_text()) for image in images]
    assert [len(record["faces"]) for record in records] == [1] * 4
    assert json.loads((out / "index.json").read_text())["inputs"] == 4
    assert not [p for p in out.iterdir() if p.name.endswith(".partial") or p.name.startswith(".")]
