"""The video tracker (facemark/tracking.py) on scripted scenes: a fake model that finds the face a
crop overlaps by half (IoU) and collapses its points on a crop without one (what a landmark model does on
background), and a fake detector that returns the true boxes. Ids stay put, the detector runs on
schedule, a lost face is looked for on the same frame, detect-every-frame runs it on every frame."""

from __future__ import annotations

import dataclasses

import numpy as np

from drawn_faces import FRAME, ScriptedScene as Scene, face_path

from facemark.codec import landmark_box
from facemark.config import load_config
from facemark.tracking import Tracker

def settings(**changes):
    return dataclasses.replace(load_config().predict, **changes)


def play(scene: Scene, cfg, frames: int) -> tuple[Tracker, list[list]]:
    tracker = Tracker(scene, cfg, fps=30.0)
    out = []
    for scene.frame in range(frames):
        out.append(tracker.step(FRAME))
    return tracker, out


def test_two_faces_keep_their_ids_and_the_detector_runs_on_schedule():
    scene = Scene([face_path((80, 100), (1.0, 0.5), 40), face_path((230, 120), (-0.5, 0.3), 40, half=20)])
    tracker, out = play(scene, settings(redetect_every=10), 40)
    assert scene.detected_on == [0, 10, 20, 30] and tracker.stats() == {"frames": 40, "detector_calls": 4, "lost": 0}
    assert all([face.id for face in faces] == [0, 1] for faces in out)
    for i, faces in enumerate(out):
        for face, path in zip(faces, scene.paths):
            assert np.abs(face.landmarks - path[i]).max() < 2.0
            assert face.detected == (i == 0)       # re-detections keep the landmark-box crop
    np.testing.assert_allclose(out[5][0].box, landmark_box(out[4][0].landmarks))   # t's crop: t-1's landmarks


def test_a_face_that_jumps_is_lost_and_found_again_on_the_same_frame():
    path = face_path((80, 100), (1.0, 0.0), 12) + face_path((240, 150), (1.0, 0.0), 8)
    tracker, out = play(Scene([path]), settings(redetect_every=30), 20)
    assert tracker.stats() == {"frames": 20, "detector_calls": 2, "lost": 1}
    assert [face.id for face in out[11]] == [0] and [face.id for face in out[12]] == [1]   # far away: a new track
    assert out[12][0].detected and np.abs(out[12][0].landmarks - path[12]).max() < 2.0
    assert np.abs(out[13][0].filtered - path[13]).max() < 2.0        # the filter restarted, no lag from the jump


def test_a_jerk_that_loses_the_face_nearby_keeps_its_id():
    path = face_path((100, 100), (0.5, 0.0), 6) + face_path((128, 100), (0.5, 0.0), 9)   # 25 px at frame 6
    scene = Scene([path])
    tracker, out = play(scene, settings(redetect_every=30), 15)
    assert scene.detected_on == [0, 6] and tracker.lost == 1
    assert all([face.id for face in faces] == [0] for faces in out)
    assert np.abs(out[6][0].landmarks - path[6]).max() < 2.0


def test_a_face_that_vanishes_or_leaves_the_frame_ends_its_track():
    gone = face_path((100, 100), (0.0, 0.0), 5) + [None] * 5
    scene = Scene([gone])
    tracker, out = play(scene, settings(redetect_every=30), 10)
    assert [len(faces) for faces in out] == [1] * 5 + [0] * 5
    assert scene.detected_on == [0, 5, 6, 7, 8, 9]   # no face: look on every frame
    leaving = face_path((260, 120), (12.0, 0.0), 12)
    out = play(Scene([leaving]), settings(redetect_every=30, lost_iou=0.0), 12)[1]
    assert [len(faces) for faces in out].index(0) == 5   # its landmark box centre reaches x = 320


def test_detect_every_frame_crops_every_frame_from_a_detection():
    scene = Scene([face_path((80, 100), (2.0, 0.0), 10)])
    tracker, out = play(scene, settings(track=False), 10)
    assert scene.detected_on == list(range(10)) and all(faces[0].detected and faces[0].id == 0 for faces in out)


def test_no_filter_leaves_the_landmarks_raw_and_one_euro_smooths_them():
    path = face_path((100, 100), (0.0, 0.0), 30)
    raw = play(Scene([path]), settings(filter="none"), 30)[1]
    assert all(np.array_equal(faces[0].filtered, faces[0].landmarks) for faces in raw)
    smooth = play(Scene([path]), settings(filter="one_euro"), 30)[1]

    def jitter(key: str, faces_per_frame) -> float:
        series = np.stack([getattr(faces[0], key) for faces in faces_per_frame[10:]])
        return float(np.sqrt((np.diff(series, axis=0) ** 2).sum(-1).mean()))

    assert jitter("filtered", smooth) < jitter("landmarks", smooth) / 2   # at least the 2x #24 asks (2.6x)
