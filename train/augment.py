"""Training samples: box choice, box-border jitter, one crop warp, albumentations on the crop.

Per face (coordinate spaces as in facemark.codec):
1. box: the tight landmark box with probability data.landmark_box_prob, else the cached detector
   box (a detector miss falls back to the landmark box);
2. each of the four box borders moves independently by U[-s, s] * box size (augment.box_shift);
   beyond the paper, and off by default: the box is scaled about its centre by U[1-s, 1+s]
   (augment.scale) and moved by U[-t, t] * its width / height (augment.translate), and with
   probability augment.flip the crop is mirrored (x -> S - x in crop pixels) and the landmarks are
   renumbered by the scheme's flip permutation (a left eye corner becomes the right one);
3. crop + resize in ONE resampling (codec.crop_matrix + codec.warp_crop, margin data.margin; the
   jitter and the mirror are part of that one matrix), then albumentations on the small S x S crop
   only: rotation about the crop centre by U[-augment.rotate, augment.rotate] degrees and colour
   jitter, keypoints moved with the pixels;
4. pixels /255 and the model's mean/std (facemark.weights); target = codec.normalise(crop points, S).

Randomness is drawn from a generator seeded by (seed, epoch, index), so a face gets the same
augmentation whatever DataLoader worker, process count or resume point produced it. A switch
at 0 draws nothing, so the paper's recipe (all three at 0) gets exactly the draws it always had.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facemark import codec
from facemark.config import AugmentConfig, DataConfig
from facemark.errors import ConfigError
from facemark.data.crops import choose_box
from facemark.data.layout import Sample, check_points_inside, read_image, read_landmarks
from facemark.schemes import load_scheme
from facemark.weights import Normalisation

# Three crop-pixel anchors sent through albumentations beside the landmarks: where they land gives
# the exact affine the augmentation applied, so the stored matrix includes the rotation.
_ANCHORS = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])


@dataclass
class AugmentedFace:
    """One augmented face. crop (S, S, 3) uint8 RGB; crop_points (P, 2) in crop pixels;
    matrix (2, 3) image pixels -> crop pixels, augmentation included (codec.to_image inverts it).
    When `flipped`, crop_points[i] is image point flip[i] (the scheme's permutation) moved by
    `matrix`: the labels follow the mirrored face, so point i is still "the image-left eye"."""

    crop: np.ndarray
    crop_points: np.ndarray
    matrix: np.ndarray
    flipped: bool = False


def check_augment(aug: AugmentConfig) -> None:
    """Refuse strengths outside their range, naming the key (a negative zoom or a flip
    probability above 1 would otherwise train on something else than asked)."""
    if not 0.0 <= aug.flip <= 1.0:
        raise ConfigError(f"augment.flip: a probability in [0, 1], got {aug.flip}")
    if not 0.0 <= aug.scale < 1.0:
        raise ConfigError(f"augment.scale: expected 0 <= scale < 1 (zoom in [1-s, 1+s]), got {aug.scale}")
    if aug.translate < 0.0:
        raise ConfigError(f"augment.translate: expected >= 0 (fraction of the box size), got {aug.translate}")


def mirror_matrix(size: int) -> np.ndarray:
    """(2, 3) crop pixels -> mirrored crop pixels, x -> S - x: the crop centre S/2 stays put, so
    a mirrored face is centred where an unmirrored one is (codec's convention)."""
    return np.array([[-1.0, 0.0, float(size)], [0.0, 1.0, 0.0]])


def jitter_box(box: np.ndarray, scale: float, translate: float, rng: np.random.Generator) -> np.ndarray:
    """(4,) box -> (4,) box scaled about its centre by z ~ U[1-scale, 1+scale] (so the crop side is
    z times as long: the face looks 1/z as large) and moved by U[-translate, translate] times its
    width (x) and height (y), drawn independently. A strength of 0 draws nothing."""
    box = np.asarray(box, dtype=np.float64)
    if scale <= 0 and translate <= 0:
        return box   # untouched, not recomputed: centre +- half would round the last bit differently
    centre, half = (box[:2] + box[2:]) / 2.0, (box[2:] - box[:2]) / 2.0
    if scale > 0:
        half = half * rng.uniform(1.0 - scale, 1.0 + scale)
    if translate > 0:
        centre = centre + rng.uniform(-translate, translate, size=2) * (box[2:] - box[:2])
    return np.concatenate([centre - half, centre + half])


def build_crop_augment(aug: AugmentConfig) -> A.Compose:
    """The albumentations pipeline applied to the S x S crop; a strength of 0 disables its transform.

    Rotation is an Affine about the crop centre ((S-1)/2, the pixel-centre convention of
    codec); outside the crop is black, as outside the photo in warp_crop.
    """
    geometric: list[A.BasicTransform] = []
    if aug.rotate > 0:
        geometric.append(A.Affine(rotate=(-aug.rotate, aug.rotate), interpolation=cv2.INTER_LINEAR,
                                  border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0))
    colour: list[A.BasicTransform] = []
    if max(aug.brightness, aug.contrast, aug.saturation, aug.hue) > 0:
        colour.append(A.ColorJitter(brightness=aug.brightness, contrast=aug.contrast,
                                    saturation=aug.saturation, hue=aug.hue, p=1.0))
    if aug.occlusion > 0:   # sides up to sqrt(area) each: the rectangle covers up to occlusion_area
        side = math.sqrt(aug.occlusion_area)
        colour.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.1 * side, side),
                                      hole_width_range=(0.1 * side, side), fill="random_uniform", p=aug.occlusion))
    if aug.blur > 0:
        colour.append(A.OneOf([A.GaussianBlur(sigma_limit=(0.5, 2.0), p=1.0), A.MotionBlur(blur_limit=(3, 7), p=1.0)],
                              p=aug.blur))
    if not geometric:   # keypoints stay put (and albumentations warns about an unused keypoint processor)
        return A.Compose(colour)
    return A.Compose(geometric + colour,
                     keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


def shift_box(box: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """(4,) box -> (4,) box with each border moved by U[-shift, shift] times the box's width
    (x0, x1) or height (y0, y1). A shift that would invert the box keeps it at least 1 px wide."""
    box = np.asarray(box, dtype=np.float64)
    if shift <= 0:
        return box.copy()
    width, height = box[2] - box[0], box[3] - box[1]
    moved = box + rng.uniform(-shift, shift, size=4) * np.array([width, height, width, height])
    moved[2] = max(moved[2], moved[0] + 1.0)
    moved[3] = max(moved[3], moved[1] + 1.0)
    return moved


def augment_face(image: np.ndarray, points: np.ndarray, box: np.ndarray, data_cfg: DataConfig,
                 aug_cfg: AugmentConfig, crop_augment: A.Compose, rng: np.random.Generator,
                 flip_permutation: tuple[int, ...] | None = None) -> AugmentedFace:
    """Steps 2-3 for one face: (H, W, 3) uint8 image, (P, 2) image-pixel points, (4,) box.
    `flip_permutation` (the scheme's Scheme.flip) is required when augment.flip > 0."""
    size = data_cfg.input_size
    box = jitter_box(shift_box(box, aug_cfg.box_shift, rng), aug_cfg.scale, aug_cfg.translate, rng)
    matrix = codec.crop_matrix(box, size, data_cfg.margin)
    flipped = aug_cfg.flip > 0 and rng.random() < aug_cfg.flip   # no draw when off
    if flipped:
        if flip_permutation is None or len(flip_permutation) != len(points):
            raise ValueError(f"augment.flip needs the scheme's flip permutation for {len(points)} points")
        matrix = codec.compose_affine(mirror_matrix(size), matrix)
    crop = codec.warp_crop(image, matrix, size)
    crop_points = codec.apply_affine(points, matrix)
    if flipped:
        crop_points = crop_points[list(flip_permutation)]
    if not crop_augment.transforms:
        return AugmentedFace(crop, crop_points, matrix, flipped)
    crop_augment.set_random_seed(int(rng.integers(2**31)))
    if "keypoints" not in crop_augment.processors:   # colour only: points do not move
        return AugmentedFace(crop_augment(image=crop)["image"], crop_points, matrix, flipped)
    anchors = _ANCHORS * size
    out = crop_augment(image=crop, keypoints=np.concatenate([crop_points, anchors]))
    moved = np.asarray(out["keypoints"], dtype=np.float64)[:, :2]
    # the affine taking the anchors to where they landed: [x y 1] @ extra.T = moved
    extra = np.linalg.solve(np.hstack([anchors, np.ones((3, 1))]), moved[-3:]).T
    # image -> crop, then crop -> augmented crop, as one (2, 3) affine
    return AugmentedFace(out["image"], moved[:-3], codec.compose_affine(extra, matrix), flipped)


def _blob_params(norm: Normalisation) -> cv2.dnn.Image2BlobParams:
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = tuple(1.0 / (255.0 * s) for s in norm.std)
    params.mean = tuple(255.0 * m for m in norm.mean)
    params.datalayout = cv2.dnn.DNN_LAYOUT_NCHW
    params.ddepth = cv2.CV_32F
    return params


def normalise_crop(crop: np.ndarray, norm: Normalisation) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (3, S, S) float32: (pixels/255 - mean) / std, the same numbers as
    facemark.data.crops.to_input (within 1e-6) in one OpenCV pass, ~10x faster."""
    return cv2.dnn.blobFromImageWithParams(crop, _blob_params(norm))[0]


class TrainFaces(Dataset):
    """Augmented training faces: item i -> (image (3, S, S) float32 normalised with `norm` (the
    model's mean/std), target (2P,) float32 normalised crop coordinates x0, y0, x1, y1, ...).

    `detector_boxes` maps stem -> (4,) box or None (a miss); None as a whole means no detector
    cache, which is only allowed with data.landmark_box_prob == 1. Landmark files are parsed and
    checked once here (a bad file is a DataError naming it, before training starts); images are
    decoded per item.
    """

    def __init__(self, samples: list[Sample], num_points: int, data_cfg: DataConfig,
                 aug_cfg: AugmentConfig, detector_boxes: dict[str, np.ndarray | None] | None, seed: int,
                 norm: Normalisation):
        if detector_boxes is None and data_cfg.landmark_box_prob < 1.0:
            raise ValueError("detector_boxes is required unless data.landmark_box_prob is 1")
        self.samples = samples
        self.points = [read_landmarks(sample.landmarks_path, num_points) for sample in samples]
        self.num_points = num_points
        self.data_cfg = data_cfg
        self.aug_cfg = aug_cfg
        self.detector_boxes = detector_boxes
        self.seed = seed
        self.norm = norm
        self.epoch = 0
        check_augment(aug_cfg)
        self.crop_augment = build_crop_augment(aug_cfg)
        self.flip_permutation = self._flip_permutation(data_cfg.scheme, num_points) if aug_cfg.flip > 0 else None

    @staticmethod
    def _flip_permutation(scheme_name: str, num_points: int) -> tuple[int, ...]:
        scheme = load_scheme(scheme_name)
        if scheme.num_points != num_points:
            raise ConfigError(f"augment.flip: scheme {scheme_name!r} has {scheme.num_points} points, the "
                              f"faces {num_points}; set data.scheme to the dataset's scheme")
        return scheme.flip

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draw of `epoch` for face() and integer indices."""
        self.epoch = epoch

    def face(self, index: int, epoch: int | None = None) -> AugmentedFace:
        """Decode, choose and jitter the box, warp and augment face `index` (no normalisation), as
        drawn in `epoch` (default: set_epoch's)."""
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        image, points = read_image(sample.image_path, self.data_cfg.max_image_pixels), self.points[index]
        check_points_inside(sample.landmarks_path, points, image.shape[1], image.shape[0])
        use_landmarks = self.detector_boxes is None or rng.random() < self.data_cfg.landmark_box_prob
        box = codec.landmark_box(points) if use_landmarks else choose_box(self.detector_boxes[sample.stem], points)
        return augment_face(image, points, box, self.data_cfg, self.aug_cfg, self.crop_augment, rng,
                            self.flip_permutation)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Face `key` (an index, or (epoch, index) from train.data.EpochSampler) -> (normalised
        (3, S, S) crop, (2P,) normalised crop target)."""
        epoch, index = key if isinstance(key, tuple) else (None, key)
        face = self.face(index, epoch)
        image = normalise_crop(face.crop, self.norm)
        target = codec.normalise(face.crop_points, self.data_cfg.input_size).astype(np.float32).reshape(-1)
        return torch.from_numpy(image), torch.from_numpy(target)


def mean_target(samples: list[Sample], num_points: int, data_cfg: DataConfig) -> np.ndarray:
    """(P, 2) mean normalised landmark position over `samples` with landmark boxes and no
    augmentation: the mean-shape baseline every trained model must beat."""
    targets = []
    for sample in samples:
        points = read_landmarks(Path(sample.landmarks_path), num_points)
        matrix = codec.crop_matrix(codec.landmark_box(points), data_cfg.input_size, data_cfg.margin)
        targets.append(codec.normalise(codec.apply_affine(points, matrix), data_cfg.input_size))
    return np.mean(targets, axis=0)
