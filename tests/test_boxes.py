"""Face boxes: cache format, the detection-selection rule, real detectors and the resumable cache."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark.cli import main
from facemark.data.boxes import box_dir, cache_boxes, read_box, read_split_boxes, write_box
from facemark.data.detectors import DETECTORS, create_detector, select_detection
from facemark.errors import ConfigError, DataError
from tiny_lapa import grace_hopper_rgb

# Grace Hopper's face in the 128 px wide photo (hand-checked: eyes at y ~ 50, chin at y ~ 90)
FACE_CENTRE = np.array([64.0, 60.0])


def test_box_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "boxes" / "a.txt"
    write_box(path, np.array([1.234, 5.0, 30.5, 40.25]), score=0.98765)
    assert path.read_text() == "1.23 5.00 30.50 40.25 0.9877\n"
    assert read_box(path).tolist() == [1.23, 5.0, 30.5, 40.25]
    write_box(path, None)
    assert path.read_text() == "miss\n" and read_box(path) is None
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]       # no leftover temp files


@pytest.mark.parametrize("text", ["", "1 2 3 4", "1 2 3 4 5 6", "a 2 3 4 1", "10 0 5 10 1",
                                  "0 10 5 10 1", "nan 0 5 5 1", "Miss"])
def test_read_box_malformed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text + "\n")
    with pytest.raises(DataError) as info:
        read_box(path)
    assert str(info.value) == (f"{path}:1: expected 'x0 y0 x1 y1 score' with x1 > x0 and y1 > y0, "
                               f"or 'miss'; got {text!r}")


def test_missing_cache_names_command(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"mtcnn/x\.txt: no cached box \(run `facemark boxes ROOT "
                                        r"--detector mtcnn` first\)"):
        read_box(tmp_path / "boxes" / "mtcnn" / "x.txt")
    with pytest.raises(DataError, match=r"no box cache for detector 'haar' \(run `facemark boxes"):
        read_split_boxes(tmp_path, "train", "haar", ["x"])


def _det(x0: float, y0: float, x1: float, y1: float, score: float) -> tuple[np.ndarray, float]:
    return np.array([x0, y0, x1, y1], dtype=np.float64), score


# boxes in a 400 x 400 image whose centre is (200, 200)
@pytest.mark.parametrize("detections, expected", [
    ([], None),
    ([_det(0, 0, 10, 10, 0.5)], 0),
    # a small central face scoring higher loses to the main face (area < 25 % of the largest)
    ([_det(0, 0, 100, 100, 0.90), _det(180, 180, 220, 220, 0.999)], 0),
    # a central box of similar size but a clearly lower score loses
    ([_det(0, 0, 100, 100, 0.99), _det(150, 150, 250, 250, 0.80)], 0),
    # saturated scores (MTCNN's 1.0 for two real faces): the central one, even though smaller
    ([_det(0, 0, 160, 160, 1.0), _det(140, 140, 260, 260, 1.0)], 1),
    # within 95 % of the best score counts as equally confident
    ([_det(0, 0, 160, 160, 1.0), _det(140, 140, 260, 260, 0.96)], 1),
    # exactly 25 % of the largest area still counts
    ([_det(0, 0, 100, 100, 1.0), _det(175, 175, 225, 225, 1.0)], 1),
    # same centre, equal scores: the larger box
    ([_det(180, 180, 220, 220, 3.0), _det(160, 160, 240, 240, 3.0), _det(170, 170, 230, 230, 3.0)], 1),
])
def test_selection_rule(detections: list, expected: int | None) -> None:
    chosen = select_detection(detections, (400, 400))
    if expected is None:
        assert chosen is None
    else:
        assert chosen is detections[expected]


def test_unknown_and_synth_detectors(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert sorted(DETECTORS) == ["haar", "mtcnn", "mtcnn_onnx"]
    with pytest.raises(ConfigError, match=r"unknown face detector 'yolo'; available: haar, mtcnn, mtcnn_onnx$"):
        create_detector("yolo")
    assert main(["boxes", str(tmp_path), "--detector", "synth"]) == 2
    assert ("'synth' is not a detector: its boxes are written by `facemark synth`"
            in capsys.readouterr().err)


def _assert_face_box(box: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    assert x0 < FACE_CENTRE[0] < x1 and y0 < FACE_CENTRE[1] < y1
    assert 25 < x1 - x0 < 110


def test_haar_finds_a_real_face() -> None:
    image = grace_hopper_rgb(128)
    detections = create_detector("haar").detect(image)
    assert all(box.shape == (4,) and score >= 1.0 for box, score in detections)
    _assert_face_box(select_detection(detections, (128, image.shape[0]))[0])
    assert create_detector("haar").detect(np.full((64, 64, 3), 128, np.uint8)) == []


@pytest.mark.slow   # importing torch + facenet-pytorch and building MTCNN: 3-20 s on a busy CPU
def test_mtcnn_finds_a_real_face() -> None:
    detector = create_detector("mtcnn")
    image = grace_hopper_rgb(128)
    detections = detector.detect(image)
    assert isinstance(detections, list) and len(detections) >= 1
    box, score = select_detection(detections, (128, image.shape[0]))
    assert box.dtype == np.float64 and 0.9 < score <= 1.0
    _assert_face_box(box)
    assert detector.detect(np.zeros((64, 64, 3), np.uint8)) == []


def _box_dataset(root: Path) -> Path:
    images = root / "train" / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "face.jpg"), cv2.cvtColor(grace_hopper_rgb(128), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(images / "blank.png"), np.full((64, 64, 3), 90, np.uint8))
    (images / "broken.png").write_text("not an image")
    return root


def test_cache_boxes_haar_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _box_dataset(tmp_path)
    folder = box_dir(root, "train", "haar")
    result = cache_boxes(root, "haar", None, overwrite=False)["train"]
    assert {k: result[k] for k in ("faces", "hits", "misses", "unreadable", "hit_rate", "detected_now")} == {
        "faces": 3, "hits": 1, "misses": 1, "unreadable": 1, "hit_rate": 0.5, "detected_now": 2}
    assert result["median_ms"] > 0
    assert json.loads((folder / "summary.json").read_text()) == result
    assert sorted(p.name for p in folder.iterdir()) == ["blank.txt", "face.txt", "summary.json"]
    assert read_box(folder / "blank.txt") is None
    _assert_face_box(read_box(folder / "face.txt"))
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"facemark boxes: skipped {root / 'train' / 'images' / 'broken.png'}: "
                                         f"not an image (no JPEG, PNG or other known image header)"]
    assert "train: 3 faces, 1 hits, 1 misses, hit rate 50.0%" in captured.out and "1 skipped" in captured.out

    # resume: cached entries are not re-run; a corrupted entry is
    stamp = (folder / "face.txt").stat().st_mtime_ns
    (folder / "blank.txt").write_text("garbage\n")
    again = cache_boxes(root, "haar", ["train"], overwrite=False)["train"]
    assert again["detected_now"] == 1 and again["misses"] == 1
    assert (folder / "face.txt").stat().st_mtime_ns == stamp
    assert read_box(folder / "blank.txt") is None
    done = cache_boxes(root, "haar", ["train"], overwrite=False)["train"]
    assert done["detected_now"] == 0 and done["median_ms"] == again["median_ms"]
    assert cache_boxes(root, "haar", ["train"], overwrite=True)["train"]["detected_now"] == 2


def test_cache_boxes_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["boxes", str(tmp_path / "absent"), "--detector", "haar"]) == 2
    assert f"{tmp_path / 'absent'}: dataset root not found" in capsys.readouterr().err
    root = _box_dataset(tmp_path)
    assert main(["boxes", str(root), "--detector", "haar", "--split", "val"]) == 2
    assert "split 'val' not found" in capsys.readouterr().err
