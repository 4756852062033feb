"""LaPa-layout datasets: `ROOT/<split>/images/NAME.jpg|png` + `ROOT/<split>/landmarks/NAME.txt`.

A landmark file holds the point count on its first line, then one `x y` line per point in
0-based image pixels. Other folders beside images/ and landmarks/ (labels/, boxes/, ...) are
ignored here. Every reader error is a DataError naming the file (and line) and what was expected.
"""

from __future__ import annotations

import functools
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from facemark.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SPLITS = ("train", "val", "test")
# A landmark this far outside the image (as a fraction of the image size) is an annotation error,
# not an occluded point near the border.
OUTSIDE_TOLERANCE = 0.5


@dataclass(frozen=True)
class Sample:
    """One face: its image and landmark files; `stem` is the shared file name without suffix."""

    split: str
    stem: str
    image_path: Path
    landmarks_path: Path


def split_dir(root: Path, split: str) -> Path:
    path = Path(root) / split
    if not (path / "images").is_dir():
        raise DataError(f"{path / 'images'}: split {split!r} not found (expected ROOT/{split}/images/ "
                        f"and ROOT/{split}/landmarks/)")
    return path


def list_split(root: Path, split: str) -> list[Sample]:
    """All samples of a split, sorted by stem; images and landmark files must pair one to one."""
    samples, problems = list_samples_lenient(root, split)
    if problems:
        more = f" (and {len(problems) - 1} more; `facemark check-data` lists all)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    return samples


def present_splits(root: Path) -> list[str]:
    """Split names under `root` that have an images/ folder: train, val, test first, then others."""
    root = Path(root)
    found = sorted(p.name for p in root.iterdir() if (p / "images").is_dir()) if root.is_dir() else []
    return [s for s in SPLITS if s in found] + [s for s in found if s not in SPLITS]


def _images_by_stem(folder: Path) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            by_stem.setdefault(path.stem, []).append(path)
    return by_stem


def _duplicate_problems(by_stem: dict[str, list[Path]]) -> list[str]:
    return [f"{paths[0]}: duplicate stem {stem!r} with {', '.join(p.name for p in paths[1:])} "
            f"(expected exactly one image per stem)" for stem, paths in by_stem.items() if len(paths) > 1]


def list_images(root: Path, split: str) -> tuple[dict[str, Path], list[str]]:
    """Images of a split keyed by stem, and the problems: two images sharing a stem (a.jpg and
    a.png) are ambiguous, so both are left out and reported."""
    by_stem = _images_by_stem(split_dir(root, split) / "images")
    unique = {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}
    return unique, _duplicate_problems(by_stem)


def list_samples_lenient(root: Path, split: str) -> tuple[list[Sample], list[str]]:
    """Like list_split, but unpaired or ambiguous files become problems instead of an exception."""
    folder = split_dir(root, split)
    by_stem = _images_by_stem(folder / "images")
    images = {stem: paths[0] for stem, paths in by_stem.items() if len(paths) == 1}
    problems = _duplicate_problems(by_stem)
    if not by_stem:
        problems.append(f"{folder / 'images'}: split {split!r} has no .jpg/.png images")
    marks_dir = folder / "landmarks"
    if not marks_dir.is_dir():
        # one line instead of one per image: the whole folder is missing
        problems.append(f"{marks_dir}: no landmarks folder (expected ROOT/{split}/landmarks/NAME.txt)")
        return [], problems
    marks = {p.stem: p for p in marks_dir.glob("*.txt")}
    problems += [f"{images[s]}: no landmark file (expected {marks_dir / (s + '.txt')})"
                 for s in sorted(images.keys() - marks.keys())]
    problems += [f"{marks[s]}: landmark file without an image in {folder / 'images'}"
                 for s in sorted(marks.keys() - by_stem.keys())]
    paired = sorted(images.keys() & marks.keys())
    return [Sample(split, s, images[s], marks[s]) for s in paired], problems


