"""The config's schema: one dataclass per section of configs/base.yaml, each field with its type and
value rule (`spec(rule)`, facemark/config_rules.py), and the choice lists the rules use.

Adding a key: its default in base.yaml, `name: type = spec(rule)` here, and at least one refused
value in BAD_VALUES of tests/test_bad_config_values.py (a test fails until all three agree). Loading and
checking the YAML files: facemark/config.py.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Any


from facemark.backends import FORMATS, QAT_FORMATS
from facemark.data.detectors import DETECTORS
from facemark.head_specs import HEADS
from facemark.filters import FILTERS
from facemark.config_rules import (Rule, flag, folder_name, integer, named, number, off_or_at_least, one_of,
                                   optional, probability, spec, subset_of, text)


# Names other modules dispatch on; the stage modules check that their tables agree (tests/test_config.py).
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly")   # timm scheduler names we support
LR_UPDATES = ("step", "epoch")
GRID_COARSE = ("last", "first", "none")   # which stride-32 features a grid head fuses (facemark.model)
LOSSES = ("mse", "wing", "smooth_l1", "l1", "rle", "star")
DEVICES = ("auto", "cpu", "cuda")
ON_MISS = ("landmarks", "skip")
TFLITE_IO = ("float32", "int8", "uint8")
ONNX_ACTIVATIONS = ("uint8", "int8")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# torch's TorchScript ONNX exporter writes opsets up to 20; per-channel int8 QDQ needs >= 13.
OPSETS = (13, 20)
SEED_MAX = 2**32 - 1   # numpy seeds are 32-bit


def _timm_installed() -> bool:
    """Whether timm can be imported: the runtime install ([runtime] extra) has no timm, and its verbs
    (predict, track) never build a backbone, so timm names are checked only where they can be."""
    return importlib.util.find_spec("timm") is not None


def _timm_model(name: str) -> bool:
    if not _timm_installed():
        return True
    import timm

    return timm.is_model(name)


def _timm_models() -> list[str]:
    if not _timm_installed():
        return []
    import timm

    return timm.list_models()


def _timm_optimizers() -> list[str]:
    import timm.optim

    return list(timm.optim.list_optimizers())


def _known_optimizer(name: str) -> bool:
    return not _timm_installed() or name in _timm_optimizers()


def distinct_schemes() -> Rule:
    """data.sets: each set with a scheme of its own (one head per scheme)."""
    return Rule("a list of {root, scheme, weight} sets with distinct schemes",
                lambda value: len({item.scheme for item in value}) == len(value))


def _schemes() -> list[str]:
    from facemark.schemes import available_schemes

    return available_schemes()


# ---------------------------------------------------------------- the config
@dataclass
class ExtraSet:
    """One more labelled dataset trained beside data.scheme's (data.sets): its own head."""

    root: str = spec(text())        # a LaPa-layout folder (train/, val/; boxes of data.detector)
    # its landmark scheme, other than data.scheme's and every other set's
    scheme: str = spec(named("a shipped landmark scheme (facemark/schemes/*.yaml)", lambda v: v in _schemes(),
                             _schemes))
    weight: float = spec(number(0.0, 10.0, low_open=True, what="a loss weight"))   # its faces' loss x weight


@dataclass
class ModelConfig:
    arch: str = spec(named("a timm model name (see timm.list_models())", _timm_model, _timm_models))
    # ImageNet initialisation (hub when online, else pretrained_file)
    pretrained: bool = spec(flag())
    # local .pth/.safetensors (timm or torchvision names)
    pretrained_file: str | None = spec(optional(text()))
    # freeze stem + the first K backbone blocks (the backbone's block count is checked when built)
    freeze_blocks: int = spec(integer(0))
    drop_rate: float = spec(number(0.0, 1.0, high_open=True))
    # pool: timm's global pooling + one Linear (the paper); spatial, pip, integral: facemark.heads
    head: str = spec(one_of(*HEADS))
    head_channels: int = spec(integer(1, 1024))   # spatial: 1x1-conv channels per position; grid heads: width
    # grid heads: the stride-32 block output fused with the stride-16 grid; the backbone ends there
    grid_coarse: str = spec(one_of(*GRID_COARSE))


