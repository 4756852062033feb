"""`facemark qat RUN`: quantisation-aware fine-tuning of an exported run, and its int8 artifacts.

The run's verified checkpoint is captured with torch.export and prepared by torchao's PT2E QAT
(XNNPACK's scheme with uint8 activations and ReLU6 fused, see `quantizer`: int8 symmetric
per-channel weights, uint8 per-tensor affine activations), then fine-tuned for quantize.qat_epochs
on the training split with the run's loss and augmentation, AdamW at quantize.qat_lr with a
per-step cosine to 0, in training's own epoch loop (train/loop.py; `FineTuner` is its hooks), so
progress, Ctrl-C/SIGTERM and resume behave as `facemark train`'s do. BatchNorm statistics stay frozen: on the demo model, training them on
32-face batches made the fake-quantised model worse (val NME 0.0691, frozen 0.0669, float 0.0666).
So each BatchNorm is folded into its convolution before preparation (`fold_batchnorm` says why
not torchao's conv-BN QAT pattern), the folded weights are what trains, and `unfold_batchnorm`
maps them back to the run's architecture.

The fake-quant ranges are the ones the converters will measure (`measure_ranges`): per-channel
min-max of the weights, and each activation's range by quantize.calibration_method (min-max or
percentile) over the run's calibration crops on the float graph. They are measured again from the
current weights at the start of every epoch and held during it, and once more at the end. So the
weights learn the int8 grid that ships: LiteRT's converter takes no outside ranges and calibrates
the fine-tuned weights on the same crops again (with moving-average ranges, learned on augmented
batches, the TFLite QAT row gained nothing: MobileNetV2 on 300-W, +4.65 % vs +4.59 % for plain PTQ).

RUN/qat/ holds last.pt (after every epoch, and after the last whole step when interrupted: the
prepared graph's state with its ranges, optimiser, schedule, RNG, the best epoch's state and the
epoch in progress; the next `facemark qat` continues from it, with the next step when interrupted
mid-epoch), metrics.jsonl, and best.pt: a
plain facemark checkpoint of the float architecture carrying the fine-tuned weights of the epoch
with the lowest fake-quantised val NME.

Artifacts, recorded in RUN/export/manifest.json beside the post-training ones and compared with
the run's original PyTorch model (parity here, NME and the gate in `facemark validate`):
- onnx_int8_qdq_u8s8_qat: the fine-tuned graph itself, converted (convert_pt2e) and written by
  torch.onnx's dynamo exporter: QDQ with the graph's activation ranges and int8 weights.
- tflite_int8_full_qat: the fine-tuned float weights through onnx2tf and LiteRT's full-integer
  conversion (tflite_int8.full_integer), calibrated on the same crops with the same range method
  as tflite_int8_full, which measures the ranges the fine-tuning used.

Each QAT row then meets the other calibrated int8 rows of its format in quantize.selection (the
lowest NME on val faces ships, an all-int8 row first when it is within quantize.all_int8_margin)
and supersedes the others.
"""

from __future__ import annotations

import copy
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facemark.artifacts import qat_row
from facemark.backends import BACKENDS, QAT_FORMATS
from facemark.errors import ArtifactError
from facemark.model import checkpoint_dict
from facemark.artifact_rows import attempt, run_rows, summary_table
from facemark.quantize.common import QuantJob, converter_ranges, load_torch_before_tensorflow, range_percentile
from facemark.quantize.qat_graph import RANGE_BATCH, UNFOLD_TOLERANCE, measure_ranges, prepare, unfold_batchnorm
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.train.loop import SINGLE_CPU, Loop, TrainState, append_metrics, run_epochs, trim_metrics


# where the QAT artifacts' float checkpoint lies, relative to RUN (the manifest's `checkpoint` facts)
QAT_CHECKPOINT = RunDir(RunDir(Path()).qat).best.as_posix()
RANGES = "over the calibration crops, measured at every epoch start and at the end"
BATCHNORM = "folded into the convolutions before fine-tuning (running statistics)"
SCHEDULE = "AdamW, cosine to 0 per step (timm), no warm-up"
QUANTIZER = ("u8 per-tensor affine activations, s8 per-channel symmetric weights (torchao XNNPACKQuantizer, "
          "uint8, ReLU6 fused)")


