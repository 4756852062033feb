"""Model factory: a timm backbone whose classifier regresses 2P numbers (x0, y0, x1, y1, ...).

Output space: normalised crop coordinates (see codec.py), flattened as (N, 2P); reshape to
(N, P, 2). ImageNet initialisation: a local file (`model.pretrained_file`, timm- or
torchvision-named), an installed weights package, or timm's hub; facemark.weights says which,
and which input normalisation the model then expects.

"Freeze the first K blocks" means the same for every backbone: the stem and the first K entries
of the backbone's flattened block list (`backbone_blocks`): MobileNetV2/V3 and EfficientNet count
each inverted-residual block (MobileNetV3-Large has 16, so the paper's 3 of 16 is K=3), ResNet
counts each residual block (ResNet18 has 8), MobileViT counts each block of each stage.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facemark.config import Config, ModelConfig, config_from_saved
from facemark.errors import ArtifactError, ConfigError
from facemark.head_specs import HEADS
from facemark.heads import GridHead, GridLandmarkNet, SchemeHeadsNet, SpatialHead, with_rle
from facemark.weights import (IMAGENET, Normalisation, WeightsSource, hub_reachable, no_weights_error,
                              offline_source)

CHECKPOINT_FORMAT = "facemark-checkpoint-v1"


def build_model(model_cfg: ModelConfig, num_points: int, source: WeightsSource | None = None,
                input_size: int | None = None, rle: bool = False, extra_points: dict[str, int] | None = None,
                covariance: bool = False) -> nn.Module:
    """timm.create_model(arch, num_classes=2P), ImageNet-initialised if asked, its head set by
    model.head (the spatial head is sized for (N, 3, input_size, input_size) inputs, so it needs
    `input_size`), blocks frozen. `rle` (train.loss rle): the regression Linear carries RLE's
    training-only sigma and flow (facemark.heads.RleLinear). `extra_points` (data.sets: scheme ->
    point count) adds one GridHead per extra scheme (facemark.heads.SchemeHeadsNet). `covariance`
    (train.loss star): every GridHead's training output adds each point's covariance.

    The resolved WeightsSource (origin and input normalisation, see facemark.weights) is attached
    as `model.weights_source`, so checkpoint_dict records it. `source` given (rebuilding a saved
    model whose weights are loaded next): no ImageNet weights are looked up and it is attached as is.
    """
    import timm

    if not timm.is_model(model_cfg.arch):
        close = timm.list_models(f"*{model_cfg.arch.split('_')[0]}*")[:8]
        raise ConfigError(f"model.arch: unknown timm model {model_cfg.arch!r}"
                          + (f"; similar: {', '.join(close)}" if close else ""))
    kwargs = {"num_classes": 2 * num_points, "drop_rate": model_cfg.drop_rate}
    if source is None and model_cfg.pretrained:
        model, source = _pretrained_model(model_cfg, kwargs)
    else:
        model = timm.create_model(model_cfg.arch, pretrained=False, **kwargs)
        source = source or WeightsSource("none", "random init (model.pretrained: false)",
                                         Normalisation.of_timm_model(model))
    head = HEADS[model_cfg.head]
    if covariance and head.decode != "softmax":
        softmax = " or ".join(name for name, spec in HEADS.items() if spec.decode == "softmax")
        raise ConfigError(f"train.loss: star needs a point distribution (model.head {softmax}), not {model_cfg.head}")
    if head.attach == "grid":
        model = _grid_model(model, model_cfg, num_points, input_size, extra_points or {}, covariance)
    elif head.attach == "spatial":
        _use_spatial_head(model, model_cfg, 2 * num_points, input_size)
    model.weights_source = source   # a plain attribute: copied by deepcopy (EMA), not in the state dict
    if rle:
        if not head.regression:
            regression = " or ".join(name for name, spec in HEADS.items() if spec.regression)
            raise ConfigError(f"train.loss: rle needs a regression head (model.head {regression}), "
                              f"not {model_cfg.head}")
        with_rle(model)
    _init_regression_head(model)
    if model_cfg.freeze_blocks:
        freeze_blocks(model, model_cfg.freeze_blocks)
    return model


def _pretrained_model(model_cfg: ModelConfig, kwargs: dict[str, Any]) -> tuple[nn.Module, WeightsSource]:
    """ImageNet weights from pretrained_file, else a registered package, else the hub (facemark.weights)."""
    import timm

    arch = model_cfg.arch
    model = timm.create_model(arch, pretrained=False, **kwargs)
    if model_cfg.pretrained_file is not None:   # the user's file: the arch's own convention
        path = Path(model_cfg.pretrained_file)
        source = WeightsSource("file", str(path), Normalisation.of_timm_model(model), path)
    else:
        source = offline_source(arch)
    if source is not None:
        load_pretrained_file(model, source.path)
        return model, source
    if not hub_reachable():
        raise no_weights_error(arch, "timm's hub is not reachable and no installed package has them")
    try:
        model = timm.create_model(arch, pretrained=True, **kwargs)
    except Exception as exc:  # no weights for this arch, hub error, ...
        raise no_weights_error(arch, f"hub: {str(exc).splitlines()[0][:120]}") from None
    tag = model.pretrained_cfg.get("tag") or "default"
    return model, WeightsSource("hub", f"timm hub {arch}.{tag}", Normalisation.of_timm_model(model))


def weights_source(model: nn.Module) -> WeightsSource:
    """The WeightsSource build_model (or load_checkpoint) attached to `model`."""
    source = getattr(model, "weights_source", None)
    assert isinstance(source, WeightsSource), "model was not built by facemark.model.build_model"
    return source


def checkpoint_source(ckpt: dict[str, Any], origin: str) -> WeightsSource:
    """The WeightsSource a checkpoint recorded; one written before `input` was stored: ImageNet."""
    weights = ckpt.get("weights") or {"origin": "unknown", "detail": "not recorded (older checkpoint)"}
    norm = Normalisation.from_dict(ckpt["input"], origin) if "input" in ckpt else IMAGENET
    return WeightsSource(str(weights["origin"]), str(weights["detail"]), norm)


def _use_spatial_head(model: nn.Module, model_cfg: ModelConfig, outputs: int, input_size: int | None) -> None:
    """Swap timm's global pool + classifier for a SpatialHead sized for input_size."""
    if input_size is None:
        raise ConfigError("model.head: spatial needs the input size (data.input_size) to size its Linear")
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    if not hasattr(model, "global_pool") or not isinstance(getattr(model, classifier, None), nn.Linear):
        raise ConfigError(f"model.head: spatial is not supported for {model_cfg.arch} (its head is not "
                          f"global pool -> Linear); use model.head: pool")
    with torch.no_grad():
        features = model.eval().forward_features(torch.zeros(1, 3, input_size, input_size))
    model.global_pool = nn.Identity()
    setattr(model, classifier, SpatialHead(features.shape[1], tuple(features.shape[2:]), model_cfg.head_channels,
                                           outputs))
    try:   # a timm family whose forward_head does more than pool -> classifier fails here
        with torch.no_grad():
            shape = tuple(model(torch.zeros(2, 3, input_size, input_size)).shape)
    except RuntimeError as exc:
        shape = str(exc).splitlines()[0][:80]
    if shape != (2, outputs):
        raise ConfigError(f"model.head: spatial is not supported for {model_cfg.arch} (its forward_head does "
                          f"more than pool -> Linear: {shape}); use model.head: pool")
    model.train()


