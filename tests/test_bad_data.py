"""The bad-input catalogue, data, config files, checkpoints and CLI usage: each case runs the real
CLI and asserts a non-zero exit and a one-line error that names the offending file or key.
"""

from __future__ import annotations

import shutil

import cv2
import pytest
import torch

from facemark.cli import main
from facemark.data.synth import generate_dataset

from cli_errors import COUNTS, error_line, first, replace_line


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


def _nan(root):
    return replace_line(root, "val", 5, "nan 12.0")


def _non_numeric(root):
    return replace_line(root, "val", 7, "12.0 abc")


def _outside(root):
    return replace_line(root, "test", 3, "99999.0 12.0")


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