@dataclass
class AugmentConfig:
    # degrees, U[-rotate, rotate]; 0 disables
    rotate: float = spec(number(0.0, 180.0, what="an angle in degrees"))
    # each box border moved by U[-s, s] * box size; 0 disables; 0.5 could collapse the box
    box_shift: float = spec(number(0.0, 0.5, high_open=True, what="a fraction of the box size"))
    # colour jitter strengths (albumentations ColorJitter); all 0 disables colour jitter
    brightness: float = spec(number(0.0, 1.0))
    contrast: float = spec(number(0.0, 1.0))
    saturation: float = spec(number(0.0, 1.0))
    hue: float = spec(number(0.0, 0.5))          # ColorJitter's own limit
    # P(horizontal flip with the scheme's flip permutation); 0 disables
    flip: float = spec(probability())
    # crop side times U[1-s, 1+s] (zoom jitter); 0 disables; 1 could shrink the crop to nothing
    scale: float = spec(number(0.0, 1.0, high_open=True, what="a fraction of the crop side"))
    # crop centre moved by U[-t, t] * box width/height; 0 disables
    translate: float = spec(number(0.0, 1.0, what="a fraction of the box size"))
    # P(one random-noise rectangle over the crop), its area up to occlusion_area of the crop; 0 disables
    occlusion: float = spec(probability())
    occlusion_area: float = spec(number(0.0, 1.0, low_open=True, what="a fraction of the crop area"))
    # P(Gaussian or motion blur of the crop); 0 disables
    blur: float = spec(probability())


@dataclass
class DataConfig:
    # landmark scheme name (facemark/schemes/*.yaml)
    scheme: str = spec(named("a shipped landmark scheme (facemark/schemes/*.yaml)", lambda v: v in _schemes(),
                             _schemes))
    # S: crops are S x S; landmark P maps to (P - S/2) / (S/2)
    input_size: int = spec(integer(32, 1024, " (pixels)"))
    # the square crop is the box's longer side * (1 + margin)
    margin: float = spec(number(0.0, 2.0, what="a fraction of the box size"))
    # box cache name under ROOT/<split>/boxes/<detector>/ (a detector of `facemark boxes`, or `synth`)
    detector: str = spec(folder_name())
    # training only: P(use the landmark box instead of the detector's)
    landmark_box_prob: float = spec(probability())
    # detector miss: "landmarks" (fall back, counted) or "skip" (counted)
    on_miss: str = spec(one_of(*ON_MISS))
    # train on a dataset that fails check-data, skipping bad samples
    skip_bad_samples: bool = spec(flag())
    # use only the first N samples of each split (reduced budgets)
    limit: int | None = spec(optional(integer(1)))
    workers: int = spec(integer(0))              # DataLoader workers; 0 loads in the main process
    # an image (or video frame) whose header claims more pixels is refused before it is decoded;
    # OpenCV's own decoder limit (CV_IO_MAX_IMAGE_PIXELS) is 2^30
    max_image_pixels: int = spec(integer(1, 1 << 30, " (pixels; OpenCV's decoders stop at 2^30)"))
    # more labelled datasets, one head each on the shared backbone (model.head integral); every
    # face's loss is its own scheme's. [] trains on --data alone
    sets: list[ExtraSet] = spec(distinct_schemes())