def _grid_model(model: nn.Module, model_cfg: ModelConfig, num_points: int, input_size: int | None,
                extra_points: dict[str, int], covariance: bool) -> GridLandmarkNet:
    """The timm model cut after the block model.grid_coarse names, with a GridHead on its stride-16
    [and stride-32] maps (and one more per scheme of `extra_points`: a SchemeHeadsNet)."""
    if input_size is None:
        raise ConfigError(f"model.head: {model_cfg.head} needs the input size (data.input_size) to size its grid")
    info = getattr(model, "feature_info", None)
    reductions = [stage["reduction"] for stage in info] if isinstance(info, list) else []
    if 16 not in reductions or not hasattr(model, "prune_intermediate_layers"):
        raise ConfigError(f"model.head: {model_cfg.head} is not supported for {model_cfg.arch} (timm gives no "
                          f"stride-16 feature map for it); use model.head: spatial or pool")
    indices, extra_blocks = _grid_taps(model, model_cfg, reductions, input_size)
    taps = GridLandmarkNet.tap_options(extra_blocks)
    model.prune_intermediate_layers(list(indices), prune_head=True, **taps)
    with torch.no_grad():
        features = model.eval().forward_intermediates(torch.zeros(1, 3, input_size, input_size),
                                                      indices=list(indices), intermediates_only=True, **taps)
    fine, coarse = features[0], (features[1] if len(features) > 1 else None)

    def head(points: int) -> GridHead:
        return GridHead(fine.shape[1], None if coarse is None else coarse.shape[1], tuple(fine.shape[2:]),
                        model_cfg.head_channels, points, head=model_cfg.head, train_covariance=covariance)

    if extra_points:
        return SchemeHeadsNet(model.train(), head(num_points), indices, extra_blocks,
                              {name: head(points) for name, points in extra_points.items()})
    return GridLandmarkNet(model.train(), head(num_points), indices, extra_blocks)


