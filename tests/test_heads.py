"""The heads beyond global regression (facemark.heads): the grid heads decode their maps to the
export contract, their losses reach zero on perfect maps, RLE changes training only, and the grid
heads export to ONNX and TFLite within the float parity bound."""

from __future__ import annotations

import onnx
import pytest
import torch
from drawn_faces import make_drawn_split
from float_export import assert_float_exports_verified
from margins import DATA_SEED

from facemark.config import load_config
from facemark.errors import ConfigError
from facemark.heads import GridHead, GridLandmarkNet, RleLinear
from facemark.model import build_model, checkpoint_dict, load_checkpoint
from facemark.train.losses import PipMapLoss, RleLoss, build_training_loss

SIZE = 64   # a 4x4 stride-16 grid, 2x2 stride-32 map
BASE = ["model.arch=mobilenetv2_100", "model.pretrained=false", "model.head_channels=8", f"data.input_size={SIZE}",
        "data.detector=drawn", "export.parity_images=4"]


def _grid_model(head: str, points: int = 106, coarse: str = "last") -> GridLandmarkNet:   # lapa106: the configs'
    cfg = load_config(overrides=BASE + [f"model.head={head}", f"model.grid_coarse={coarse}"])
    torch.manual_seed(DATA_SEED)
    return build_model(cfg.model, points, input_size=SIZE)


def _head(decode: str, points: int = 3, grid: tuple[int, int] = (4, 4)) -> GridHead:
    return GridHead(8, 8, grid, 8, points, decode)


