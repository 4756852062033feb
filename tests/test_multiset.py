"""Multi-dataset training (data.sets, facemark.train.multiset): one backbone, one head per scheme,
every face's loss from its own head; RUN/best.pt is the main scheme's model, RUN/schemes/SCHEME/ a
run folder of each extra scheme's, both exportable with their own scheme in the manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from facemark.cli import main
from facemark.config import load_config
from facemark.data.crops import load_crop_set
from facemark.data.synth import generate_dataset
from facemark.errors import ConfigError, FacemarkError
from facemark.heads import GridLandmarkNet
from facemark.manifest import load_manifest
from facemark.model import load_checkpoint
from facemark.schemes import load_scheme
from facemark.train.engine import train
from facemark.train.losses import build_loss
from facemark.train.multiset import SchemeLoss
from facemark.train.selftrain import PseudoLabels, Teacher
from facemark.train.transfer import apply_map, fit_map
from facemark.train.validation import crop_set_nme

SIZE = 64
COMMON = ["model.arch=mobilenetv3_small_050", "model.pretrained=false", "model.head=integral", "data.detector=synth",
          f"data.input_size={SIZE}", "data.workers=0", "train.warmup_epochs=0", "train.batch_size=8",
          "train.device=cpu", "train.lr=0.003", "augment.rotate=0", "data.scheme=ibug68"]


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory) -> tuple[Path, Path]:
    """A 68-point set and a 106-point set of different synthetic faces."""
    root = tmp_path_factory.mktemp("sets")
    generate_dataset(root / "ibug", scheme="ibug68", counts={"train": 24, "val": 6}, seed=5)
    generate_dataset(root / "lapa", scheme="lapa106", counts={"train": 16, "val": 6}, seed=6)
    return root / "ibug", root / "lapa"


def _config(lapa: Path, epochs: int, weight: float = 1.0):
    return load_config(overrides=COMMON + [f"train.epochs={epochs}",
                                           f"data.sets=[{{root: '{lapa}', scheme: lapa106, weight: {weight}}}]"])


@pytest.fixture(scope="module")
def multi_run(two_sets, tmp_path_factory) -> Path:
    ibug, lapa = two_sets
    run = tmp_path_factory.mktemp("multi") / "run"
    train(_config(lapa, epochs=3), ibug, run, resume=False)
    return run


def test_each_scheme_gets_its_head_its_validation_and_its_best_checkpoint(multi_run, two_sets):
    ibug, lapa = two_sets
    lines = [json.loads(line) for line in (multi_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    assert all(0 < line["val_nme_lapa106"] < 10 for line in lines)
    cfg = _config(lapa, epochs=3)
    # RUN/best.pt: the 68-point model alone, reproducing its recorded val NME on the 68-point val split
    model, saved_cfg, ckpt = load_checkpoint(multi_run / "best.pt")
    assert type(model) is GridLandmarkNet and ckpt["num_points"] == 68 and saved_cfg.data.sets == cfg.data.sets
    val = load_crop_set(ibug, "val", cfg.data)
    assert crop_set_nme(model, val, load_scheme("ibug68"), cfg, torch.device("cpu")) == pytest.approx(
        ckpt["val_nme"], abs=1e-5)
    # RUN/schemes/lapa106/: a one-scheme run folder of the 106-point head, on the same backbone
    extra, extra_cfg, extra_ckpt = load_checkpoint(multi_run / "schemes" / "lapa106" / "best.pt")
    assert extra_ckpt["num_points"] == 106 and extra_cfg.data.scheme == "lapa106" and extra_cfg.data.sets == []
    assert extra_ckpt["data_root"] == str(lapa)
    best = min(line["val_nme_lapa106"] for line in lines)
    assert extra_ckpt["val_nme"] == pytest.approx(best)
    lapa_val = load_crop_set(lapa, "val", extra_cfg.data)
    assert crop_set_nme(extra, lapa_val, load_scheme("lapa106"), extra_cfg, torch.device("cpu")) == pytest.approx(
        best, abs=1e-5)
    shared = {key: value for key, value in model.state_dict().items() if key.startswith("backbone.")}
    if extra_ckpt["epoch"] == ckpt["epoch"]:   # saved at the same epoch: the very same backbone
        assert all(torch.equal(value, extra.state_dict()[key]) for key, value in shared.items())


def test_star_loss_trains_every_head_on_its_covariances(two_sets, tmp_path):
    """train.loss star with data.sets: each head's training output carries its covariances (5P
    columns), the loss splits them per head, and the run's checkpoints load as plain models."""
    ibug, lapa = two_sets
    cfg = load_config(overrides=COMMON + ["train.epochs=2", "train.loss=star",
                                          f"data.sets=[{{root: '{lapa}', scheme: lapa106, weight: 1.0}}]"])
    run = tmp_path / "star"
    train(cfg, ibug, run, resume=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(np.isfinite(r["train_loss"]) and r["train_loss"] > 0 for r in records)
    assert records[1]["train_loss"] < records[0]["train_loss"]
    for best, points in ((run / "best.pt", 68), (run / "schemes" / "lapa106" / "best.pt", 106)):
        model, saved, _ = load_checkpoint(best)
        assert saved.train.loss == "star" and model(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 2 * points)


def test_resume_keeps_each_schemes_best(two_sets, tmp_path, multi_run):
    """Stopped after epoch 2 and resumed to 3: the same weights and the same per-scheme bests as
    the uninterrupted run (the extra heads' best values travel in last.pt)."""
    ibug, lapa = two_sets
    run = tmp_path / "run"
    train(_config(lapa, epochs=3), ibug, run, resume=False, stop_after=2)
    train(_config(lapa, epochs=3), ibug, run, resume=True)
    again, whole = (torch.load(r / "last.pt", weights_only=True) for r in (run, multi_run))
    assert again["scheme_best"].keys() == whole["scheme_best"].keys()
    for scheme, (value, epoch) in whole["scheme_best"].items():
        assert again["scheme_best"][scheme][0] == pytest.approx(value, rel=1e-5) and again["scheme_best"][scheme][1] == epoch
    for key, value in whole["model"].items():
        assert torch.allclose(again["model"][key].float(), value.float(), atol=1e-5), key
    assert (run / "metrics.jsonl").read_text().count("val_nme_lapa106") == 3


def test_export_writes_each_scheme_its_own_artifact(multi_run):
    assert main(["export", str(multi_run), "--format", "onnx"]) == 0
    assert main(["export", str(multi_run / "schemes" / "lapa106"), "--format", "onnx"]) == 0
    main_manifest = load_manifest(multi_run / "export")
    extra_manifest = load_manifest(multi_run / "schemes" / "lapa106" / "export")
    assert (main_manifest.contract.scheme.name, main_manifest.contract.output.values) == ("ibug68", 136)
    assert (extra_manifest.contract.scheme.name, extra_manifest.contract.output.values) == ("lapa106", 212)


def test_scheme_loss_is_each_faces_own_heads_loss():
    """Rows of set k are scored against head k's slice only, weighted by the set's weight."""
    cfg = load_config(overrides=["train.loss=l1"])
    base = build_loss(cfg.train)
    loss = SchemeLoss(base, sizes=[4, 6], weights=[1.0, 0.5])
    preds = torch.arange(30, dtype=torch.float32).reshape(3, 10) / 10
    packed = torch.zeros(3, 7)
    packed[0, :4], packed[0, -1] = torch.tensor([0.1, 0.2, 0.3, 0.4]), 0
    packed[1, :6], packed[1, -1] = torch.ones(6), 1
    packed[2, :4], packed[2, -1] = torch.zeros(4), 0
    main_rows = base(preds[[0, 2], :4], packed[[0, 2], :4])
    extra_rows = base(preds[[1], 4:10], packed[[1], :6])
    assert loss(preds, packed).item() == pytest.approx(((2 * main_rows + 0.5 * extra_rows) / 3).item())


@pytest.mark.parametrize("overrides, needle", [
    (["model.head=pool"], "'data.sets' needs model.head integral"),
    (["data.scheme=lapa106"], "'data.sets' must not repeat data.scheme (lapa106)"),
])
def test_sets_refuse_what_they_cannot_train(tmp_path, overrides, needle):
    sets = "data.sets=[{root: elsewhere, scheme: lapa106, weight: 1.0}]"
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides=[o for o in COMMON if not o.startswith(("model.head", "data.scheme"))]
                    + ["model.head=integral", "data.scheme=ibug68"] + overrides + [sets])