@dataclass
class TrainConfig:
    epochs: int = spec(integer(1))
    # the global batch; BatchNorm needs more than one face per batch
    batch_size: int = spec(integer(2))
    lr: float = spec(number(0.0, 10.0, low_open=True))
    weight_decay: float = spec(number(0.0, 1.0))
    optimizer: str = spec(named("a timm optimizer name (see timm.optim.list_optimizers())",
                                _known_optimizer, _timm_optimizers))
    scheduler: str = spec(one_of(*SCHEDULERS))   # timm scheduler name
    warmup_epochs: int = spec(integer(0))        # linear warm-up epochs; 0 disables; < epochs (CROSS_RULES)
    lr_update: str = spec(one_of(*LR_UPDATES))   # warm-up and decay per optimiser step or per epoch
    loss: str = spec(one_of(*LOSSES))
    # Wing width and curvature, in normalised crop units (1.0 = half the crop)
    wing_w: float = spec(number(0.0, 1.0, low_open=True))
    wing_epsilon: float = spec(number(0.0, 1.0, low_open=True))
    # smooth L1's quadratic-to-linear switch, same units
    smooth_l1_beta: float = spec(number(0.0, 1.0, low_open=True))
    # model.head pip: weight of its score-map loss beside its offset loss
    pip_map_weight: float = spec(number(0.0, 1000.0, low_open=True))
    # train.loss star: weight of the spread penalty (sum of each point's eigenvalues, in crop widths^2)
    star_omega: float = spec(number(0.0, 100.0))
    ema: bool = spec(flag())
    ema_decay: float = spec(number(0.0, 1.0, low_open=True, high_open=True))
    amp: bool = spec(flag())                     # mixed precision; only ever used on CUDA
    channels_last: bool = spec(flag())           # NHWC model and batches while training
    seed: int = spec(integer(0, SEED_MAX))
    device: str = spec(one_of(*DEVICES))
    # label transfer between data.sets' schemes: the mapped labels' loss weight (0: off) and the
    # epoch after which the maps are fitted (< epochs; CROSS_RULES)
    transfer_weight: float = spec(number(0.0, 10.0))
    transfer_epoch: int = spec(integer(1))
    # self-training with data.sets: the pseudo-labels' loss weight (0: off), the epochs before the
    # EMA teacher starts labelling (< epochs; CROSS_RULES), the fraction of its points kept
    pseudo_weight: float = spec(number(0.0, 10.0))
    pseudo_epoch: int = spec(integer(1))
    pseudo_keep: float = spec(number(0.0, 1.0, low_open=True))
    threads: int | None = spec(optional(integer(1)))   # null: cores left after data.workers


@dataclass
class ExportConfig:
    formats: list[str] = spec(subset_of(FORMATS, min_items=1))
    opset: int = spec(integer(*OPSETS))
    dynamic_batch: bool = spec(flag())
    # graph takes uint8 RGB and returns crop pixels
    bake_preprocessing: bool = spec(flag())
    # real crops used for the PyTorch parity check
    parity_images: int = spec(integer(1))


@dataclass
class QuantizeConfig:
    formats: list[str] = spec(subset_of(FORMATS))   # [] = no int8 artifacts
    calibration_count: int = spec(integer(1))
    calibration_seed: int = spec(integer(0, SEED_MAX))
    # "float32", "int8" or "uint8" for full-integer TFLite I/O
    tflite_io: str = spec(one_of(*TFLITE_IO))
    # "uint8" (u8s8, faster on x86) or "int8" (s8s8)
    onnx_activation: str = spec(one_of(*ONNX_ACTIVATIONS))
    # also write an ONNX dynamic-quantised model
    onnx_dynamic: bool = spec(flag())
    # refuse an int8 output step coarser than this * inter-pupil distance
    max_output_step: float = spec(number(0.0, 1.0, low_open=True))
    # activation ranges: "minmax", "percentile" (every int8 format and the QAT graph) or "entropy"
    # (ONNX only; TFLite and QAT then use min-max)
    calibration_method: str = spec(one_of(*CALIBRATION_METHODS))
    # percentile of calibration_method percentile: (100 - p) / 2 % of each tensor's values cut from each tail
    calibration_percentile: float = spec(number(90.0, 100.0, high_open=True))
    # keep the ops after the last multiply-add (a grid head's softmax decode) in float in every PTQ artifact
    float_decode: bool = spec(flag())
    # also write mixed-precision artifacts (sensitive layers in float) when plain int8 misses mixed_target
    mixed: bool = spec(flag())
    # relative NME increase vs float (val split) a recovered artifact must reach, e.g. 0.005 = +0.5 %
    mixed_target: float = spec(number(0.0, 1.0))
    # never keep so many layers in float that less than this share of multiply-adds runs in int8
    mixed_min_int8_macs: float = spec(probability())
    # val faces the recovery search measures each candidate on
    mixed_eval_faces: int = spec(integer(1))
    # an all-int8 row (plain or QAT) within this relative NME of float on val ships over a mixed one
    all_int8_margin: float = spec(number(0.0, 1.0))
    # quantisation-aware fine-tuning (facemark qat; `facemark pipeline` runs it when qat is on):
    # epochs and AdamW learning rate of the fine-tuning
    qat: bool = spec(flag())
    # formats that get a QAT artifact (those also in quantize.formats)
    qat_formats: list[str] = spec(subset_of(QAT_FORMATS))
    qat_epochs: int = spec(integer(1, 100))
    qat_lr: float = spec(number(0.0, 1.0, low_open=True))
    # AdamW weight decay of the QAT fine-tuning (0: pull the trained weights nowhere)
    qat_weight_decay: float = spec(number(0.0))
    # calibration crops the per-layer sensitivity statistics run on (the ranking, not the ranges)
    explain_faces: int = spec(integer(1))