def test_grid_heads_keep_the_output_contract_and_round_trip(tmp_path):
    for head in ("pip", "integral"):
        model = _grid_model(head)
        assert isinstance(model.head, GridHead) and model.head.grid == (SIZE // 16, SIZE // 16)
        x = torch.rand(2, 3, SIZE, SIZE)
        with torch.no_grad():
            out = model.eval()(x)
        assert out.shape == (2, 212)
        cfg = load_config(overrides=BASE + [f"model.head={head}"])
        torch.save(checkpoint_dict(model, cfg), tmp_path / "best.pt")
        again, saved, _ = load_checkpoint(tmp_path / "best.pt")
        assert saved.model.head == head
        with torch.no_grad():
            torch.testing.assert_close(again(x), out)
    # pip's training output carries its maps: 2P coordinates + 3 maps of P x K cells
    assert _grid_model("pip").train()(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 212 + 3 * 106 * 16)


def test_grid_coarse_cuts_the_backbone_and_keeps_the_contract(tmp_path):
    x = torch.rand(2, 3, SIZE, SIZE)
    params, blocks = {}, {}
    for coarse in ("last", "first", "none"):
        model = _grid_model("integral", coarse=coarse).eval()
        assert model.head.grid == (SIZE // 16, SIZE // 16) and (model.head.coarse is None) == (coarse == "none")
        with torch.no_grad():
            out = model(x)
        assert out.shape == (2, 212)
        params[coarse] = sum(p.numel() for p in model.parameters())
        blocks[coarse] = len(model.backbone.blocks)
        cfg = load_config(overrides=BASE + ["model.head=integral", f"model.grid_coarse={coarse}"])
        torch.save(checkpoint_dict(model, cfg), tmp_path / f"{coarse}.pt")
        again, saved, _ = load_checkpoint(tmp_path / f"{coarse}.pt")
        assert saved.model.grid_coarse == coarse
        with torch.no_grad():
            torch.testing.assert_close(again(x), out)
    # MobileNetV2's 7 stages: 'first' keeps the stride-32 stage's first block only, 'none' none of it
    assert params["last"] > params["first"] > params["none"]
    assert blocks == {"last": 7, "first": 6, "none": 5}


def test_pip_decodes_the_best_cell_plus_its_offsets_and_integral_its_soft_mean():
    head = _head("pip")
    scores = torch.full((1, 3, 16), -1.0)
    off_x, off_y = torch.zeros(1, 3, 16), torch.zeros(1, 3, 16)
    scores[0, 0, 5] = 2.0                        # row 1, col 1: centre (-0.25, -0.25)
    off_x[0, 0, 5], off_y[0, 0, 5] = 0.5, -0.25  # half a cell right, a quarter up (a cell is 0.5 wide)
    scores[0, 1, 15] = 2.0                       # bottom-right cell: centre (0.75, 0.75)
    scores[0, 2, [0, 3]] = 2.0                   # a tie between top-left and top-right: their mean
    points = head.points(scores, off_x, off_y).reshape(3, 2)
    torch.testing.assert_close(points, torch.tensor([[0.0, -0.375], [0.75, 0.75], [0.0, -0.75]]))
    integral = _head("integral")
    torch.testing.assert_close(integral.points(scores * 100, off_x, off_y).reshape(3, 2), points)
    uniform = integral.points(torch.zeros(1, 3, 16), off_x * 0, off_y * 0).reshape(3, 2)
    torch.testing.assert_close(uniform, torch.zeros(3, 2))   # the mean of every cell centre


def test_spread_is_zero_on_one_cell_and_the_cells_rms_radius_on_a_flat_map():
    head = _head("integral")                     # a 4x4 grid: centres at +-0.25 and +-0.75
    scores, offsets = torch.zeros(1, 2, 16), torch.zeros(1, 2, 16)
    scores[0, 0, 5] = 1000.0
    spread = head.spread(scores, offsets, offsets)
    # flat: mean squared distance from (0, 0) is 2 * mean(c^2) over c in +-0.25, +-0.75 = 2 * 0.3125
    torch.testing.assert_close(spread, torch.tensor([[0.0, (2 * 0.3125) ** 0.5]]))


def test_covariance_is_the_weighted_spread_of_the_cell_points_and_star_training_appends_it():
    head = GridHead(8, 8, (4, 4), 8, 2, "integral", train_covariance=True)
    scores, off_x, off_y = torch.full((1, 2, 16), -1000.0), torch.zeros(1, 2, 16), torch.zeros(1, 2, 16)
    scores[0, 0, [5, 10]] = 0.0                  # two equal cells: centres (-0.25, -0.25) and (0.25, 0.25)
    off_x[0, 0, 10] = 0.5                        # the second cell's point moved half a cell (0.25) right
    cov = head.covariance(scores, off_x, off_y)
    # points (-0.25, -0.25) and (0.5, 0.25): half the squared differences (0.75, 0.5) about their mean
    torch.testing.assert_close(cov[0, 0], torch.tensor([0.75 ** 2 / 4, 0.75 * 0.5 / 4, 0.5 ** 2 / 4]))
    torch.testing.assert_close(head.spread(scores, off_x, off_y), (cov[..., 0] + cov[..., 2]).sqrt())
    features = torch.rand(3, 8, 4, 4), torch.rand(3, 8, 2, 2)
    assert head.train_columns == 10 and head.train()(*features).shape == (3, 10)
    assert head.eval()(*features).shape == (3, 4)   # the export contract is unchanged
    with pytest.raises(ValueError, match="softmax-decoded"):
        GridHead(8, 8, (4, 4), 8, 2, "pip", train_covariance=True)


def test_pip_map_loss_is_zero_on_the_maps_it_asks_for():
    loss = PipMapLoss(num_points=2, grid=(4, 4), map_weight=10.0)
    target = torch.tensor([[-0.3, -0.1, 0.9, 0.6]])   # cells (col 1, row 1) and (col 3, row 3)
    scores, off_x, off_y = torch.zeros(1, 2, 16), torch.zeros(1, 2, 16), torch.zeros(1, 2, 16)
    scores[0, 0, 5], scores[0, 1, 15] = 1.0, 1.0
    # in cell units from the cell centre: x -0.3 is 1.4 cells from the left edge -> -0.1 from centre 1.5
    off_x[0, 0, 5], off_y[0, 0, 5] = -0.1, 0.3
    off_x[0, 1, 15], off_y[0, 1, 15] = 0.3, -0.3
    packed = torch.cat([target, scores.flatten(1), off_x.flatten(1), off_y.flatten(1)], dim=1)
    assert float(loss(packed, target)) == pytest.approx(0.0, abs=1e-6)
    scores[0, 0, 5] = 0.0   # one missing peak: (1 - 0)^2 over 32 cells, times 10
    packed = torch.cat([target, scores.flatten(1), off_x.flatten(1), off_y.flatten(1)], dim=1)
    assert float(loss(packed, target)) == pytest.approx(10.0 / 32, abs=1e-5)
    # a decoded perfect map gives the target back
    head = _head("pip", points=2)
    scores[0, 0, 5] = 1.0
    torch.testing.assert_close(head.points(scores, off_x, off_y), target)


def test_rle_trains_sigma_and_flow_but_exports_the_plain_regression_graph(tmp_path):
    overrides = BASE + ["model.head=spatial", "train.loss=rle"]
    cfg = load_config(overrides=overrides)
    torch.manual_seed(DATA_SEED)
    model = build_model(cfg.model, 68, input_size=SIZE, rle=True)
    rle = model.get_classifier().fc
    assert isinstance(rle, RleLinear)
    loss_fn = build_training_loss(cfg.train, model)
    assert isinstance(loss_fn, RleLoss)
    x, target = torch.rand(4, 3, SIZE, SIZE), torch.rand(4, 136) * 2 - 1
    output = model.train()(x)
    assert output.shape == (4, 272)
    loss_fn(output, target).backward()
    assert rle.sigma.weight.grad.abs().sum() > 0 and rle.flow.shift[0][0].weight.grad.abs().sum() > 0
    # a closer mu at the same sigma scores a lower loss
    near = torch.cat([target + 0.01, torch.zeros_like(target)], dim=1)
    far = torch.cat([target + 0.2, torch.zeros_like(target)], dim=1)
    assert float(loss_fn(near, target)) < float(loss_fn(far, target))
    # eval: the plain Linear, the same ONNX graph as without RLE
    plain = build_model(load_config(overrides=BASE + ["model.head=spatial"]).model, 68, input_size=SIZE)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".sigma." not in k and ".flow." not in k})
    nodes = []
    for name, net in (("rle", model), ("plain", plain)):
        torch.onnx.export(net.eval(), torch.rand(1, 3, SIZE, SIZE), tmp_path / f"{name}.onnx", dynamo=False)
        nodes.append([node.op_type for node in onnx.load(tmp_path / f"{name}.onnx").graph.node])
    assert nodes[0] == nodes[1]


