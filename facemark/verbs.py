"""The CLI's verbs as one table (VERBS, one Verb per verb). Each verb imports its stage lazily, so
`facemark --help` starts fast and a missing toolchain is reported only by the verb that needs it.
With facemark/cli.py and facemark/pipeline.py, the application layer (tests/test_layers.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from facemark.backends import FORMATS
from facemark.rundir import RunDir

FORMAT_CHOICES = [*FORMATS, "all"]
IN_RUN, IN_OUT = attrgetter("run"), attrgetter("out")   # a verb's log folder: its RUN or --out


@dataclass(frozen=True)
class Verb:
    """One verb: `help` (its line in `facemark --help`), `arguments` (adds its flags to its parser),
    `run` (args -> exit code), `log_dir` (args -> the folder whose facemark.log takes third-party
    output; None: the verb prints only its own lines), `defaults` (argument -> the base.yaml key
    that is its default when left out) and a longer `description` for its own --help."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    log_dir: Callable[[argparse.Namespace], Path] | None = None
    defaults: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="experiment YAML (merged over configs/base.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.epochs=3 (repeatable)")


def _add_overrides(parser: argparse.ArgumentParser, section: str, example: str) -> None:
    """--set for one config section of the run (quantize or infer), e.g. `example`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar=f"{section}.KEY=VALUE",
                        help=f"override {section}.KEY of the run's config{' or manifest' * (section == 'infer')}"
                             f", e.g. --set {example} (repeatable)")


def _add_max_pixels(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-image-pixels", type=_positive_int, metavar="N",
                        help="refuse images (and video frames) whose header claims more pixels, before "
                             "decoding (default: data.max_image_pixels)")


def _max_pixels(args: argparse.Namespace) -> int | None:
    """--max-image-pixels checked by the data.max_image_pixels rule; None: the base.yaml value."""
    from facemark.config import check_value

    value = args.max_image_pixels
    return None if value is None else check_value("data.max_image_pixels", value, f"--max-image-pixels {value}")


def _config(args: argparse.Namespace):
    from facemark.config import load_config

    return load_config(args.config, args.overrides)


def _synth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="output folder (default: synth.out)")
    p.add_argument("--scheme", help="landmark scheme (default: data.scheme)")
    p.add_argument("--n-train", type=int, help="training faces (default: synth.train)")
    p.add_argument("--n-val", type=int, help="validation faces (default: synth.val)")
    p.add_argument("--n-test", type=int, help="test faces (default: synth.test)")
    p.add_argument("--seed", type=int, help="default: synth.seed")
    p.add_argument("--workers", type=int, help="processes (default: synth.workers)")


def cmd_synth(args: argparse.Namespace) -> int:
    from facemark.data.synth import generate_dataset

    generate_dataset(args.out, scheme=args.scheme, counts={"train": args.n_train, "val": args.n_val,
                     "test": args.n_test}, seed=args.seed, workers=args.workers)
    return 0


def _check_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path)
    p.add_argument("--scheme", help="landmark scheme (default: data.scheme)")
    p.add_argument("--split", action="append", help="split to check (repeatable; default: all present)")
    _add_max_pixels(p)


def cmd_check_data(args: argparse.Namespace) -> int:
    from facemark.data.check import check_dataset, print_report

    problems = check_dataset(args.root, args.scheme, args.split, _max_pixels(args))
    print_report(problems)
    return 1 if problems else 0


BOXES_DESCRIPTION = (
    "Run a face detector once over every image and cache one box per image under "
    "ROOT/<split>/boxes/<detector>/ (a miss is written as 'miss'). With several detections the cache keeps, "
    "among the boxes with at least 25% of the largest box's area and at least 95% of the best score, the one "
    "nearest the image centre (ties: larger box). Already cached images are skipped, so an interrupted run "
    "resumes. An unreadable image is skipped with one line on stderr (exit code 1 at the end); --strict stops "
    "at the first (exit code 2).")


def _boxes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path)
    p.add_argument("--detector",
                   help="mtcnn (facenet-pytorch, CPU) or haar (OpenCV cascade); 'synth' boxes come "
                        "from `facemark synth`, not from a detector (default: data.detector)")
    p.add_argument("--split", action="append", help="split to process (repeatable; default: all present)")
    p.add_argument("--overwrite", action="store_true", help="re-run the detector on cached images")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image (exit code 2)")
    _add_max_pixels(p)


def cmd_boxes(args: argparse.Namespace) -> int:
    from facemark.data.boxes import cache_boxes

    results = cache_boxes(args.root, detector=args.detector, splits=args.split, overwrite=args.overwrite,
                          strict=args.strict, max_pixels=_max_pixels(args))
    return 1 if any(summary["unreadable"] for summary in results.values()) else 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--data", type=Path, required=True, help="dataset root in LaPa layout")
    p.add_argument("--run", type=Path, help="run folder: checkpoints, logs (default: runs.train)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last.pt")


def cmd_train(args: argparse.Namespace) -> int:
    from facemark.train.engine import train

    train(_config(args), data_root=args.data, run_dir=args.run, resume=args.resume)
    return 0


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path,
                   help="folder for metrics_<split>.json and ced_<split>.png (default: beside the checkpoint)")
    _add_overrides(p, "infer", "infer.flip=true --set infer.passes=2")


def cmd_eval(args: argparse.Namespace) -> int:
    from facemark.train.evaluate import evaluate_checkpoint

    evaluate_checkpoint(args.ckpt, data_root=args.data, split=args.split, out_dir=args.out, overrides=args.overrides)
    return 0


def _study_arguments(configs_flag: str, default_out: Path) -> Callable[[argparse.ArgumentParser], None]:
    """The arguments of benchmark and ablate: many configs, one data root, budget flags."""
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument(configs_flag, type=Path, nargs="+", required=True,
                       help="config files and/or folders of *.yaml (one run per file)")
        p.add_argument("--data", type=Path, required=True, help="dataset root in LaPa layout")
        p.add_argument("--out", type=Path, default=default_out,
                       help="output folder; finished runs in OUT/runs/<config name>/ are reused")
        p.add_argument("--split", default="test")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one value in every config (repeatable)")
        p.add_argument("--epochs", type=_positive_int, help="reduced budget: train.epochs of every config")
        p.add_argument("--input-size", type=_positive_int, help="reduced budget: data.input_size of every config")
        p.add_argument("--limit", type=_positive_int, help="reduced budget: data.limit (first N faces per split)")
    return add


def _benchmark_arguments(p: argparse.ArgumentParser) -> None:
    _study_arguments("--configs", Path("runs/benchmark"))(p)
    p.add_argument("--threads", type=_positive_int, help="CPU latency threads (default: validate.threads)")
    p.add_argument("--warmup", type=int, help="untimed runs before timing (default: validate.warmup)")
    p.add_argument("--runs", type=_positive_int, help="timed runs, median reported (default: validate.runs)")


def _budget(args: argparse.Namespace):
    from facemark.train.experiments import Budget

    return Budget(epochs=args.epochs, input_size=args.input_size, limit=args.limit)
def cmd_benchmark(args: argparse.Namespace) -> int:
    from facemark.config import check_value
    from facemark.train.benchmark import run_benchmark

    for flag, name in (("--threads", "threads"), ("--warmup", "warmup"), ("--runs", "runs")):
        if getattr(args, name) is not None:
            check_value(f"validate.{name}", getattr(args, name), origin=f"{flag} {getattr(args, name)}")

    return run_benchmark(args.configs, data_root=args.data, out_dir=args.out, budget=_budget(args),
                         overrides=args.overrides, split=args.split, threads=args.threads, warmup=args.warmup,
                         runs=args.runs)



def cmd_ablate(args: argparse.Namespace) -> int:
    from facemark.train.ablate import run_ablation

    return run_ablation(args.config, data_root=args.data, out_dir=args.out, budget=_budget(args),
                        overrides=args.overrides, split=args.split)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path)
    p.add_argument("--format", action="append", choices=FORMAT_CHOICES,
                   help="format to write (repeatable; default: export.formats of the run's config)")
    p.add_argument("--data", type=Path, help="dataset root for real parity crops (default: the run's)")
    p.add_argument("--bake-preprocessing", action="store_true",
                   help="graph takes uint8 RGB and returns landmarks in crop pixels")
    p.add_argument("--golden", action="store_true", help="also write golden vectors for the Android core")
    _add_overrides(p, "infer", "infer.flip=true --set infer.passes=2")


def cmd_export(args: argparse.Namespace) -> int:
    from facemark.convert.export import export_run

    return export_run(args.run, formats=args.format, data_root=args.data, bake=args.bake_preprocessing,
                      golden=args.golden, overrides=args.overrides)


def _quantize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path)
    p.add_argument("--format", action="append", choices=FORMAT_CHOICES)
    p.add_argument("--data", type=Path, help="dataset root for calibration crops (default: the run's)")
    p.add_argument("--calibration-count", type=_positive_int)
    p.add_argument("--explain", action="store_true",
                   help="per-layer int8 sensitivity report (RUN/export/sensitivity/: JSON, markdown, plot)")
    _add_overrides(p, "quantize", "quantize.calibration_method=minmax")


def cmd_quantize(args: argparse.Namespace) -> int:
    from facemark.quantize.run import quantize_run

    return quantize_run(args.run, formats=args.format, data_root=args.data,
                        calibration_count=args.calibration_count, explain=args.explain, overrides=args.overrides)


def _qat_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="an exported run (RUN/export/manifest.json); fine-tunes in RUN/qat/")
    p.add_argument("--data", type=Path, help="dataset root for training, calibration and val crops (default: the run's)")
    p.add_argument("--epochs", type=_positive_int, help="fine-tuning epochs (default: quantize.qat_epochs)")
    _add_overrides(p, "quantize", "quantize.calibration_method=minmax")


def cmd_qat(args: argparse.Namespace) -> int:
    from facemark.quantize.qat import qat_run

    return qat_run(args.run, data_root=args.data, epochs=args.epochs, overrides=args.overrides)


def _validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path)
    p.add_argument("--data", type=Path, help="dataset root (default: the run's)")
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=_positive_int)
    p.add_argument("--max-nme-increase", type=float, help="relative, e.g. 0.01 = +1 %% allowed")
    p.add_argument("--max-nme", type=float, help="absolute inter-pupil NME ceiling")
    p.add_argument("--baseline", type=Path, help="a previous validation.json to compare against")
    p.add_argument("--limit", type=_positive_int, help="use only the first N test faces")
    _add_overrides(p, "infer", "infer.flip=true --set infer.passes=2")


def cmd_validate(args: argparse.Namespace) -> int:
    from facemark.validate.run import validate_run

    return validate_run(args.run, data_root=args.data, split=args.split, threads=args.threads,
                        max_nme_increase=args.max_nme_increase, max_nme=args.max_nme,
                        baseline=args.baseline, limit=args.limit, overrides=args.overrides)


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", type=Path, nargs="+", metavar="[MODEL] INPUT",
                   help="MODEL (optional; default: predict.model, the shipped ibug68): a shipped model's name "
                        "(facemark models), an artifact file listed in its folder's manifest.json (e.g. "
                        "runs/demo/export/model_int8_full.tflite), or a RUN folder (its export's onnx_fp32 when "
                        "verified, else RUN/best.pt in PyTorch); then INPUTs: images (.jpg/.png, EXIF "
                        "orientation honoured), videos (.mp4/.mov/.avi/...) or folders")
    p.add_argument("--out", type=Path, required=True, help="folder for STEM.json and STEM.overlay.jpg/.mp4")
    faces = p.add_mutually_exclusive_group()
    faces.add_argument("--detector", help="face detector: mtcnn_onnx (onnxruntime), mtcnn (PyTorch) or haar "
                                          "(default: predict.detector, mtcnn_onnx)")
    faces.add_argument("--box", type=float, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                       help="one face box in image pixels for every input instead of a detector")
    faces.add_argument("--boxes", type=Path, metavar="FOLDER",
                       help="cached boxes (STEM.txt as `facemark boxes` writes) instead of a detector")
    p.add_argument("--min-score", type=float, help="lowest detection score kept (default: predict.min_score)")
    p.add_argument("--no-track", dest="overrides", action="append_const", const="predict.track=false", default=[],
                   help="videos: run the detector on every frame instead of tracking (predict.track)")
    p.add_argument("--filter", dest="overrides", action="append", type=lambda name: f"predict.filter={name}",
                   metavar="one_euro|none", help="videos: the landmarks' temporal filter (default: predict.filter)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="infer.KEY=VALUE|predict.KEY=VALUE",
                   help="override an infer.* value (test-time refinement, e.g. infer.passes=2) or a predict.* "
                        "value (tracking and filter on videos, e.g. predict.redetect_every=10; docs/streaming.md) "
                        "(repeatable)")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable input (exit code 2) instead of skipping it (exit code 1)")
    _add_max_pixels(p)


def cmd_predict(args: argparse.Namespace) -> int:
    from facemark.predict import run_predict, split_model

    model, inputs = split_model(args.paths)
    return run_predict(model, inputs, args.out, detector=args.detector, min_score=args.min_score,
                       box=args.box, boxes_dir=args.boxes, overrides=args.overrides, strict=args.strict,
                       max_pixels=_max_pixels(args))


def cmd_models(args: argparse.Namespace) -> int:
    from facemark.package import print_models

    return print_models()


def _package_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a validated run (RUN/validation/validation.json, gate passed)")
    p.add_argument("--name", required=True, help="the model's name (Landmarker(NAME) when shipped in facemark/pretrained)")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write")
    p.add_argument("--artifact", action="append",
                   help="an artifact of the manifest to include (repeatable; default: the int8 TFLite that "
                        "ships and onnx_fp32; the first is the model's default)")
    p.add_argument("--licence", default="", help="the licence that follows from the training data, for the card")
    p.add_argument("--recipe", default="", help="the training config, for the card")
    p.add_argument("--command", action="append", help="a command that built it, for the card (repeatable)")


def cmd_package(args: argparse.Namespace) -> int:
    from facemark.package import package_run

    out = package_run(args.run, args.name, args.out, artifacts=args.artifact, licence=args.licence,
                      recipe=args.recipe, commands=args.command)
    print(f"packaged {args.name} into {out}: Landmarker({str(out)!r})")
    return 0


def _pipeline_arguments(p: argparse.ArgumentParser) -> None:
    _add_config(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--run", type=Path, help="run folder (default: runs.pipeline)")


def cmd_pipeline(args: argparse.Namespace) -> int:
    from facemark.pipeline import run_pipeline

    return run_pipeline(_config(args), config_path=args.config, data_root=args.data, run_dir=args.run)


VERBS: dict[str, Verb] = {
    "synth": Verb("generate a synthetic LaPa-layout face dataset", _synth_arguments, cmd_synth,
                  defaults={"out": "synth.out", "scheme": "data.scheme", "n_train": "synth.train", "n_val": "synth.val",
                            "n_test": "synth.test", "seed": "synth.seed", "workers": "synth.workers"}),
    "check-data": Verb("report every problem of a LaPa-layout dataset", _check_data_arguments, cmd_check_data,
                       defaults={"scheme": "data.scheme"}),
    "boxes": Verb("run a face detector once and cache its boxes", _boxes_arguments, cmd_boxes,
                  defaults={"detector": "data.detector"}, description=BOXES_DESCRIPTION),
    "train": Verb("train a landmark regressor (torchrun for several GPUs)", _train_arguments, cmd_train, IN_RUN,
                  defaults={"run": "runs.train"}),
    "eval": Verb("evaluate a checkpoint: NME, FR, AUC, CED plot", _eval_arguments, cmd_eval,
                 lambda args: Path(args.ckpt).parent),
    "benchmark": Verb("paper figure: train and time several architectures (NME vs latency, GFLOPs, params)",
                      _benchmark_arguments, cmd_benchmark, IN_OUT),
    "ablate": Verb("paper table: train the training-recipe variants, NME beside the paper's",
                   _study_arguments("--config", Path("runs/ablation")), cmd_ablate, IN_OUT),
    "export": Verb("export a run to ONNX, TFLite and CoreML with a manifest", _export_arguments, cmd_export, IN_RUN),
    "quantize": Verb("write int8 artifacts calibrated on training crops", _quantize_arguments, cmd_quantize,
                     IN_RUN),
    "qat": Verb("quantisation-aware fine-tuning of an exported run; its int8 ONNX and TFLite artifacts",
                _qat_arguments, cmd_qat, IN_RUN),
    "validate": Verb("NME and latency of every artifact vs PyTorch; regression gate", _validate_arguments,
                     cmd_validate, IN_RUN),
    "predict": Verb("landmarks of every face on photos, folders and videos with an artifact or a run",
                    _predict_arguments, cmd_predict, IN_OUT),
    "pipeline": Verb("train -> export -> quantize -> validate, resumable", _pipeline_arguments, cmd_pipeline,
                     IN_RUN, defaults={"run": "runs.pipeline"}),
    "models": Verb("the shipped pretrained models: points, size, test NME, latency, licence", lambda p: None,
                   cmd_models),
    "package": Verb("a validated run's shipped artifacts -> a model folder with manifest and model card",
                    _package_arguments, cmd_package),
}


def log_path(args: argparse.Namespace) -> Path | None:
    """Where the verb's third-party output is logged (facemark.console): RUN/facemark.log of its
    log folder; None for verbs that print only their own lines."""
    log_dir = VERBS[args.verb].log_dir
    return None if log_dir is None else RunDir(log_dir(args)).log