def _grid_taps(model: nn.Module, model_cfg: ModelConfig, reductions: list[int], input_size: int
               ) -> tuple[tuple[int, ...], bool]:
    """-> forward_intermediates indices of the (stride-16[, stride-32]) taps, and whether they count
    every block (extra_blocks) rather than feature_info's stage ends. The stage ends are each
    stride's last block, so only model.grid_coarse: first needs every block's output."""
    fine = reductions.index(16)
    if model_cfg.grid_coarse == "last":
        return (fine, len(reductions) - 1), False
    if model_cfg.grid_coarse == "none":
        return (fine,), False
    if "extra_blocks" not in inspect.signature(model.forward_intermediates).parameters:
        raise ConfigError(f"model.grid_coarse: first needs every block's output, which timm does not give for "
                          f"{model_cfg.arch}; use last or none")
    with torch.no_grad():
        outputs = model.eval().forward_intermediates(torch.zeros(1, 3, input_size, input_size), indices=None,
                                                     intermediates_only=True, extra_blocks=True)
    strides = [2 ** round(math.log2(input_size / out.shape[-1])) for out in outputs]
    if 32 not in strides:
        raise ConfigError(f"model.grid_coarse: first: {model_cfg.arch} has no stride-32 block; use none")
    first = strides.index(32)
    return (max(i for i in range(first) if strides[i] == 16), first), True


def _init_regression_head(model: nn.Module) -> None:
    """Start every prediction near the crop centre (normalised 0).

    timm's default head init gives outputs of several crop widths on ImageNet features (MSE ~2
    in the first steps), which wastes the warm-up; a tiny weight and a zero bias keep the first
    losses near the landmark spread while still breaking symmetry.
    """
    if isinstance(model, GridLandmarkNet):
        return   # GridHead initialises its own offsets; its scores start from PyTorch's default init
    head = model.get_classifier()
    head = head.fc if isinstance(head, SpatialHead) else head
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=1e-3)
        nn.init.zeros_(head.bias)