def test_a_fitted_map_recovers_weighted_means_and_commutes_with_similarities():
    """Target points that are weighted means of source points (weights summing to 1) are recovered
    from noisy faces; the map then commutes with rotation, scale and shift, so it can be applied to
    augmented targets."""
    rng = np.random.default_rng(0)
    true = rng.dirichlet(np.ones(5), size=3).T                     # (5 source, 3 target) columns sum to 1
    source = rng.normal(0, 0.4, (200, 5, 2))
    target = np.einsum("npc,pq->nqc", source, true) + rng.normal(0, 1e-3, (200, 3, 2))
    weights = fit_map(source, target)
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(weights, true, atol=0.02)
    angle, scale, shift = 0.6, 1.3, np.array([0.1, -0.2])
    turn = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    face = source[0]
    moved = apply_map(torch.tensor((face @ turn.T + shift).reshape(1, -1)), torch.tensor(weights)).numpy()
    expected = (np.einsum("pc,pq->qc", face, weights) @ turn.T + shift).reshape(1, -1)
    np.testing.assert_allclose(moved, expected, atol=1e-9)


def test_label_transfer_fits_maps_trains_every_head_on_every_face_and_resumes(two_sets, tmp_path, multi_run):
    ibug, lapa = two_sets
    overrides = ["train.transfer_weight=0.5", "train.transfer_epoch=1"]
    cfg = load_config(overrides=COMMON + overrides + ["train.epochs=3",
                                                      f"data.sets=[{{root: '{lapa}', scheme: lapa106, weight: 1.0}}]"])
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(cfg, ibug, whole, resume=False)
    report = json.loads((whole / "transfer.json").read_text())
    assert set(report["fit"]) == {"ibug68->lapa106", "lapa106->ibug68"}
    assert np.asarray(report["maps"]["0->1"]).shape == (68, 106) and np.asarray(report["maps"]["1->0"]).shape == (106, 68)
    assert report["fit"]["ibug68->lapa106"]["train_faces"] == 24
    # epoch 1 is the same as without transfer; from epoch 2 the mapped labels add to the loss
    plain = [json.loads(line) for line in (multi_run / "metrics.jsonl").read_text().splitlines()]
    mapped = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert mapped[0]["train_loss"] == pytest.approx(plain[0]["train_loss"], rel=1e-6)
    assert mapped[1]["train_loss"] != pytest.approx(plain[1]["train_loss"], rel=1e-3)
    # stopped after epoch 2 (maps fitted after 1) and resumed: the maps come back from last.pt
    train(cfg, ibug, split, resume=False, stop_after=2)
    train(cfg, ibug, split, resume=True)
    a, b = (torch.load(r / "last.pt", weights_only=True) for r in (whole, split))
    assert a["transfer_maps"].keys() == b["transfer_maps"].keys() == {"0->1", "1->0"}
    for key, value in a["model"].items():
        assert torch.allclose(b["model"][key].float(), value.float(), atol=1e-5), key


