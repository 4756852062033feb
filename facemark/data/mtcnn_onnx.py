"""MTCNN on onnxruntime: facenet-pytorch's detector without torch, the runtime's default detector.

The three nets (P-, R- and O-Net) are facenet-pytorch's MIT-licensed weights exported to ONNX by
`export_nets` (build time, needs torch; `make models`) and shipped in facemark/pretrained/mtcnn/.
`OnnxMtcnnDetector.detect` is facenet-pytorch's `detect_face` cascade for one image, step by step,
so the boxes match the torch detector's (docs/models.md measures it):
    1. image pyramid from min_face 20 px, factor 0.709; each level resized by area averaging
       (torch's `interpolate(mode="area")`, i.e. adaptive average pooling: `area_resize`);
    2. P-Net on every level -> 12 px windows scoring >= 0.6, NMS 0.5 per level, 0.7 over all levels;
    3. box regression, squared, cropped and area-resized to 24 px -> R-Net >= 0.7, NMS 0.7;
    4. the same at 48 px -> O-Net >= 0.7, regression, NMS 0.7 on the smaller box's area ("Min").
Pixels are normalised as (x - 127.5) / 128. Boxes are x0 y0 x1 y1 in image pixels; score = O-Net's
face probability.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemark.errors import ArtifactError
from facemark.io import sha256_of

MIN_FACE = 20
FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)
NETS = ("pnet", "rnet", "onet")
# one onnxruntime thread per net: MTCNN runs many small convolutions (see detectors.MTCNN_THREADS)
THREADS = 1

NETS_RECORD = "nets.json"
SOURCE = {"weights": "facenet-pytorch's MTCNN (pnet.pt, rnet.pt, onet.pt)", "licence": "MIT (facenet-pytorch)",
          "paper": "Zhang et al., Joint Face Detection and Alignment using Multi-task Cascaded "
                   "Convolutional Networks, IEEE SPL 2016"}


def integral_image(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H + 1, W + 1, C) float64 summed-area table: any rectangle's sum in 4 reads."""
    table = np.zeros((image.shape[0] + 1, image.shape[1] + 1, image.shape[2]), np.float64)
    table[1:, 1:] = image.cumsum(axis=0, dtype=np.float64).cumsum(axis=1)
    return table


def _bins(offset: int, length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive pooling of `length` inputs into `size` cells -> (start, end) input index per cell,
    cell i covering floor(i*length/size) .. ceil((i+1)*length/size) - 1."""
    index = np.arange(size)
    return offset + (index * length) // size, offset - ((-(index + 1) * length) // size)


def area_resize(table: np.ndarray, top: int, left: int, rows: int, cols: int, height: int,
                width: int) -> np.ndarray:
    """The image region rows top..top+rows-1, cols left..left+cols-1 (given by its integral_image)
    -> (height, width, C) float32 by adaptive average pooling: torch's `interpolate(mode="area")`,
    which facenet-pytorch's MTCNN uses (cv2.INTER_AREA weights partial pixels instead)."""
    y0, y1 = _bins(top, rows, height)
    x0, x1 = _bins(left, cols, width)
    sums = (table[y1][:, x1] - table[y0][:, x1] - table[y1][:, x0] + table[y0][:, x0])
    return (sums / ((y1 - y0)[:, None, None] * (x1 - x0)[None, :, None])).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, min_area: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression -> kept indices, best score first. (N, 4) x0 y0 x1 y1.
    Default: IoU of the plain areas, equal scores in index order (torchvision's nms: a stable
    descending sort; stages 1-2); `min_area`: overlap over the smaller box's area with the +1 pixel
    convention, equal scores from numpy's default argsort taken from its end (facenet-pytorch's own
    "Min" NMS of stage 3), so near-saturated O-Net scores keep the same box."""
    one = 1.0 if min_area else 0.0
    x0, y0, x1, y1 = (boxes[:, k] for k in range(4))
    areas = (x1 - x0 + one) * (y1 - y0 + one)
    order = np.argsort(scores)[::-1] if min_area else np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + one)
        height = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + one)
        inter = width * height
        denom = np.minimum(areas[best], areas[rest]) if min_area else areas[best] + areas[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-12) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """rerec: each (x0 y0 x1 y1) box -> the square of its longer side around its centre."""
    out = boxes.copy()
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    out[:, 0] = boxes[:, 0] + width * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + height * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """bbreg: shift each box's sides by (N, 4) offsets in units of its size (+1 pixel convention)."""
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, axis=1)
    out = boxes.copy()
    out[:, :4] = boxes[:, :4] + offsets * size
    return out


