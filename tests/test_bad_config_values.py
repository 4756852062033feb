"""The bad-input catalogue, config values: at least one refused value per key of base.yaml, each
refused before any data is read, naming the key (and the file it came from).
"""

from __future__ import annotations


import pytest
import yaml

from facemark.config import base_config_path, leaf_fields

from cli_errors import error_line


# ---------------------------------------------------------------- config values, every key of base.yaml
# At least one out-of-range, wrong-choice (or, for booleans, wrong-type) value per key. A key added
# to base.yaml without a line here fails test_every_base_key_has_bad_values.
BAD_VALUES: dict[str, list[str]] = {
    "model.arch": ["resnet1800"],
    "model.pretrained": ["maybe"],
    "model.pretrained_file": ["''"],
    "model.freeze_blocks": ["-1"],
    "model.drop_rate": ["1.0", "-0.1"],
    "model.head": ["gap"],
    "model.head_channels": ["0", "4096"],
    "model.grid_coarse": ["middle"],
    "data.scheme": ["lapa107"],
    "data.input_size": ["0", "4096"],
    "data.margin": ["-0.1", "5"],
    "data.detector": ["../boxes", "''"],
    "data.landmark_box_prob": ["1.5", "-0.5"],
    "data.on_miss": ["ignore"],
    "data.skip_bad_samples": ["2"],
    "data.limit": ["0"],
    "data.workers": ["-1"],
    "data.max_image_pixels": ["0", "2000000000"],    # above 2^30, OpenCV's own decoder limit
    "data.sets": ["data/dt", "[{root: data/dt}]", "[{root: data/dt, scheme: dlib5, weight: 1.0}]",
                  "[{root: data/dt, scheme: ibug68, weight: 0}]",
                  "[{root: a, scheme: ibug68, weight: 1}, {root: b, scheme: ibug68, weight: 1}]"],
    "augment.rotate": ["-5", "270"],
    "augment.box_shift": ["0.5"],
    "augment.brightness": ["1.5"],
    "augment.contrast": ["-0.2"],
    "augment.saturation": ["2"],
    "augment.hue": ["0.6"],
    "augment.flip": ["1.5", "-0.1"],
    "augment.scale": ["1.0", "-0.1"],
    "augment.translate": ["1.5"],
    "augment.occlusion": ["1.5"],
    "augment.occlusion_area": ["0", "2"],
    "augment.blur": ["-0.1"],
    "train.epochs": ["0"],
    "train.batch_size": ["0", "1"],
    "train.lr": ["0", "-0.001"],
    "train.weight_decay": ["-1"],
    "train.optimizer": ["adamx"],
    "train.scheduler": ["linear"],
    "train.warmup_epochs": ["-1", "60"],          # 60 = base.yaml's train.epochs (must be less)
    "train.lr_update": ["batch"],
    "train.loss": ["huber"],
    "train.wing_w": ["0"],
    "train.wing_epsilon": ["-0.02"],
    "train.smooth_l1_beta": ["0", "2"],
    "train.pip_map_weight": ["0", "-1"],
    "train.star_omega": ["-1", "101"],
    "train.ema": ["often"],
    "train.ema_decay": ["1.0", "0"],
    "train.amp": ["3"],
    "train.channels_last": ["nhwc"],
    "train.seed": ["-1"],
    "train.device": ["tpu"],
    "train.threads": ["0", "two"],
    "train.transfer_weight": ["-0.1", "11"],
    "train.transfer_epoch": ["0"],
    "train.pseudo_weight": ["-0.1", "11"],
    "train.pseudo_epoch": ["0"],
    "train.pseudo_keep": ["0", "1.5"],
    "export.formats": ["[tensorrt]", "[]"],
    "export.opset": ["9", "99"],
    "export.dynamic_batch": ["perhaps"],
    "export.bake_preprocessing": ["1"],
    "export.parity_images": ["0"],
    "quantize.formats": ["[onnx, onnx]", "[tflite, ncnn]"],
    "quantize.calibration_count": ["0"],
    "quantize.calibration_seed": ["-3"],
    "quantize.tflite_io": ["int16"],
    "quantize.onnx_activation": ["int4"],
    "quantize.onnx_dynamic": ["sometimes"],
    "quantize.max_output_step": ["0", "2"],
    "quantize.calibration_method": ["kl"],
    "quantize.calibration_percentile": ["50", "100"],
    "quantize.float_decode": ["maybe"],
    "quantize.mixed": ["maybe"],
    "quantize.mixed_target": ["-0.1", "2"],
    "quantize.mixed_min_int8_macs": ["1.5"],
    "quantize.mixed_eval_faces": ["0"],
    "quantize.all_int8_margin": ["-0.1", "2"],
    "quantize.qat": ["often"],
    "quantize.qat_formats": ["[coreml]", "[onnx, onnx]"],
    "quantize.qat_epochs": ["0", "1000"],
    "quantize.qat_lr": ["0", "-1e-4"],
    "validate.threads": ["0"],
    "validate.warmup": ["-1"],
    "validate.runs": ["0"],
    "validate.max_nme_increase": ["-0.01"],
    "validate.max_nme": ["0"],
    "validate.stability_faces": ["-1"],
    "validate.stability_draws": ["0"],
    "validate.stability_shift": ["0", "0.5"],
    "validate.stability_noise": ["-1"],
    "validate.max_stability": ["0"],
    "validate.video_frames": ["-1", "8", "1.5"],
    "predict.model": ["3"],
    "predict.detector": ["dlib"],
    "predict.min_score": ["-0.5"],
    "predict.track": ["sometimes"],
    "predict.redetect_every": ["0", "2.5"],
    "predict.lost_iou": ["-0.1", "1"],
    "predict.match_iou": ["0", "1.5"],
    "predict.filter": ["kalman"],
    "predict.min_cutoff": ["0", "-1"],
    "predict.beta": ["-0.5"],
    "predict.d_cutoff": ["0"],
    "infer.flip": ["mirror"],
    "infer.passes": ["0", "9", "1.5"],
    "quantize.qat_weight_decay": ["-0.1"],
    "quantize.explain_faces": ["0"],
    "validate.batch": ["0", "2.5"],
    "synth.out": ["''"],
    "synth.train": ["0"],
    "synth.val": ["-1"],
    "synth.test": ["-1"],
    "synth.seed": ["-1"],
    "synth.workers": ["0"],
    "runs.train": ["''"],
    "runs.pipeline": ["''"],
}