def test_transfer_needs_sets_and_an_epoch_before_the_end():
    with pytest.raises(ConfigError, match="'train.transfer_weight' needs data.sets"):
        load_config(overrides=COMMON + ["train.transfer_weight=0.5"])
    with pytest.raises(ConfigError, match="'train.transfer_epoch' must be less than train.epochs"):
        load_config(overrides=COMMON + ["train.transfer_weight=0.5", "train.transfer_epoch=3", "train.epochs=3",
                                        "data.sets=[{root: x, scheme: lapa106, weight: 1.0}]"])


def test_resume_with_other_sets_is_refused_in_one_line(multi_run, two_sets):
    """Another scheme list means other heads: --resume names the change; a moved root is fine."""
    ibug, lapa = two_sets
    cfg = load_config(overrides=COMMON + ["train.epochs=4", f"data.sets=[{{root: '{lapa}', scheme: wflw98, weight: 1.0}}]"])
    with pytest.raises(FacemarkError, match=re.escape("cannot resume, the config changed (data.sets: ['lapa106'] -> "
                                                      "['wflw98'])")):
        train(cfg, ibug, multi_run, resume=True)


class _FixedHeads(torch.nn.Module):
    """A stand-in teacher model whose heads read fixed points and spreads (Teacher's interface)."""

    def __init__(self, heads: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.heads = heads

    def read_heads(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        assert not self.training, "the teacher reads its heads in eval mode"
        return self.heads


def test_teacher_keeps_the_surest_fraction_of_the_points_a_face_lacks_and_restores_the_mode():
    spread_main = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])      # 2-point scheme
    spread_extra = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10            # 3-point scheme
    model = _FixedHeads([(torch.zeros(4, 4), spread_main), (torch.zeros(4, 6), spread_extra)]).train()
    sets = torch.tensor([0, 1, 1, 0])
    main, extra = Teacher(model, keep=0.5)(torch.zeros(4, 3, 8, 8), sets)
    assert model.training
    # the main head labels rows 1 and 2 (set 1): its 2 surest of their 4 points, 0.3 and 0.4
    assert main.kept.tolist() == [[False, False], [True, True], [False, False], [False, False]]
    # the extra head labels rows 0 and 3 (set 0): spreads 0.0-0.2 and 0.9-1.1, the 3 lowest kept
    assert extra.kept.tolist() == [[True, True, True], [False] * 3, [False] * 3, [False] * 3]