def read_landmarks(path: Path, num_points: int | None = None) -> np.ndarray:
    """Parse a landmark file -> (P, 2) float32 image pixels; checks count, numbers and NaNs.

    Blank lines are skipped; messages quote the real line numbers of the file.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read landmark file ({exc.__class__.__name__})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError(f"{path}: empty landmark file (expected the point count on line 1)")
    count_line, count_text = lines[0]
    try:
        count = int(count_text)
    except ValueError:
        raise DataError(f"{path}:{count_line}: expected the point count, got {count_text!r}") from None
    if len(lines) - 1 != count:
        raise DataError(f"{path}: line {count_line} says {count} points but {len(lines) - 1} point "
                        f"lines follow")
    if num_points is not None and count != num_points:
        raise DataError(f"{path}: {count} points, but the scheme expects {num_points}")
    points = np.empty((count, 2), dtype=np.float32)
    for index, (number, line) in enumerate(lines[1:]):
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            values = []
        if len(values) != 2:
            raise DataError(f"{path}:{number}: expected two numbers 'x y', got {line!r}")
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{path}:{number}: non-finite coordinate {line!r}")
        points[index] = values
    return points


def write_landmarks(path: Path, points: np.ndarray) -> None:
    """Write (P, 2) image-pixel landmarks in LaPa format."""
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in np.asarray(points, dtype=np.float64))
    path.write_text(f"{len(points)}\n{body}\n")


@functools.cache
def default_max_pixels() -> int:
    """data.max_image_pixels of configs/base.yaml: the limit where no config is at hand."""
    from facemark.config import base_value

    return base_value("data.max_image_pixels")


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file -> (H, W, 3) uint8 RGB.

    Grayscale is expanded to 3 channels, an alpha channel is dropped. Before the file is read
    whole, from its size and first bytes: something that is not a regular file (a FIFO would
    block), an empty file, a file that is no image, an image whose header claims more than
    `max_pixels` (data.max_image_pixels; None: base.yaml's) and a file larger than its header's
    pixels can fill (a 40 GB sparse file named .jpg) are refused; then a truncated JPEG/PNG
    (which OpenCV would decode silently with a grey tail: its end marker is checked). Each is a
    DataError naming the file (see image_header).
    """
    path = Path(path)
    limit = default_max_pixels() if max_pixels is None else max_pixels
    try:
        kind_of_file = path.stat().st_mode
        if not stat.S_ISREG(kind_of_file):
            raise DataError(f"{path}: not a regular file ({file_kind(kind_of_file)}); give an image file")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise DataError(f"{path}: empty image file")
            width, height, kind = image_header(path, handle, limit)
            if size > MAX_BYTES_PER_PIXEL * width * height + MAX_METADATA_BYTES:
                raise DataError(f"{path}: {size:,} bytes, more than a {width}x{height} {kind} image can hold; "
                                f"not read")
            handle.seek(0)
            data = handle.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror or exc.__class__.__name__})") from None
    _check_complete(path, data)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:   # an assertion inside a decoder (e.g. a side above its limit)
        image = None
    if image is None or image.size == 0:
        if kind in ("JPEG", "MPO", "PNG"):   # MPO: a JPEG with a second picture appended (some cameras)
            raise DataError(f"{path}: not a decodable image (a {width}x{height} {kind} header, but OpenCV "
                            f"cannot decode the pixels: corrupt data or an unsupported variant)")
        raise DataError(f"{path}: unsupported codec: a {kind} image OpenCV cannot decode (use JPEG or PNG)")
    if image.dtype != np.uint8:
        image = (image / 257).astype(np.uint8) if image.dtype == np.uint16 else image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


SIGNATURES = {b"\xff\xd8": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}   # the first bytes of each file
# ISO base media file brands of HEIF/AVIF images (iPhones store photos as HEIC): bytes 8-12 of the
# file, after the size and "ftyp"; Pillow does not read these without a plugin, nor does OpenCV
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")