def load_pretrained_file(model: nn.Module, path: Path) -> None:
    """Load ImageNet weights from a local file into all layers but the classifier.

    Keys are matched by name (timm files) or, failing that, tensor by tensor in order with equal
    shapes (torchvision files such as `mobilenet_v2-b0353104.pth` for timm's mobilenetv2_100).
    """
    if not path.is_file():
        raise ConfigError(f"model.pretrained_file: {path} not found")
    source = _read_state_dict(path)
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{classifier}.")}
    source = {k: v for k, v in source.items() if not _is_classifier_key(k, classifier, source)}
    if set(source) == set(target):
        mapped = source
    elif len(source) == len(target):
        mapped = {}
        for (tk, tv), (sk, sv) in zip(target.items(), source.items()):
            if tuple(tv.shape) != tuple(sv.shape):
                raise ConfigError(f"{path}: tensor {sk!r} {tuple(sv.shape)} does not fit {tk!r} "
                                  f"{tuple(tv.shape)} of {model.pretrained_cfg.get('architecture')}")
            mapped[tk] = sv
    else:
        raise ConfigError(f"{path}: {len(source)} backbone tensors, but the model has {len(target)}; "
                          f"these weights are for another architecture")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert not unexpected and all(k.startswith(f"{classifier}.") for k in missing), (missing, unexpected)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: not a readable weights file ({str(exc).splitlines()[0][:120]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _is_classifier_key(key: str, classifier: str, state: dict[str, torch.Tensor]) -> bool:
    """The source's own head: timm's name, or the last weight/bias pair (torchvision's fc/classifier.1)."""
    if key.startswith(f"{classifier}."):
        return True
    last_two = list(state)[-2:]
    return key in last_two and state[last_two[0]].ndim == 2


def backbone_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(stem modules, flattened block list) of a timm backbone; see the module docstring."""
    model = model.backbone if isinstance(model, GridLandmarkNet) else model
    if hasattr(model, "blocks") and hasattr(model, "conv_stem"):      # MobileNet/EfficientNet family
        return [model.conv_stem, model.bn1], [b for stage in model.blocks for b in stage]
    if hasattr(model, "layer1") and hasattr(model, "conv1"):          # ResNet family
        stem = [model.conv1, model.bn1]
        return stem, [b for name in ("layer1", "layer2", "layer3", "layer4") for b in getattr(model, name)]
    if hasattr(model, "stages") and hasattr(model, "stem"):           # MobileViT, ConvNeXt, ...
        blocks = [b for stage in model.stages for b in (stage.blocks if hasattr(stage, "blocks") else stage)]
        return [model.stem], blocks
    raise ConfigError(f"model.freeze_blocks: no block layout known for {type(model).__name__}")


def freeze_blocks(model: nn.Module, count: int) -> None:
    """Freeze the stem and the first `count` blocks (weights and BatchNorm statistics)."""
    stem, blocks = backbone_blocks(model)
    if not 0 <= count <= len(blocks):
        raise ConfigError(f"model.freeze_blocks: {count} is outside 0..{len(blocks)} for this backbone")
    frozen = stem + blocks[:count]
    for module in frozen:
        module.requires_grad_(False)
    # a plain attribute list, so the modules are not registered a second time in the state dict
    object.__setattr__(model, "frozen_modules", frozen)


def keep_frozen_eval(model: nn.Module) -> None:
    """Call after model.train(): frozen modules keep their BatchNorm statistics fixed."""
    for module in getattr(model, "frozen_modules", []):
        module.eval()


def load_checkpoint(path: Path) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the model of a facemark checkpoint -> (model in eval mode, its Config, the raw dict).
    A multi-dataset run's model is its main scheme's (the one-scheme model of its data.scheme).

    Loads with weights_only=True; a missing, truncated or foreign file is an ArtifactError.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable checkpoint (truncated or not a torch file: "
                            f"{str(exc).splitlines()[0][:100]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path}: not a facemark checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    cfg = config_from_saved(ckpt["config"], origin=str(path))
    model_cfg = ModelConfig(**{**cfg.model.__dict__, "freeze_blocks": 0})
    # a multi-dataset run's weights carry its extra heads (data.sets): loaded, then left out
    extras = extra_points(cfg) if any(key.startswith("extra_heads.") for key in ckpt["model"]) else None
    model = build_model(model_cfg, ckpt["num_points"], source=checkpoint_source(ckpt, str(path)),
                        input_size=cfg.data.input_size, rle=cfg.train.loss == "rle", extra_points=extras)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not fit {cfg.model.arch} with {ckpt['num_points']} points "
                            f"({str(exc).splitlines()[0][:100]})") from None
    if isinstance(model, SchemeHeadsNet):
        model = model.scheme_view()
    return model.eval(), cfg, ckpt


def extra_points(cfg: Config) -> dict[str, int]:
    """data.sets as {scheme: point count}, in order: the extra heads of a multi-dataset model."""
    from facemark.schemes import load_scheme

    return {item.scheme: load_scheme(item.scheme).num_points for item in cfg.data.sets}


def checkpoint_dict(model: nn.Module, cfg: Config, **extra: Any) -> dict[str, Any]:
    """The part of a checkpoint every stage relies on; training adds optimiser, RNG, etc. in `extra`.

    Keys: format, model (state_dict of the bare model, EMA weights when EMA is on), config (the
    resolved Config as a dict), scheme, num_points, input_size, arch, input (the normalisation,
    {"mean", "std"}), weights (where the initial weights came from); plus `extra`
    (epoch, val_nme, data_root, ...). Only tensors and plain Python values: loadable with
    torch.load(weights_only=True).
    """
    from facemark.schemes import load_scheme

    scheme = load_scheme(cfg.data.scheme)
    source = weights_source(model)
    return {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "config": cfg.to_dict(),
            "scheme": scheme.name, "num_points": scheme.num_points, "input_size": cfg.data.input_size,
            "arch": cfg.model.arch, "input": source.norm.to_dict(), "weights": source.record(), **extra}