def test_pseudo_labels_train_the_heads_a_face_lacks_on_kept_points_only():
    cfg = load_config(overrides=["train.loss=l1"])
    base = build_loss(cfg.train)
    loss = SchemeLoss(base, sizes=[4, 6], weights=[1.0, 1.0], pseudo_weight=0.5)
    preds = torch.arange(20, dtype=torch.float32).reshape(2, 10) / 10
    packed = torch.zeros(2, 7)
    packed[0, -1], packed[1, -1] = 0, 1
    plain = loss(preds, packed)
    # pseudo-labels equal to the student's own points add nothing
    same = [PseudoLabels(preds[:, :4].clone(), torch.ones(2, 2, dtype=torch.bool)),
            PseudoLabels(preds[:, 4:].clone(), torch.ones(2, 3, dtype=torch.bool))]
    assert loss(preds, packed, same).item() == pytest.approx(plain.item())
    # row 0 (set 0) lacks the 3-point scheme: pseudo-label 0 everywhere, only point 1 kept
    kept = torch.tensor([[False, True, False], [True, True, True]])
    extra = PseudoLabels(torch.zeros(2, 6), kept)
    main = PseudoLabels(preds[:, :4].clone(), torch.ones(2, 2, dtype=torch.bool))
    added = 0.5 * base(preds[[0], 4:], torch.tensor([[0.4, 0.5, 0.0, 0.0, 0.8, 0.9]]))
    assert loss(preds, packed, [main, extra]).item() == pytest.approx((plain * 2 + added).item() / 2)


def test_self_training_labels_from_its_epoch_on_and_resumes(two_sets, tmp_path):
    ibug, lapa = two_sets
    sets = f"data.sets=[{{root: '{lapa}', scheme: lapa106, weight: 1.0}}]"
    plain_cfg = load_config(overrides=COMMON + ["train.ema=true", "train.epochs=3", sets])
    cfg = load_config(overrides=COMMON + ["train.ema=true", "train.epochs=3", sets, "train.pseudo_weight=0.5",
                                          "train.pseudo_epoch=1", "train.pseudo_keep=0.5"])
    plain, whole, split = tmp_path / "plain", tmp_path / "whole", tmp_path / "split"
    train(plain_cfg, ibug, plain, resume=False, stop_after=2)
    train(cfg, ibug, whole, resume=False)
    a, b = ([json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()] for r in (plain, whole))
    assert b[0]["train_loss"] == pytest.approx(a[0]["train_loss"], rel=1e-6)      # epoch 1: no teacher yet
    assert b[1]["train_loss"] != pytest.approx(a[1]["train_loss"], rel=1e-3)
    train(cfg, ibug, split, resume=False, stop_after=2)
    train(cfg, ibug, split, resume=True)
    x, y = (torch.load(r / "last.pt", weights_only=True) for r in (whole, split))
    for key, value in x["model"].items():
        assert torch.allclose(y["model"][key].float(), value.float(), atol=1e-5), key


@pytest.mark.parametrize("overrides, needle", [
    (["train.pseudo_weight=0.5"], "'train.pseudo_weight' needs data.sets"),
    (["train.pseudo_weight=0.5", "SETS", "train.ema=false"], "'train.pseudo_weight' needs train.ema true"),
    (["train.pseudo_weight=0.5", "SETS", "train.ema=true", "train.transfer_weight=0.3"],
     "'train.pseudo_weight' and train.transfer_weight (0.3) both give"),
    (["train.pseudo_weight=0.5", "SETS", "train.ema=true", "train.pseudo_epoch=3", "train.epochs=3"],
     "'train.pseudo_epoch' must be less than train.epochs (3)"),
])
def test_self_training_refuses_what_it_cannot_do(overrides, needle):
    sets = "data.sets=[{root: x, scheme: lapa106, weight: 1.0}]"
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(overrides=COMMON + [sets if o == "SETS" else o for o in overrides])