def _leaves(section: dict, prefix: str = "") -> list[str]:
    return [leaf for key, value in section.items()
            for leaf in (_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])]


def test_every_base_key_has_bad_values():
    base = _leaves(yaml.safe_load(base_config_path().read_text()))
    assert sorted(BAD_VALUES) == sorted(base) == sorted(leaf_fields())


@pytest.mark.parametrize("key, value", [(key, value) for key, values in BAD_VALUES.items() for value in values])
def test_every_config_value_is_checked_before_data(capsys, tmp_path, key, value):
    """The data root does not exist: the one error line must be about the key, so the value was
    refused before any data was read, and no run folder was made."""
    line = error_line(capsys, ["train", "--data", tmp_path / "no-such-data", "--run", tmp_path / "run",
                               "--set", f"{key}={value}"])
    assert f"--set {key}={value}: " in line and f"'{key}" in line, line   # 'data.sets[0].scheme' is about data.sets
    assert "no-such-data" not in line
    assert not (tmp_path / "run").exists()


def test_config_file_value_names_the_file(capsys, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text("data:\n  landmark_box_prob: 1.5\n")
    line = error_line(capsys, ["pipeline", "--config", config, "--data", tmp_path / "nowhere", "--run", tmp_path / "r"])
    assert line.endswith(f"{config}: 'data.landmark_box_prob' must be a probability in [0, 1], got 1.5")


def test_pipeline_refuses_int8_without_its_float_source(capsys, tmp_path):
    line = error_line(capsys, ["pipeline", "--data", tmp_path / "nowhere", "--run", tmp_path / "r",
                               "--set", "export.formats=[coreml]", "--set", "quantize.formats=[onnx]"])
    assert "'quantize.formats' has onnx" in line and "add onnx to export.formats" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, key", [(["validate", "RUN", "--max-nme-increase", "-1"], "validate.max_nme_increase"),
                                       (["validate", "RUN", "--max-nme", "0"], "validate.max_nme")])
def test_command_line_values_follow_the_key_rules(capsys, ckpt_run, argv, key):
    line = error_line(capsys, [ckpt_run if a == "RUN" else a for a in argv])
    assert f"'{key}' must be" in line and argv[2] in line