def test_the_heads_table_drives_the_choices_the_model_and_the_loss():
    """facemark.head_specs.HEADS is the one list of heads: each row's attachment, training output
    and loss follow from it, and the config and GridHead refuse what it does not list."""
    from facemark.config_schema import ModelConfig
    from facemark.head_specs import HEADS
    from facemark.heads import SpatialHead

    assert ModelConfig.__dataclass_fields__["head"].metadata["rule"].allowed.endswith(", ".join(HEADS))
    for name, spec in HEADS.items():
        cfg = load_config(overrides=BASE + [f"model.head={name}"])
        model = build_model(cfg.model, 5, input_size=SIZE)
        kinds = {"pool": torch.nn.Linear, "spatial": SpatialHead, "grid": GridHead}
        assert isinstance(model.get_classifier() if spec.attach != "grid" else model.head, kinds[spec.attach]), name
        train_width = model.train()(torch.rand(2, 3, SIZE, SIZE)).shape[1]
        assert train_width == (10 + 3 * 5 * (SIZE // 16) ** 2 if spec.map_loss else 10), name
        assert isinstance(build_training_loss(cfg.train, model), PipMapLoss) == spec.map_loss, name
    with pytest.raises(ValueError, match="GridHead head must be one of pip, integral, got 'spatial'"):
        GridHead(8, 8, (4, 4), 8, 3, "spatial")


def test_heads_refuse_what_they_cannot_build():
    with pytest.raises(ConfigError, match="needs the input size"):
        build_model(load_config(overrides=BASE + ["model.head=pip"]).model, 68)
    with pytest.raises(ConfigError, match="rle needs a regression head"):
        build_model(load_config(overrides=BASE + ["model.head=integral"]).model, 68, input_size=SIZE, rle=True)
    resnet = BASE + ["model.arch=resnet18", "model.head=integral", "model.grid_coarse=first"]
    with pytest.raises(ConfigError, match="grid_coarse: first needs every block's output.*resnet18"):
        build_model(load_config(overrides=resnet).model, 68, input_size=SIZE)


@pytest.mark.slow
@pytest.mark.parametrize(("head", "coarse"), [("pip", "last"), ("integral", "last"), ("integral", "first")])
def test_grid_heads_export_within_parity(tmp_path, head, coarse):
    root = tmp_path / "data"
    make_drawn_split(root, "val", 6)
    cfg = load_config(overrides=BASE + [f"model.head={head}", f"model.grid_coarse={coarse}"])
    model = _grid_model(head, coarse=coarse)
    with torch.no_grad():   # BatchNorm statistics from data-like inputs, offsets that move the points
        model.train()(torch.rand(16, 3, SIZE, SIZE))
        model.head.offsets.weight.normal_(0.0, 0.05)
        if head == "pip":   # untrained scores have near-ties that fp16 breaks either way: make every cell tie
            model.head.scores.weight.zero_()
    assert_float_exports_verified(model, cfg, root, tmp_path / "run")
