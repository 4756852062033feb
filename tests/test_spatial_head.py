"""model.head: spatial: it builds for pooled-head families, refuses the others, survives a
checkpoint round trip, and exports to ONNX and TFLite within the float parity bound (onnx2tf
turns NCHW into NHWC, so the flatten before the Linear is where a layout slip would show)."""

from __future__ import annotations

import pytest
import torch
from drawn_faces import make_drawn_split
from float_export import assert_float_exports_verified
from margins import DATA_SEED

from facemark.config import load_config
from facemark.errors import ConfigError
from facemark.heads import SpatialHead
from facemark.model import build_model, checkpoint_dict, load_checkpoint

SIZE = 64
SPATIAL = ["model.arch=mobilenetv2_100", "model.pretrained=false", "model.head=spatial", "model.head_channels=8",
           f"data.input_size={SIZE}", "data.detector=drawn", "export.parity_images=4"]


def test_spatial_head_sees_every_position_and_round_trips(tmp_path):
    cfg = load_config(overrides=SPATIAL)
    torch.manual_seed(DATA_SEED)
    model = build_model(cfg.model, 106, input_size=SIZE).eval()   # lapa106, the config's scheme
    head = model.get_classifier()
    assert isinstance(head, SpatialHead) and head.fc.in_features == 8 * 2 * 2   # 64 px / 32 = a 2x2 grid
    with torch.no_grad():
        head.fc.weight.normal_(0.0, 0.1)
        x = torch.rand(3, 3, SIZE, SIZE)
        out = model(x)
    assert out.shape == (3, 212)
    torch.save(checkpoint_dict(model, cfg), tmp_path / "best.pt")
    again, saved_cfg, _ = load_checkpoint(tmp_path / "best.pt")
    assert saved_cfg.model.head == "spatial"
    with torch.no_grad():
        torch.testing.assert_close(again(x), out)


def test_spatial_head_refuses_what_it_cannot_build():
    with pytest.raises(ConfigError, match="needs the input size"):
        build_model(load_config(overrides=SPATIAL).model, 68)
    # MobileNetV3 applies conv_head after pooling: its forward_head is not pool -> Linear
    with pytest.raises(ConfigError, match="not supported for mobilenetv3_large_100"):
        build_model(load_config(overrides=SPATIAL + ["model.arch=mobilenetv3_large_100"]).model, 68, input_size=SIZE)


@pytest.mark.slow
def test_spatial_head_exports_within_parity(tmp_path):
    root = tmp_path / "data"
    make_drawn_split(root, "val", 6)
    cfg = load_config(overrides=SPATIAL)
    torch.manual_seed(DATA_SEED)
    model = build_model(cfg.model, 106, input_size=SIZE)
    with torch.no_grad():   # BatchNorm statistics from data-like inputs, a head that spreads outputs
        model.train()(torch.rand(16, 3, SIZE, SIZE))
        model.get_classifier().fc.weight.normal_(0.0, 0.05)
    assert_float_exports_verified(model, cfg, root, tmp_path / "run")