@dataclass
class ValidateConfig:
    threads: int = spec(integer(1))
    warmup: int = spec(integer(0))
    runs: int = spec(integer(1))
    # relative to the baseline, e.g. 0.01 = +1 %
    max_nme_increase: float | None = spec(optional(number(0.0)))
    # absolute inter-pupil NME
    max_nme: float | None = spec(optional(number(0.0, low_open=True)))
    # stability (validate/stability.py): test faces measured (0 = off), draws per perturbation kind,
    # box shift as a fraction of the box side, sensor noise sigma in uint8 levels
    stability_faces: int = spec(integer(0))
    stability_draws: int = spec(integer(1))
    stability_shift: float = spec(number(0.0, 0.2, low_open=True))
    stability_noise: float = spec(number(0.0, 64.0))
    # gate: median RMS landmark movement / inter-pupil distance (null = not gated)
    max_stability: float | None = spec(optional(number(0.0, low_open=True)))
    # video figures (validate/video.py): frames of each drawn clip, 0 = off; the lag needs 16 or more
    video_frames: int = spec(off_or_at_least(16))
    # faces per model call in the accuracy passes (eval, validate, parity) of models that take any batch
    batch: int = spec(integer(1))


@dataclass
class PredictConfig:
    # the model when none is named: a shipped model's name (facemark.pretrained) or a path
    model: str = spec(text())
    # face detector of `facemark predict` (a name of facemark.data.detectors.DETECTORS)
    detector: str = spec(one_of(*DETECTORS))
    # detections scoring below this are not faces (MTCNN: probability; Haar: merged windows)
    min_score: float = spec(number(0.0))
    # video (facemark/tracking.py): frame t's crops from frame t-1's landmarks; false: detect every frame
    track: bool = spec(flag())
    # frames between detector runs while tracking (new faces appear at the latest this late)
    redetect_every: int = spec(integer(1))
    # a tracked face is lost when its new landmark box overlaps the box it was cropped from less
    lost_iou: float = spec(number(0.0, 1.0, high_open=True))
    # a detection continues a track (keeps its id) when their boxes overlap at least this much
    match_iou: float = spec(number(0.0, 1.0, low_open=True))
    # temporal filter of the landmarks (facemark/filters.py): one_euro or none
    filter: str = spec(one_of(*FILTERS))
    # One Euro: cutoff of a still face (Hz), its rise per face size per second, speed cutoff (Hz)
    min_cutoff: float = spec(number(0.0, low_open=True))
    beta: float = spec(number(0.0))
    d_cutoff: float = spec(number(0.0, low_open=True))


@dataclass
class SynthConfig:
    # `facemark synth`: output folder, drawn faces per split, seed, worker processes
    out: str = spec(text())
    train: int = spec(integer(1))
    val: int = spec(integer(0))
    test: int = spec(integer(0))
    seed: int = spec(integer(0))
    workers: int = spec(integer(1))


@dataclass
class RunsConfig:
    # run folders of `facemark train` and `facemark pipeline` when --run is not given
    train: str = spec(text())
    pipeline: str = spec(text())


@dataclass
class InferConfig:
    # horizontal-flip averaging: the mirrored crop's points, mirrored back and renumbered by the
    # scheme's flip permutation, averaged with the plain crop's
    flip: bool = spec(flag())
    # model passes per face: pass k+1 crops the tight box of pass k's landmarks (the landmark-box
    # crop of training); 1 = the detector-box crop alone. Each pass costs one model call (two with
    # flip); 8 is far past where the landmarks stop moving
    passes: int = spec(integer(1, 8))


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig
    augment: AugmentConfig
    train: TrainConfig
    export: ExportConfig
    quantize: QuantizeConfig
    validate: ValidateConfig
    predict: PredictConfig
    infer: InferConfig
    synth: SynthConfig
    runs: RunsConfig

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
