"""`facemark predict` on a video with tracking (facemark/predict_video.py): ids, raw and filtered
landmarks, the detector only on its schedule, and --no-track / --filter none."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from drawn_faces import DrawnFaceDetector, draw_face, make_validation_root, mean_face_model, write_video
from facemark.cli import main
from facemark.config import load_config
from facemark.model import checkpoint_dict

SIZE = 64


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_validation_root(tmp_path_factory.mktemp("drawn"), 2)


def test_video_tracking_writes_ids_and_filtered_points_with_fewer_detector_runs(data_root, tmp_path, monkeypatch):
    """Tracking mode through the CLI, with a model whose landmark box is its crop box
    (drawn_faces.mean_face_model): every frame's face has id 0, raw and filtered landmarks; the
    detector runs on frames 0, 4, 8 only; frame t's box is frame t-1's landmark box; --no-track
    runs it on every frame; --filter none writes the raw points as filtered."""
    from facemark.data import detectors

    monkeypatch.setitem(detectors.DETECTORS, "mtcnn_onnx", DrawnFaceDetector)
    cfg = load_config(overrides=["model.pretrained=false", "model.arch=mobilenetv3_small_050",
                                 f"data.input_size={SIZE}", "data.detector=drawn"])
    run = tmp_path / "run"
    run.mkdir()
    torch.save(checkpoint_dict(mean_face_model(cfg), cfg, epoch=0, data_root=str(data_root)), run / "best.pt")
    bgr, _ = draw_face(11)
    video = tmp_path / "walk.avi"
    write_video(video, [np.roll(bgr, 2 * i, axis=1) for i in range(10)])
    runs = {"track": [], "no_track": ["--no-track"], "raw": ["--filter", "none"]}
    records = {}
    for name, flags in runs.items():
        assert main(["predict", run, video, "--set", "predict.redetect_every=4", *flags, "--out", tmp_path / name]) == 0
        records[name] = json.loads((tmp_path / name / "walk.json").read_text())
    tracked = records["track"]
    assert tracked["tracking"]["track"] and tracked["tracking"]["detector_calls"] == 3
    assert tracked["tracking"]["lost"] == 0
    assert [i for i, frame in enumerate(tracked["frames"]) if frame["detector"]] == [0, 4, 8]
    assert all([face["id"] for face in frame["faces"]] == [0] for frame in tracked["frames"])
    first = np.array(tracked["frames"][0]["faces"][0]["landmarks"])
    np.testing.assert_allclose(tracked["frames"][1]["faces"][0]["box"],
                               np.concatenate([first.min(0), first.max(0)]), atol=2e-3)
    moved = [np.abs(np.array(face["filtered"]) - np.array(face["landmarks"])).max()
             for frame in tracked["frames"] for face in frame["faces"]]
    assert np.array(tracked["frames"][1]["faces"][0]["filtered"]).shape == (106, 2) and max(moved) > 1e-3
    assert tracked["main_face_id"] == 0 and tracked["filtered_motion"]["pairs"] == 9
    assert records["no_track"]["tracking"]["detector_calls"] == 10
    assert all(frame["detector"] for frame in records["no_track"]["frames"])
    assert all(face["filtered"] == face["landmarks"] for frame in records["raw"]["frames"] for face in frame["faces"])
    capture = cv2.VideoCapture(str(tmp_path / "track" / "walk.overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    capture.release()
