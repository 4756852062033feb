"""The torch-free detector against the one it replaces: MTCNN on onnxruntime (`mtcnn_onnx`, the
runtime's default) vs facenet-pytorch's MTCNN (`mtcnn`, the boxes every model trained on).

    python benchmarks/detector_onnx.py data/300w data/dt --nme-root data/300w --model ibug68
    python benchmarks/detector_onnx.py --nme-root data/300w --model ibug68     # the NME rows alone

For every image of every split of each ROOT (LaPa layout; the shared 300-W and Datatang faces),
both detectors run, interleaved, one thread each; each keeps one box by the `facemark boxes` rule
(facemark.data.detectors.select_detection). Printed:
- recall: share of faces whose kept box overlaps the annotated face's landmark box (IoU >= 0.3);
- IoU of the two kept boxes (median, 1st percentile, minimum) and the largest corner difference;
- ms per image: median of each detector's detect() call, same images, same process;
- on --nme-root's test split: the inter-pupil and outer-corner NME of --model (a shipped model's
  name or an artifact) on each detector's boxes, through Landmarker.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from facemark import Landmarker
from facemark.codec import box_iou, landmark_box
from facemark.data.detectors import create_detector, select_detection
from facemark.data.layout import list_split, load_sample, present_splits
from facemark.metrics import nme
from facemark.schemes import load_scheme

DETECTORS = ("mtcnn", "mtcnn_onnx")
HIT_IOU = 0.3


def _points_count(path: Path) -> int:
    return int(path.read_text().split()[0])


def run_detectors(roots: list[Path], splits: list[str] | None = None) -> dict[str, dict]:
    """Both detectors on every image (of `splits`, default all) -> {detector: {"boxes": {key: box
    or None}, "ms": [...], "hits": [...]}}; key = ROOT/split/stem."""
    detectors = {name: create_detector(name) for name in DETECTORS}
    results = {name: {"boxes": {}, "ms": [], "hits": []} for name in DETECTORS}
    for root in roots:
        for split in splits or present_splits(root):
            for sample in list_split(root, split):
                image, points = load_sample(sample, _points_count(sample.landmarks_path))
                truth = landmark_box(points)
                for name, detector in detectors.items():
                    start = time.perf_counter()
                    found = detector.detect(image)
                    results[name]["ms"].append(1000 * (time.perf_counter() - start))
                    kept = select_detection(found, (image.shape[1], image.shape[0]))
                    box = None if kept is None else kept[0]
                    results[name]["boxes"][f"{root}/{split}/{sample.stem}"] = box
                    results[name]["hits"].append(box is not None and box_iou(box, truth) >= HIT_IOU)
    return results


def landmark_nme(root: Path, model: str, results: dict[str, dict]) -> dict[str, tuple[float, float, int]]:
    """--model on each detector's kept boxes of ROOT's test split (from `results`, or detected
    here when ROOT was not among the roots) -> {detector: (IP NME, OC NME, faces)}; a face either
    detector missed is left out of both rows."""
    landmarker = Landmarker(model)
    scheme = load_scheme(landmarker.scheme.name)
    samples = list_split(root, "test")
    keys = [f"{root}/test/{sample.stem}" for sample in samples]
    if any(key not in results["mtcnn"]["boxes"] for key in keys):
        results = run_detectors([root], splits=["test"])
    both = [i for i, key in enumerate(keys) if all(results[name]["boxes"][key] is not None for name in DETECTORS)]
    rows = {}
    for name in DETECTORS:
        preds, truths = [], []
        for i in both:
            image, points = load_sample(samples[i], scheme.num_points)
            faces = landmarker.predict(image, boxes=results[name]["boxes"][keys[i]])
            preds.append(faces[0].landmarks)
            truths.append(points)
        pred, truth = np.stack(preds), np.stack(truths)
        rows[name] = (float(nme(pred, truth, scheme, "pupil").mean()), float(nme(pred, truth, scheme, "corner").mean()),
                      len(both))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", type=Path, nargs="*", help="LaPa-layout dataset roots (every split is used)")
    parser.add_argument("--nme-root", type=Path, help="root whose test split the landmark NME is measured on")
    parser.add_argument("--model", default="ibug68", help="landmark model for the NME rows (default: ibug68)")
    args = parser.parse_args()
    results = run_detectors(args.roots)
    if args.roots:
        print_detection(args.roots, results)
    if args.nme_root is not None:
        print_nme(args.nme_root, args.model, results)


def print_detection(roots: list[Path], results: dict[str, dict]) -> None:
    keys = list(results["mtcnn"]["boxes"])
    print(f"{len(keys)} images of {', '.join(map(str, roots))}")
    print(f"{'detector':<12} {'recall':>7} {'misses':>7} {'ms/image':>9}")
    for name in DETECTORS:
        hits = results[name]["hits"]
        misses = sum(results[name]["boxes"][key] is None for key in keys)
        print(f"{name:<12} {np.mean(hits):>7.4f} {misses:>7} {np.median(results[name]['ms']):>9.1f}")
    pairs = [(results["mtcnn"]["boxes"][key], results["mtcnn_onnx"]["boxes"][key]) for key in keys]
    both = [(a, b) for a, b in pairs if a is not None and b is not None]
    ious = np.array([box_iou(a, b) for a, b in both])
    corner = max(float(np.abs(a - b).max()) for a, b in both)
    print(f"box agreement on {len(both)} images found by both: IoU median {np.median(ious):.6f}, "
          f"1st percentile {np.percentile(ious, 1):.6f}, min {ious.min():.6f}; largest corner difference "
          f"{corner:.4f} px; kept boxes differ in {sum((a is None) != (b is None) for a, b in pairs)} images")
    ratio = np.median(results["mtcnn_onnx"]["ms"]) / np.median(results["mtcnn"]["ms"])
    print(f"mtcnn_onnx / mtcnn time per image (medians, one thread each): {ratio:.2f}")


def print_nme(root: Path, model: str, results: dict[str, dict]) -> None:
    rows = landmark_nme(root, model, results)
    for name, (ip, oc, count) in rows.items():
        print(f"{model} on {name} boxes ({count} test faces of {root}): NME IP {ip:.5f}, OC {oc:.5f}")
    base, new = rows["mtcnn"][0], rows["mtcnn_onnx"][0]
    print(f"NME change on mtcnn_onnx boxes: {100 * (new / base - 1):+.3f} %")


if __name__ == "__main__":
    main()