# The most bytes an image file of W x H pixels can take: 16-bit RGBA stored raw (8 bytes a pixel)
# plus metadata (EXIF, ICC profiles, an MPO's second picture is a JPEG, smaller than raw pixels)
MAX_BYTES_PER_PIXEL, MAX_METADATA_BYTES = 8, 64 << 20


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words, from its st_mode."""
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def image_header(path: Path, handle: BinaryIO, max_pixels: int) -> tuple[int, int, str]:
    """The header of an open image file, nothing decoded and the file not read whole (Pillow reads
    the first bytes, seeking past metadata) -> (width, height, format as Pillow names it: "JPEG",
    "PNG", ...). DataError naming the file when it is no image Pillow recognises, or when
    width x height exceeds `max_pixels` (a decompression bomb: a few kB that claim gigapixels)."""
    from PIL import Image

    # Pillow's own bomb check (a warning above 89 MP, an error above 179 MP) would fire first,
    # with another limit and no file name: data.max_image_pixels replaces it
    Image.MAX_IMAGE_PIXELS = None
    handle.seek(0)
    data = handle.read(16)   # the signatures below
    handle.seek(0)
    try:
        with Image.open(handle) as opened:   # lazy: reads the header only
            (width, height), kind = opened.size, str(opened.format)
    except (OSError, SyntaxError, ValueError):   # UnidentifiedImageError is an OSError
        if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
            raise DataError(f"{path}: unsupported codec: a HEIF/AVIF image ({data[8:12].decode()}; convert it "
                            f"to JPEG or PNG)") from None
        for signature, kind in SIGNATURES.items():
            if data.startswith(signature):
                raise DataError(f"{path}: broken {kind} header (not decodable)") from None
        raise DataError(f"{path}: not an image (no JPEG, PNG or other known image header)") from None
    if width * height > max_pixels:
        raise DataError(f"{path}: image too large: its header claims {width}x{height} = {width * height:,} "
                        f"pixels, above data.max_image_pixels = {max_pixels:,}; not decoded")
    return width, height, kind


# EXIF Orientation tag value -> (transpose first?, then np.rot90 count k, counter-clockwise), the
# transform that turns the stored pixels upright (values 1-8 of the TIFF/EXIF specification)
EXIF_ORIENTATION = {2: ("flip", 0), 3: (None, 2), 4: ("flip", 2), 5: ("transpose", 0), 6: (None, 3),
                    7: ("transpose", 2), 8: (None, 1)}


def read_photo(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """A user's photo -> (H, W, 3) uint8 RGB upright: read_image's pixels (and checks, `max_pixels`
    included) turned by the file's EXIF Orientation tag, as phone cameras store portrait shots
    sideways with a tag (datasets are read with read_image, where the landmark files already
    refer to the stored pixels)."""
    from PIL import Image

    image = read_image(path, max_pixels)
    try:
        with Image.open(path) as opened:
            orientation = int(opened.getexif().get(0x0112, 1))
    except (OSError, ValueError):   # no readable EXIF block: the stored pixels are upright
        return image
    first, turns = EXIF_ORIENTATION.get(orientation, (None, 0))
    if first == "flip":
        image = image[:, ::-1]
    elif first == "transpose":
        image = image.transpose(1, 0, 2)
    return np.ascontiguousarray(np.rot90(image, turns))


def _check_complete(path: Path, data: bytes) -> None:
    if data[:2] == b"\xff\xd8":
        # JPEG: the end-of-image marker may be followed by a little padding
        if b"\xff\xd9" not in data[-64:]:
            raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-32:]:
            raise DataError(f"{path}: truncated PNG (no IEND chunk)")


def check_points_inside(path: Path, points: np.ndarray, width: int, height: int) -> None:
    """Refuse landmarks far outside the image (more than OUTSIDE_TOLERANCE of its size).

    The `:line` in the message assumes the file has no blank lines (as write_landmarks writes it).
    """
    lo = -OUTSIDE_TOLERANCE * np.array([width, height])
    hi = (1 + OUTSIDE_TOLERANCE) * np.array([width, height])
    bad = np.flatnonzero(((points < lo) | (points > hi)).any(axis=1))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}:{i + 2}: point {i} at ({points[i, 0]:.1f}, {points[i, 1]:.1f}) is far "
                        f"outside the {width}x{height} image ({bad.size} such points)")


def load_sample(sample: Sample, num_points: int, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one sample -> ((H, W, 3) uint8 RGB image, (P, 2) float32 image-pixel points);
    `max_pixels`: read_image's."""
    points = read_landmarks(sample.landmarks_path, num_points)
    image = read_image(sample.image_path, max_pixels)
    check_points_inside(sample.landmarks_path, points, image.shape[1], image.shape[0])
    return image, points