def _windows(table: np.ndarray, boxes: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops of `boxes` (truncated to whole pixels, clipped to the image, 1-based inclusive as
    facenet-pytorch's `pad`) area-resized to side x side -> ((K, 3, side, side) normalised input,
    indices of the boxes that have a non-empty crop). `table`: the image's integral_image."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    whole = np.trunc(boxes[:, :4]).astype(np.int64)
    x0, y0 = np.maximum(whole[:, 0], 1), np.maximum(whole[:, 1], 1)
    x1, y1 = np.minimum(whole[:, 2], width), np.minimum(whole[:, 3], height)
    valid = np.flatnonzero((y1 > y0 - 1) & (x1 > x0 - 1))
    crops = [area_resize(table, y0[k] - 1, x0[k] - 1, y1[k] - y0[k] + 1, x1[k] - x0[k] + 1, side, side)
             for k in valid]
    batch = np.stack(crops).transpose(0, 3, 1, 2) if crops else np.zeros((0, 3, side, side), np.float32)
    return ((batch - 127.5) * 0.0078125).astype(np.float32), valid


def _recorded_hashes(folder: Path) -> dict[str, str]:
    """{file name: sha256} of the nets as nets.json records them."""
    import json

    path = folder / NETS_RECORD
    try:
        return dict(json.loads(path.read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: cannot read the nets' record ({exc}); rebuild with `make models`") from None


class OnnxMtcnnDetector:
    """facenet-pytorch's MTCNN on onnxruntime (module docstring). Safe to share between threads:
    onnxruntime sessions are, and each call keeps its state on the stack."""

    name = "mtcnn_onnx"

    def __init__(self, folder: Path | None = None) -> None:
        import onnxruntime as ort

        from facemark.pretrained import detector_folder

        folder = detector_folder("mtcnn") if folder is None else Path(folder)
        expected = _recorded_hashes(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._nets = {}
        for net in NETS:
            path = folder / f"{net}.onnx"
            if not path.is_file():
                raise ArtifactError(f"{path}: missing MTCNN net (rebuild with `make models`)")
            if sha256_of(path) != expected.get(path.name):
                raise ArtifactError(f"{path}: sha256 does not match {folder / NETS_RECORD} (modified or "
                                    f"replaced; rebuild with `make models`)")
            self._nets[net] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, net: str, batch: np.ndarray) -> list[np.ndarray]:
        session = self._nets[net]
        return session.run(None, {session.get_inputs()[0].name: batch})

    def detect(self, image_rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """(H, W, 3) uint8 RGB -> every face as ((4,) x0 y0 x1 y1 image pixels, probability)."""
        table = integral_image(np.asarray(image_rgb))
        boxes = self._proposals(table)
        if len(boxes):
            boxes = self._refine(table, boxes)
        if len(boxes):
            boxes = self._output(table, boxes)
        return [(box[:4].astype(np.float64), float(box[4])) for box in boxes]

    def _proposals(self, table: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the pyramid -> (K, 5) squared candidate boxes x0 y0 x1 y1 score."""
        height, width = table.shape[0] - 1, table.shape[1] - 1
        scale, shortest, levels = 12.0 / MIN_FACE, min(height, width) * 12.0 / MIN_FACE, []
        while shortest >= 12:
            levels.append(scale)
            scale, shortest = scale * FACTOR, shortest * FACTOR
        found = []
        for scale in levels:
            level = area_resize(table, 0, 0, height, width, int(height * scale + 1), int(width * scale + 1))
            batch = ((level - 127.5) * 0.0078125).transpose(2, 0, 1)[None].astype(np.float32)
            offsets, probs = self._run("pnet", batch)
            ys, xs = np.nonzero(probs[0, 1] >= THRESHOLDS[0])
            if not len(ys):
                continue
            cells = np.stack([xs, ys], axis=1).astype(np.float32)
            corners0 = np.floor((2 * cells + 1) / scale)
            corners1 = np.floor((2 * cells + 12) / scale)
            level_boxes = np.concatenate([corners0, corners1, probs[0, 1, ys, xs, None],
                                          offsets[0][:, ys, xs].T], axis=1)
            found.append(level_boxes[nms(level_boxes[:, :4], level_boxes[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 5), np.float32)
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
        corrected = boxes[:, :4] + boxes[:, 5:9] * size
        return _square(np.concatenate([corrected, boxes[:, 4:5]], axis=1))

    def _refine(self, table: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24 px crops -> (K, 5) squared boxes scoring >= 0.7 after NMS 0.7."""
        batch, valid = _windows(table, boxes, 24)
        if not len(valid):
            return np.zeros((0, 5), np.float32)
        offsets, probs = self._run("rnet", batch)
        keep = probs[:, 1] > THRESHOLDS[1]
        kept = np.concatenate([boxes[valid][keep, :4], probs[keep, 1:2]], axis=1)
        offsets = offsets[keep]
        pick = nms(kept[:, :4], kept[:, 4], 0.7)
        return _square(_regress(kept[pick], offsets[pick]))

    def _output(self, table: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 3: O-Net on 48 px crops -> (K, 5) final boxes and probabilities."""
        batch, valid = _windows(table, boxes, 48)
        if not len(valid):
            return np.zeros((0, 5), np.float32)
        offsets, _points, probs = self._run("onet", batch)
        keep = probs[:, 1] > THRESHOLDS[2]
        kept = _regress(np.concatenate([boxes[valid][keep, :4], probs[keep, 1:2]], axis=1), offsets[keep])
        return kept[nms(kept[:, :4], kept[:, 4], 0.7, min_area=True)]


def export_nets(folder: Path) -> dict[str, Path]:
    """Build time (needs torch and facenet-pytorch): facenet-pytorch's three MTCNN nets -> ONNX files
    in `folder` (pnet.onnx: any image size; rnet/onet.onnx: any batch) and nets.json (their sha256,
    source and licence). Returns {net: path}."""
    import importlib.metadata
    import json

    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    from facemark.io import atomic_path, atomic_write_text, sha256_of

    folder.mkdir(parents=True, exist_ok=True)
    specs = {"pnet": (PNet, (1, 3, 48, 64), ["offsets", "probs"], {0: "batch", 2: "height", 3: "width"}),
             "rnet": (RNet, (2, 3, 24, 24), ["offsets", "probs"], {0: "batch"}),
             "onet": (ONet, (2, 3, 48, 48), ["offsets", "points", "probs"], {0: "batch"})}
    written = {}
    for net, (factory, shape, outputs, input_axes) in specs.items():
        model = factory(pretrained=True).eval()
        axes = {"image": input_axes, **{name: {0: "batch"} for name in outputs}}
        with atomic_path(folder / f"{net}.onnx") as tmp, torch.no_grad():
            torch.onnx.export(model, (torch.zeros(shape),), str(tmp), opset_version=17, dynamo=False,
                              input_names=["image"], output_names=outputs, dynamic_axes=axes)
        written[net] = folder / f"{net}.onnx"
    record = {**SOURCE, "facenet-pytorch": importlib.metadata.version("facenet-pytorch"), "torch": torch.__version__,
              "files": {f"{net}.onnx": sha256_of(path) for net, path in written.items()}}
    atomic_write_text(folder / NETS_RECORD, json.dumps(record, indent=1) + "\n")
    return written
