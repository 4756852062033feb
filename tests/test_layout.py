"""The LaPa reader: every error names its file (and line) and what was expected; good files load."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from facemark.data.layout import (
    Sample,
    check_points_inside,
    list_samples_lenient,
    list_split,
    load_sample,
    present_splits,
    read_image,
    read_landmarks,
    write_landmarks,
)
from facemark.errors import DataError
from tiny_lapa import face_points, make_split, write_image

LANDMARK_CASES = {
    # name: (file text, expected fragment of the message after the path)
    "empty": ("", ": empty landmark file (expected the point count on line 1)"),
    "blank_lines_only": ("\n  \n", ": empty landmark file (expected the point count on line 1)"),
    "count_not_int": ("three\n1 2\n", ":1: expected the point count, got 'three'"),
    "count_too_big": ("3\n1 2\n3 4\n", ": line 1 says 3 points but 2 point lines follow"),
    "count_too_small": ("1\n1 2\n3 4\n", ": line 1 says 1 points but 2 point lines follow"),
    "non_numeric": ("2\n1 2\n3 abc\n", ":3: expected two numbers 'x y', got '3 abc'"),
    "three_numbers": ("2\n1 2 5\n3 4\n", ":2: expected two numbers 'x y', got '1 2 5'"),
    "one_number": ("2\n1 2\n3\n", ":3: expected two numbers 'x y', got '3'"),
    "nan": ("2\nnan 2\n3 4\n", ":2: non-finite coordinate 'nan 2'"),
    "inf": ("2\n1 2\n3 inf\n", ":3: non-finite coordinate '3 inf'"),
}


@pytest.mark.parametrize("case", sorted(LANDMARK_CASES))
def test_read_landmarks_errors_name_file_and_line(tmp_path: Path, case: str) -> None:
    text, expected = LANDMARK_CASES[case]
    path = tmp_path / f"{case}.txt"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_landmarks(path)
    assert str(info.value) == f"{path}{expected}"


def test_read_landmarks_scheme_count(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    write_landmarks(path, face_points(5, seed=0))
    assert read_landmarks(path, 5).shape == (5, 2)
    with pytest.raises(DataError, match=r"a\.txt: 5 points, but the scheme expects 106$"):
        read_landmarks(path, 106)


def test_read_landmarks_missing_and_binary(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.txt: cannot read landmark file \(FileNotFoundError\)"):
        read_landmarks(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match=r"binary\.txt: cannot read landmark file \(UnicodeDecodeError\)"):
        read_landmarks(binary)


def test_landmarks_round_trip(tmp_path: Path) -> None:
    points = face_points(7, seed=3).astype(np.float32)
    write_landmarks(tmp_path / "p.txt", points)
    assert np.abs(read_landmarks(tmp_path / "p.txt", 7) - points).max() < 1e-3


def _truncated(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"cut{suffix}"
    write_image(path, seed=0)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


IMAGE_CASES = {
    "truncated_jpeg": (lambda d: _truncated(d, ".jpg"), ": truncated JPEG (no end-of-image marker)"),
    "truncated_png": (lambda d: _truncated(d, ".png"), ": truncated PNG (no IEND chunk)"),
    "empty": (lambda d: (d / "empty.jpg", (d / "empty.jpg").write_bytes(b""))[0], ": empty image file"),
    "not_an_image": (lambda d: (d / "text.jpg", (d / "text.jpg").write_text("hello"))[0],
                     ": not an image (no JPEG, PNG or other known image header)"),
    "missing": (lambda d: d / "missing.png", ": cannot read image (No such file or directory)"),
    "fifo": (lambda d: (d / "pipe.jpg", os.mkfifo(d / "pipe.jpg"))[0], ": not a regular file (a FIFO); give an image file"),
    "device": (lambda d: (d / "zero.jpg", (d / "zero.jpg").symlink_to("/dev/zero"))[0],
               ": not a regular file (a character device); give an image file"),
    "folder": (lambda d: (d / "dir.jpg", (d / "dir.jpg").mkdir())[0], ": not a regular file (a folder); give an image file"),
    "sparse_40gb": (lambda d: _sparse(d / "huge.png", 40 << 30),
                    ": 42,949,672,960 bytes, more than a 8x8 PNG image can hold; not read"),
}


def _sparse(path: Path, size: int) -> Path:
    """An 8x8 PNG's bytes, then holes up to `size` bytes (no disk used): only its start is a header."""
    path.write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    os.truncate(path, size)
    return path


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_read_image_errors_name_file(tmp_path: Path, case: str) -> None:
    make, expected = IMAGE_CASES[case]
    path = make(tmp_path)
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(info.value) == f"{path}{expected}"


