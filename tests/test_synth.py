"""`facemark synth`: deterministic drawn faces in LaPa layout, scheme tables, box model, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark.cli import main
from facemark.codec import landmark_box
from facemark.data.boxes import box_dir, read_box, write_box
from facemark.data.layout import SPLITS, list_split, load_sample, read_image
from facemark.data.synth import MANIFEST, MARKER, box_entry, generate_dataset, simulate_detector_box
from facemark.data.synth_schemes import SCHEME_TABLES, mirror_entry
from facemark.errors import ConfigError, DataError
from facemark.schemes import load_scheme

COUNTS = {"train": 10, "val": 10, "test": 10}


@pytest.fixture(scope="module")
def lapa(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "lapa"
    generate_dataset(root, scheme="lapa106", counts=COUNTS, seed=7)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_readable_with_the_right_points(lapa: Path):
    scheme = load_scheme("lapa106")
    assert json.loads((lapa / MANIFEST).read_text())["counts"] == COUNTS
    assert not (lapa / MARKER).exists()
    for split in SPLITS:
        samples = list_split(lapa, split)
        assert [s.stem for s in samples] == [f"synth_{i:06d}" for i in range(10)]
        for sample in samples:
            image, points = load_sample(sample, scheme.num_points)
            height, width = image.shape[:2]
            assert 256 <= width <= 512 and 256 <= height <= 512
            assert points.shape == (106, 2)
            assert (points >= 0).all() and (points[:, 0] < width).all() and (points[:, 1] < height).all()
            np.testing.assert_array_equal(points[104], points[74])     # pupils are the eye centres
            np.testing.assert_array_equal(points[105], points[83])
            along = points @ (points[79] - points[66])        # position along the eye axis
            assert along[66] < along[70] < along[75] < along[79]  # left outer, inner; right inner, outer
            box = landmark_box(points)
            fill = max(box[2] - box[0], box[3] - box[1]) / min(width, height)
            assert 0.35 < fill < 0.9


def test_same_seed_is_byte_identical_and_workers_do_not_matter(lapa: Path, tmp_path: Path):
    again = tmp_path / "again"
    generate_dataset(again, scheme="lapa106", counts=COUNTS, seed=7, workers=2)
    assert _files(again) == _files(lapa)
    other = tmp_path / "other"
    generate_dataset(other, scheme="lapa106", counts={"train": 3, "val": 0, "test": 0}, seed=8)
    for stem in ("synth_000000", "synth_000001", "synth_000002"):
        a = (lapa / "train" / "landmarks" / f"{stem}.txt").read_bytes()
        assert (other / "train" / "landmarks" / f"{stem}.txt").read_bytes() != a
    assert not (other / "val").exists()


def test_ibug68_samples_the_same_pictures(lapa: Path, tmp_path: Path):
    root = tmp_path / "ibug"
    generate_dataset(root, scheme="ibug68", counts={"train": 0, "val": 4, "test": 0}, seed=7)
    for sample in list_split(root, "val"):
        image, points = load_sample(sample, 68)
        assert points.shape == (68, 2)
        np.testing.assert_array_equal(image, read_image(lapa / "val" / "images" / f"{sample.stem}.jpg"))
        lapa_points = np.loadtxt(lapa / "val" / "landmarks" / f"{sample.stem}.txt", skiprows=1)
        np.testing.assert_allclose(points[[0, 8, 16]], lapa_points[[0, 16, 32]], atol=1e-3)  # jaw ends, chin
        np.testing.assert_allclose(points[36], lapa_points[66], atol=1e-3)                  # outer corners
        np.testing.assert_allclose(points[45], lapa_points[79], atol=1e-3)


def test_landmarks_sit_on_drawn_features(lapa: Path):
    """Pupils are dark blobs: darker than the cheek (midway between pupil and mouth corner) and
    than the sclera-coloured eye corners, on average over the faces."""
    pupil, cheek = [], []
    for split in SPLITS:
        for sample in list_split(lapa, split):
            image, points = load_sample(sample, 106)
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float)
            at = lambda p: grey[int(round(p[1])), int(round(p[0]))]
            pupil += [at(points[104]), at(points[105])]
            cheek += [at((points[104] + points[84]) / 2), at((points[105] + points[90]) / 2)]
    assert np.mean(pupil) < 0.6 * np.mean(cheek)


def test_box_cache_is_readable(lapa: Path):
    boxes = 0
    for split in SPLITS:
        for sample in list_split(lapa, split):
            box = read_box(box_dir(lapa, split, "synth") / f"{sample.stem}.txt")
            if box is None:
                continue
            boxes += 1
            points = np.loadtxt(sample.landmarks_path, skiprows=1)
            tight = landmark_box(points)
            iou_area = np.prod(np.clip(np.minimum(box[2:], tight[2:]) - np.maximum(box[:2], tight[:2]), 0, None))
            union = np.prod(box[2:] - box[:2]) + np.prod(tight[2:] - tight[:2]) - iou_area
            assert iou_area / union > 0.6
    assert boxes >= 28


def test_box_entries_match_write_box(tmp_path: Path):
    for box, score in ((np.array([1.0, 2.5, 30.125, 40.0]), 0.93456), (None, 0.0)):
        write_box(tmp_path / "entry.txt", box, score)
        assert box_entry(box, score) == (tmp_path / "entry.txt").read_text()


def test_detector_box_model_statistics():
    """The documented bias: top 10 % of h below the brows, bottom 5 % below the chin, 13 % wider,
    3-4 % noise, 1.5 % misses."""
    points = np.array([[100.0, 100.0], [300.0, 100.0], [100.0, 350.0], [300.0, 350.0]])
    rng = np.random.default_rng(0)
    results = [simulate_detector_box(points, rng) for _ in range(4000)]
    boxes = np.array([box for box, _ in results if box is not None])
    miss_rate = 1 - len(boxes) / len(results)
    assert 0.008 < miss_rate < 0.025
    top_offset, bottom_offset = (boxes[:, 1] - 100.0) / 250.0, (boxes[:, 3] - 350.0) / 250.0
    width_ratio = (boxes[:, 2] - boxes[:, 0]) / 200.0
    assert abs(np.median(top_offset) - 0.10) < 0.01 and abs(np.median(bottom_offset) - 0.05) < 0.01
    assert abs(np.median(width_ratio) - 1.13) < 0.01
    assert 0.03 < np.std(width_ratio) < 0.06
    assert all(0.9 <= score <= 1.0 for box, score in results if box is not None)


@pytest.mark.parametrize("name", sorted(SCHEME_TABLES))
def test_scheme_tables_mirror_like_the_scheme_flip(name: str):
    scheme, table = load_scheme(name), SCHEME_TABLES[name]
    assert len(table) == scheme.num_points
    for index, entry in enumerate(table):
        curve, u = mirror_entry(entry)
        partner_curve, partner_u = table[scheme.flip[index]]
        assert (curve, round(u, 6)) == (partner_curve, round(partner_u, 6)), index


def test_refuses_foreign_and_different_folders(lapa: Path, tmp_path: Path, capsys):
    foreign = tmp_path / "real"
    (foreign / "train" / "images").mkdir(parents=True)
    (foreign / "train" / "images" / "a.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=re.escape(str(foreign))):
        generate_dataset(foreign, scheme="lapa106", counts=COUNTS, seed=7)
    assert (foreign / "train" / "images" / "a.jpg").read_bytes() == b"x"
    with pytest.raises(DataError, match=r"seed differ"):
        generate_dataset(lapa, scheme="lapa106", counts=COUNTS, seed=8)
    before = {p: p.stat().st_mtime_ns for p in lapa.rglob("*")}
    generate_dataset(lapa, scheme="lapa106", counts=COUNTS, seed=7)
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in lapa.rglob("*")} == before
    with pytest.raises(ConfigError, match="available"):
        generate_dataset(tmp_path / "x", scheme="lapa68", counts=COUNTS, seed=7)


def test_interrupted_run_is_regenerated(tmp_path: Path):
    counts = {"train": 3, "val": 2, "test": 0}
    reference = tmp_path / "reference"
    generate_dataset(reference, scheme="wflw98", counts=counts, seed=1)
    broken = tmp_path / "broken"
    generate_dataset(broken, scheme="wflw98", counts=counts, seed=1)
    # as if killed after the train split: marker present, no manifest, a stale partial folder
    (broken / MANIFEST).unlink()
    (broken / MARKER).write_text("{}")
    (broken / "val" / "landmarks" / "synth_000001.txt").unlink()
    (broken / ".val.abc.partial").mkdir()
    generate_dataset(broken, scheme="wflw98", counts=counts, seed=1)
    assert _files(broken) == _files(reference)


def test_cli(tmp_path: Path, capsys):
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--scheme", "datatang106", "--n-train", "2", "--n-val", "1",
            "--n-test", "1", "--seed", "5"]
    assert main(args) == 0
    assert "wrote 4 synthetic datatang106 faces" in capsys.readouterr().out
    assert len(list_split(out, "test")) == 1
    assert main(args[:-1] + ["6"]) == 2
    assert f"{out}: holds a synthetic dataset made with other parameters" in capsys.readouterr().err
