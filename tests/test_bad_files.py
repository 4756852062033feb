"""The bad-input catalogue, the faces behind the numbers: changed splits refused by the baseline,
fingerprints, unreadable and oversized files skipped (or stopped on) with one line each.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark.cli import main
from facemark.config import load_config
from facemark.data.fingerprint import fingerprint_split

from cli_errors import COUNTS, error_line, first, replace_line


# ---------------------------------------------------------------- the faces behind the numbers
def _nudge_first_test_face(root: Path) -> Path:
    """Move one landmark of the first test face by one pixel: a still valid, different split."""
    path = first(root, "test", "landmarks")
    x, y = map(float, path.read_text().splitlines()[5].split())
    return replace_line(root, "test", 5, f"{x + 1.0} {y}")


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