def test_read_image_channels(tmp_path: Path) -> None:
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    bgra = np.zeros((12, 10, 4), np.uint8)
    bgra[..., 0], bgra[..., 3] = 200, 255           # pure blue in BGR(A) order
    cv2.imwrite(str(tmp_path / "bgra.png"), bgra)
    wide = np.full((12, 10, 3), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8 and (out[..., 0] == gray).all()
    rgb = read_image(tmp_path / "bgra.png")
    assert rgb.shape == (12, 10, 3) and rgb[0, 0].tolist() == [0, 0, 200]
    assert read_image(tmp_path / "wide.png").max() == 255


def test_points_far_outside_name_line(tmp_path: Path) -> None:
    points = np.array([[10.0, 10.0], [-40.0, 10.0], [10.0, 200.0]])
    check_points_inside(tmp_path / "a.txt", points[:1], 64, 64)      # inside: no error
    with pytest.raises(DataError) as info:
        check_points_inside(tmp_path / "a.txt", points, 64, 64)
    assert str(info.value) == (f"{tmp_path / 'a.txt'}:3: point 1 at (-40.0, 10.0) is far outside the "
                               f"64x64 image (2 such points)")


def test_load_sample(tmp_path: Path) -> None:
    make_split(tmp_path, "train", 1, 5)
    (sample,) = list_split(tmp_path, "train")
    image, points = load_sample(sample, 5)
    assert image.shape == (64, 64, 3) and points.shape == (5, 2)
    bad = Sample("train", "x", sample.image_path, sample.landmarks_path)
    with pytest.raises(DataError, match="scheme expects 7"):
        load_sample(bad, 7)


def test_split_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        list_split(tmp_path, "val")
    assert str(info.value).startswith(f"{tmp_path / 'val' / 'images'}: split 'val' not found")


def _pairing_root(tmp_path: Path) -> Path:
    make_split(tmp_path, "train", 3, 5)
    (tmp_path / "train" / "landmarks" / "face001.txt").unlink()                       # image only
    write_landmarks(tmp_path / "train" / "landmarks" / "orphan.txt", face_points(5, 0))  # marks only
    write_image(tmp_path / "train" / "images" / "face002.jpg", seed=9)                 # a duplicate stem
    return tmp_path


def test_pairing_problems_each_name_a_file(tmp_path: Path) -> None:
    root = _pairing_root(tmp_path)
    samples, problems = list_samples_lenient(root, "train")
    images, marks = root / "train" / "images", root / "train" / "landmarks"
    assert [s.stem for s in samples] == ["face000"]
    assert problems == [
        f"{images / 'face002.jpg'}: duplicate stem 'face002' with face002.png (expected exactly one image per stem)",
        f"{images / 'face001.png'}: no landmark file (expected {marks / 'face001.txt'})",
        f"{marks / 'orphan.txt'}: landmark file without an image in {images}",
    ]
    with pytest.raises(DataError, match=r"\(and 2 more; `facemark check-data` lists all\)$"):
        list_split(root, "train")


def test_empty_split_and_missing_landmarks_folder(tmp_path: Path) -> None:
    (tmp_path / "train" / "images").mkdir(parents=True)
    (tmp_path / "train" / "landmarks").mkdir()
    assert list_samples_lenient(tmp_path, "train") == (
        [], [f"{tmp_path / 'train' / 'images'}: split 'train' has no .jpg/.png images"])
    make_split(tmp_path, "val", 2, 5)
    (tmp_path / "val" / "landmarks" / "face000.txt").unlink()
    (tmp_path / "val" / "landmarks" / "face001.txt").unlink()
    (tmp_path / "val" / "landmarks").rmdir()
    assert list_samples_lenient(tmp_path, "val")[1] == [
        f"{tmp_path / 'val' / 'landmarks'}: no landmarks folder (expected ROOT/val/landmarks/NAME.txt)"]


def test_present_splits_order(tmp_path: Path) -> None:
    for split in ("test", "extra", "train"):
        (tmp_path / split / "images").mkdir(parents=True)
    (tmp_path / "notasplit").mkdir()
    assert present_splits(tmp_path) == ["train", "test", "extra"]
    assert present_splits(tmp_path / "absent") == []


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "gaps.txt"
    path.write_text("\n2\n1 2\n\n3 x\n")
    with pytest.raises(DataError) as info:
        read_landmarks(path)
    assert str(info.value) == f"{path}:5: expected two numbers 'x y', got '3 x'"
    path.write_text("\n3\n1 2\n")
    with pytest.raises(DataError, match=r"gaps\.txt: line 2 says 3 points but 1 point lines follow$"):
        read_landmarks(path)