def qat_run(run: Path, data_root: Path | None, epochs: int | None = None, stop_after: int | None = None,
            overrides: list[str] | None = None) -> int:
    """Fine-tune the exported run `run` under fake quantisation (resuming RUN/qat/last.pt), then
    write and verify the QAT artifacts of the formats in quantize.formats that have one ->
    exit code (0, or 1 when an artifact failed). `epochs` overrides quantize.qat_epochs;
    `stop_after` ends the call after that many epochs in total (resumable, nothing written);
    `overrides`: quantize.KEY=VALUE changes to the run's config."""
    from facemark.quantize.run import build_job, finish_job
    from facemark.quantize.selection import select_shipped

    load_torch_before_tensorflow()
    run = Path(run)
    with hold_run_lock(run, "qat"):
        job = build_job(run, data_root, None, verb="qat", overrides=overrides)
        try:
            formats = qat_formats(job.cfg)
            if not formats:
                raise ArtifactError(f"no QAT artifact to write: quantize.qat_formats {job.cfg.quantize.qat_formats} "
                                    f"and quantize.formats {job.cfg.quantize.formats} share no format")
            tuner = FineTuner(job, RunDir(run).qat, epochs or job.cfg.quantize.qat_epochs)
            if not tuner.train(stop_after):
                shutil.rmtree(job.work_dir, ignore_errors=True)
                return 0
            results = []
            for fmt in formats:   # each backend's quantizer writes its QAT row from the fine-tuned model
                writer = BACKENDS[fmt].module("quantizer").write_qat
                results += run_rows(job.export_dir, [qat_row(fmt)],
                                    lambda: [attempt(qat_row(fmt), lambda: writer(job, tuner))])
            select_shipped(job, "qat")
        except BaseException:   # Ctrl-C, SIGTERM, an error: RUN/qat/last.pt resumes, the work folder goes
            shutil.rmtree(job.work_dir, ignore_errors=True)
            raise
        print(summary_table(results))
        return finish_job(job, results)


def qat_formats(cfg) -> list[str]:
    """The formats that get a QAT artifact: quantize.qat_formats that are also in quantize.formats."""
    return [fmt for fmt in QAT_FORMATS if fmt in cfg.quantize.qat_formats and fmt in cfg.quantize.formats]


