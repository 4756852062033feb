"""`facemark check-data`: every problem at once, one line each naming the file; exit code 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facemark.cli import main
from facemark.data.check import PRINT_LIMIT, SplitSummary, check_dataset, print_report, usable_samples
from facemark.data.layout import write_landmarks
from tiny_lapa import face_points, make_split, write_image

P = 68   # ibug68


def _broken_dataset(root: Path) -> dict[str, str]:
    """A train split with one problem of each kind (face000 stays clean), an empty val split.
    Returns {what: expected problem line}."""
    make_split(root, "train", 9, P)
    images, marks = root / "train" / "images", root / "train" / "landmarks"
    lines = (marks / "face001.txt").read_text().splitlines()
    (marks / "face001.txt").write_text("\n".join(lines[:-1]) + "\n")            # count line says 68
    write_landmarks(marks / "face002.txt", face_points(5, seed=2))              # wrong scheme
    (marks / "face003.txt").write_text("\n".join(lines[:3] + ["nan 4.0"] + lines[4:]) + "\n")
    data = (images / "face004.png").read_bytes()
    (images / "face004.png").write_bytes(data[: len(data) // 2])                # truncated
    far = face_points(P, seed=5)
    far[10] = [500.0, 20.0]
    write_landmarks(marks / "face005.txt", far)                                 # point far outside
    (marks / "face006.txt").unlink()                                            # image only
    write_landmarks(marks / "orphan.txt", face_points(P, seed=0))               # landmarks only
    write_image(images / "face007.jpg", seed=7)                                 # duplicate stem
    (images / "face008.png").write_text("not an image")                         # two problems
    (marks / "face008.txt").write_text("68\n" + "1.0 abc\n" * 68)
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "landmarks").mkdir()
    return {
        "missing split": f"{root / 'test' / 'images'}: split 'test' not found (present: train, val)",
        "duplicate": f"{images / 'face007.jpg'}: duplicate stem 'face007' with face007.png "
                     f"(expected exactly one image per stem)",
        "image only": f"{images / 'face006.png'}: no landmark file (expected {marks / 'face006.txt'})",
        "landmarks only": f"{marks / 'orphan.txt'}: landmark file without an image in {images}",
        "count": f"{marks / 'face001.txt'}: line 1 says 68 points but 67 point lines follow",
        "scheme": f"{marks / 'face002.txt'}: 5 points, but the scheme expects 68",
        "nan": f"{marks / 'face003.txt'}:4: non-finite coordinate 'nan 4.0'",
        "truncated": f"{images / 'face004.png'}: truncated PNG (no IEND chunk)",
        "outside": f"{marks / 'face005.txt'}:12: point 10 at (500.0, 20.0) is far outside the 64x64 "
                   f"image (1 such points)",
        "non-numeric": f"{marks / 'face008.txt'}:2: expected two numbers 'x y', got '1.0 abc'",
        "corrupt": f"{images / 'face008.png'}: not an image (no JPEG, PNG or other known image header)",
        "empty split": f"{root / 'val' / 'images'}: split 'val' has no .jpg/.png images",
    }


def test_check_dataset_reports_every_problem(tmp_path: Path) -> None:
    expected = _broken_dataset(tmp_path)
    report = check_dataset(tmp_path, "ibug68", ["train", "val", "test"])
    assert sorted(report) == sorted(expected.values())
    assert report.splits == [SplitSummary("train", faces=7, ok=1, problems=10),
                             SplitSummary("val", faces=0, ok=0, problems=1)]


def test_cli_exit_code_and_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    expected = _broken_dataset(tmp_path)
    assert main(["check-data", str(tmp_path), "--scheme", "ibug68"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["train: 1/7 faces ok, 10 problems", "val: 0/0 faces ok, 1 problems"]
    assert sorted(out[2:-1]) == sorted(v for k, v in expected.items() if k != "missing split")
    assert out[-1] == "11 problems found"


def test_cli_clean_dataset_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_split(tmp_path, "train", 3, P, suffix=".jpg")
    make_split(tmp_path, "test", 2, P)
    assert main(["check-data", str(tmp_path), "--scheme", "ibug68"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "train: 3/3 faces ok, 0 problems", "test: 2/2 faces ok, 0 problems", "no problems found"]
    assert main(["check-data", str(tmp_path), "--scheme", "ibug68", "--split", "test"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "test: 2/2 faces ok, 0 problems"


@pytest.mark.parametrize("layout, expected", [
    ("no root", "{root}: dataset root not found"),
    ("no splits", "{root}: no splits found (expected ROOT/<split>/images/ and ROOT/<split>/landmarks/ "
                  "for a split in train, val, test)"),
])
def test_cli_missing_root_or_splits(tmp_path: Path, capsys: pytest.CaptureFixture, layout: str,
                                    expected: str) -> None:
    root = tmp_path / "data"
    if layout == "no splits":
        (root / "train").mkdir(parents=True)       # no images/ inside: not a split
    assert main(["check-data", str(root)]) == 1
    assert capsys.readouterr().out.splitlines() == [expected.format(root=root), "1 problems found"]


def test_cli_unknown_scheme_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_split(tmp_path, "train", 1, P)
    assert main(["check-data", str(tmp_path), "--scheme", "nope"]) == 2
    assert "unknown landmark scheme 'nope'; available: datatang106, ibug68" in capsys.readouterr().err


def test_print_report_caps_output(capsys: pytest.CaptureFixture) -> None:
    problems = [f"/x/{i}.txt: bad" for i in range(PRINT_LIMIT + 7)]
    print_report(problems)
    out = capsys.readouterr().out.splitlines()
    assert out[:PRINT_LIMIT] == problems[:PRINT_LIMIT]
    assert out[PRINT_LIMIT:] == ["... and 7 more", f"{PRINT_LIMIT + 7} problems found"]


def test_usable_samples_keeps_only_clean_faces(tmp_path: Path) -> None:
    expected = _broken_dataset(tmp_path)
    samples, problems = usable_samples(tmp_path, "train", "ibug68")
    assert [s.stem for s in samples] == ["face000"]
    train_lines = {v for k, v in expected.items() if k not in ("missing split", "empty split")}
    assert sorted(problems) == sorted(train_lines)


def test_check_many_faces_uses_pool_and_keeps_order(tmp_path: Path) -> None:
    make_split(tmp_path, "train", 40, P)
    bad = [3, 17, 38]
    for i in bad:
        points = face_points(P, seed=i)
        points[0] = np.nan
        write_landmarks(tmp_path / "train" / "landmarks" / f"face{i:03d}.txt", points)
    report = check_dataset(tmp_path, "ibug68", None)
    assert [line.split("/")[-1].split(":")[0] for line in report] == [f"face{i:03d}.txt" for i in bad]
    assert report.splits == [SplitSummary("train", 40, 37, 3)]