class FineTuner:
    """The prepared QAT graph of `job.model` and its fine-tuning in `out_dir` (RUN/qat): training's
    epoch loop (train/loop.py) with this graph, AdamW and a per-step cosine; these are its hooks."""

    label = "qat epoch"

    def __init__(self, job: QuantJob, out_dir: Path, epochs: int):
        from timm.scheduler import create_scheduler_v2

        from facemark.schemes import load_scheme
        from facemark.train.data import TrainLoader, scheme_faces, validation_crops
        from facemark.train.losses import build_loss

        self.job, self.out_dir, self.epochs = job, Path(out_dir), epochs
        self.settings = {"made_from_sha256": job.contract.checkpoint.sha256, "epochs": epochs,
                         "lr": job.cfg.quantize.qat_lr, "schedule": SCHEDULE, "quantizer": QUANTIZER,
                         "ranges": f"{converter_ranges(job.cfg)} {RANGES}", "bn": BATCHNORM}
        self.scheme = load_scheme(job.cfg.data.scheme)
        # the main scheme's faces: the graph is the one-scheme model (a multi-dataset run's main head)
        dataset = scheme_faces(job.data_root, job.cfg, job.norm, log=lambda *args, **kwargs: None)
        self.val = validation_crops(job.data_root, job.cfg)
        torch.manual_seed(job.cfg.train.seed)
        self.graph, self.folds = prepare(job.model, job.size)
        self.range_inputs = torch.from_numpy(job.calibration.inputs("NCHW"))
        self._measure()   # sizes the fake-quant buffers before a saved state is loaded (and serves epoch 1)
        optimizer = torch.optim.AdamW(self.graph.parameters(), lr=job.cfg.quantize.qat_lr,
                                      weight_decay=job.cfg.quantize.qat_weight_decay)
        loader = TrainLoader(dataset, job.cfg, 0, 1)
        schedule, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=0,
                                          min_lr=0.0, step_on_epochs=False, updates_per_epoch=len(loader))
        state = TrainState(self.graph, optimizer, schedule, torch.amp.GradScaler("cpu", enabled=False),
                           steps_per_epoch=len(loader))
        self.loop = Loop(state, self.graph, loader, build_loss(job.cfg.train), SINGLE_CPU, epochs)
        self.best_state: dict[str, Any] | None = None

    @property
    def best_epoch(self) -> int:
        return self.loop.state.best_epoch

    @property
    def best_nme(self) -> float:
        return self.loop.state.best_val_nme

    def train(self, stop_after: int | None) -> bool:
        """Fine-tune up to quantize.qat_epochs (or `stop_after`) -> True when all epochs are done."""
        try:
            self._resume()
            run_epochs(self.loop, self, min(self.epochs, stop_after or self.epochs))
        finally:
            self.loop.loader.close()   # its persistent workers end now, whatever stopped the epochs
        if self.loop.state.epoch < self.epochs:
            print(f"facemark qat: stopped after epoch {self.loop.state.epoch}; run `facemark qat` again to resume")
            return False
        if self.best_state is not None:   # None only if every val NME was NaN: keep the last state
            self.graph.load_state_dict(self.best_state)
        self._measure()   # the ranges of the weights that ship
        self._write_float_checkpoint()
        return True

    # ------------------------------------------------------------ the loop's hooks

    def start_epoch(self, epoch: int) -> None:
        """The fake-quant ranges of this epoch: measured from the weights at its start (kept when
        a resumed epoch continues: the saved graph holds them)."""
        if self.stale and self.loop.state.progress.steps == 0:
            self._measure()
        self.stale = True

    def train_mode(self) -> None:
        """Nothing: BatchNorm is folded (its statistics frozen) and the graph has no dropout."""

    def validate(self) -> float:
        """Inter-pupil NME of the fake-quantised graph on the val split (ranges not moved)."""
        from facemark.train.validation import crop_set_nme

        return crop_set_nme(self.graph, self.val, self.scheme, self.job.cfg, torch.device("cpu"))

    def end_epoch(self, record: dict[str, Any], improved: bool) -> None:
        record["val_nme_int8_sim"] = record.pop("val_nme")
        if improved:
            self.best_state = copy.deepcopy(self.graph.state_dict())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        append_metrics(RunDir(self.out_dir).metrics, record)
        self._save_last()
        print(f"qat epoch {record['epoch']}/{self.epochs}  train_loss {record['train_loss']:.5f}  val_nme (fake int8) "
              f"{record['val_nme_int8_sim']:.4f}  {record['seconds']:.1f} s" + ("  (best)" if improved else ""))

    def save_interrupted(self) -> None:
        """last.pt after the last whole step of the interrupted epoch (none done: last.pt already
        holds the epoch's start; a step cut short: the epoch restarts)."""
        done = self.loop.state.progress
        if done.steps and not done.in_step:
            self._save_last()
            print(f"facemark qat: interrupted in epoch {self.loop.state.epoch + 1} after step {done.steps}/"
                  f"{self.loop.state.steps_per_epoch}: saved {RunDir(self.out_dir).last}")

    def float_model(self) -> nn.Module:
        """The run's float architecture with the fine-tuned weights (BatchNorm unfolded: unfold_batchnorm),
        checked against the graph with fake quantisation off on calibration crops."""
        from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant

        model = unfold_batchnorm(copy.deepcopy(self.job.model), self.graph.state_dict(), self.folds).eval()
        inputs = self.range_inputs[:RANGE_BATCH]
        self.graph.apply(disable_fake_quant)
        with torch.no_grad():
            gap = (model(inputs) - self.graph(inputs)).abs().max().item()
        self.graph.apply(enable_fake_quant)
        if not gap < UNFOLD_TOLERANCE:
            raise RuntimeError(f"the unfolded float model differs from the fine-tuned graph by {gap:.3g} "
                               f"(normalised units, allowed {UNFOLD_TOLERANCE})")
        return model

    def record(self) -> dict[str, Any]:
        """The `qat` fact of every QAT artifact."""
        return {**self.settings, "best_epoch": self.best_epoch, "val_nme_int8_sim": round(self.best_nme, 6),
                "checkpoint": QAT_CHECKPOINT}

    # ------------------------------------------------------------ internals

    def _measure(self) -> None:
        measure_ranges(self.graph, self.range_inputs, range_percentile(self.job.cfg))
        self.stale = False   # until the weights change

    def _resume(self) -> None:
        from facemark.train import checkpoint as ckpt_io

        path, state = RunDir(self.out_dir).last, self.loop.state
        if not path.is_file():
            return
        saved = ckpt_io.load_checkpoint_file(path)
        if saved.get("settings") != self.settings:
            print(f"facemark qat: {path} was made with other settings or from another checkpoint; starting over",
                  file=sys.stderr)
            return
        self.graph.load_state_dict(saved["graph"])
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scheduler.load_state_dict(saved["scheduler"])
        ckpt_io.restore_rng(saved["rng"])
        state.epoch, state.best_val_nme, state.best_epoch = saved["epoch"], saved["best_nme"], saved["best_epoch"]
        state.progress = ckpt_io.interrupted_progress(saved, [])
        self.best_state, self.stale = saved["best_graph"], True
        trim_metrics(RunDir(self.out_dir).metrics, state.epoch)
        steps = f", step {state.progress.steps}" if state.progress.steps else ""
        print(f"facemark qat: resuming {self.out_dir} after epoch {state.epoch}{steps}")

    def _save_last(self) -> None:
        from facemark.train import checkpoint as ckpt_io

        state = self.loop.state
        ckpt_io.save_checkpoint(RunDir(self.out_dir).last, {
            "settings": self.settings, "epoch": state.epoch, "graph": self.graph.state_dict(),
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "rng": ckpt_io.rng_state(), "best_nme": state.best_val_nme, "best_epoch": state.best_epoch,
            "best_graph": self.best_state, "interrupted_epoch": state.progress.saved() if state.progress.steps else None})

    def _write_float_checkpoint(self) -> None:
        from facemark.train import checkpoint as ckpt_io

        model = self.float_model()
        ckpt_io.save_checkpoint(RunDir(self.out_dir).best, checkpoint_dict(
            model, self.job.cfg, epoch=self.best_epoch, val_nme=self.best_nme, data_root=str(self.job.data_root),
            qat=self.record()))
