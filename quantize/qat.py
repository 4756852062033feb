"""`facemark qat RUN`: quantisation-aware fine-tuning of an exported run, and its int8 artifacts.

The run's verified checkpoint is captured with torch.export and prepared by torchao's PT2E QAT
(XNNPACK's scheme with uint8 activations and ReLU6 fused, see `quantizer`: int8 symmetric
per-channel weights, uint8 per-tensor affine activations), then fine-tuned for quantize.qat_epochs
on the training split with the run's loss and augmentation, AdamW at quantize.qat_lr with a
per-step cosine to 0. BatchNorm statistics stay frozen: on the demo model, training them on
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

RUN/qat/ holds last.pt (after every epoch: the prepared graph's state, optimiser, schedule, RNG,
and the best epoch's state; an interrupted run resumes from it), metrics.jsonl, and best.pt: a
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
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from facemark.artifacts import ARTIFACTS
from facemark.errors import ArtifactError
from facemark.io import atomic_path, atomic_write_text
from facemark.model import checkpoint_dict
from facemark.quantize.common import (QuantJob, QuantResult, attempt, int8_facts, load_torch_before_tensorflow,
                                      converter_ranges, range_percentile)
from facemark.quantize.qat_graph import RANGE_BATCH, UNFOLD_TOLERANCE, measure_ranges, prepare, unfold_batchnorm
from facemark.rundir import RunDir
from facemark.runlock import hold_run_lock
from facemark.status import Status


# where the QAT artifacts' float checkpoint lies, relative to RUN (the manifest's `checkpoint` facts)
QAT_CHECKPOINT = RunDir(RunDir(Path()).qat).best.as_posix()
RANGES = "over the calibration crops, measured at every epoch start and at the end"
BATCHNORM = "folded into the convolutions before fine-tuning (running statistics)"
QUANTIZER = ("u8 per-tensor affine activations, s8 per-channel symmetric weights (torchao XNNPACKQuantizer, "
          "uint8, ReLU6 fused)")
# format -> the registry row its QAT writes
ROWS = {"onnx": ARTIFACTS["onnx_int8_qdq_u8s8_qat"], "tflite": ARTIFACTS["tflite_int8_full_qat"]}


def qat_run(run: Path, data_root: Path | None, epochs: int | None = None, stop_after: int | None = None,
            overrides: list[str] | None = None) -> int:
    """Fine-tune the exported run `run` under fake quantisation (resuming RUN/qat/last.pt), then
    write and verify the QAT artifacts of the formats in quantize.formats that have one ->
    exit code (0, or 1 when an artifact failed). `epochs` overrides quantize.qat_epochs;
    `stop_after` ends the call after that many epochs in total (resumable, nothing written);
    `overrides`: quantize.KEY=VALUE changes to the run's config."""
    from facemark.quantize.run import build_job, finish_job, record_results, summary_table
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
            results = [attempt(ROWS[fmt], lambda fmt=fmt: WRITERS[fmt](job, tuner))
                       for fmt in formats]
            record_results(job, results)
            select_shipped(job, "qat")
        except BaseException:   # Ctrl-C, SIGTERM, an error: RUN/qat/last.pt resumes, the work folder goes
            shutil.rmtree(job.work_dir, ignore_errors=True)
            raise
        print(summary_table(results))
        return finish_job(job, results)


def qat_formats(cfg) -> list[str]:
    """The formats that get a QAT artifact: quantize.qat_formats that are also in quantize.formats."""
    return [fmt for fmt in ROWS if fmt in cfg.quantize.qat_formats and fmt in cfg.quantize.formats]


class FineTuner:
    """The prepared QAT graph of `job.model` and its fine-tuning in `out_dir` (RUN/qat)."""

    def __init__(self, job: QuantJob, out_dir: Path, epochs: int):
        from facemark.schemes import load_scheme
        from facemark.train.data import TrainLoader, scheme_faces, validation_crops

        self.job, self.out_dir, self.epochs = job, Path(out_dir), epochs
        self.settings = {"source_sha256": job.contract.checkpoint.sha256, "epochs": epochs,
                         "lr": job.cfg.quantize.qat_lr, "quantizer": QUANTIZER,
                         "ranges": f"{converter_ranges(job.cfg)} {RANGES}", "bn": BATCHNORM}
        self.scheme = load_scheme(job.cfg.data.scheme)
        # the main scheme's faces: the graph is the one-scheme model (a multi-dataset run's main head)
        self.dataset = scheme_faces(job.data_root, job.cfg, job.norm, log=lambda *args, **kwargs: None)
        self.val = validation_crops(job.data_root, job.cfg)
        torch.manual_seed(job.cfg.train.seed)
        self.graph, self.folds = prepare(job.model, job.size)
        self.range_inputs = torch.from_numpy(job.calibration.inputs("NCHW"))
        self._measure()   # sizes the fake-quant buffers before a saved state is loaded (and serves epoch 1)
        self.optimizer = torch.optim.AdamW(self.graph.parameters(), lr=job.cfg.quantize.qat_lr,
                                           weight_decay=job.cfg.quantize.qat_weight_decay)
        self.loader = TrainLoader(self.dataset, job.cfg, 0, 1)
        self.steps = len(self.loader)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=epochs * self.steps)
        self.epoch, self.best_nme, self.best_epoch, self.best_state = 0, float("inf"), 0, None

    def train(self, stop_after: int | None) -> bool:
        """Fine-tune up to quantize.qat_epochs (or `stop_after`) -> True when all epochs are done."""
        from facemark.train import checkpoint as ckpt_io
        from facemark.train.losses import build_loss

        try:
            return self._train(stop_after, build_loss(self.job.cfg.train), ckpt_io)
        finally:
            self.loader.close()   # its persistent workers end now, whatever stopped the epochs

    def _train(self, stop_after: int | None, loss_fn: nn.Module, ckpt_io) -> bool:
        self._resume()
        last = min(self.epochs, stop_after or self.epochs)
        for epoch in range(self.epoch, last):
            start = time.perf_counter()
            if not self.ranges_current:
                self._measure()
            train_loss = self._epoch(epoch, loss_fn)
            val_nme = self.val_nme()
            self.epoch = epoch + 1
            improved = val_nme < self.best_nme
            if improved:
                self.best_nme, self.best_epoch = val_nme, self.epoch
                self.best_state = copy.deepcopy(self.graph.state_dict())
            record = {"epoch": self.epoch, "train_loss": train_loss, "val_nme_int8_sim": val_nme,
                      "seconds": round(time.perf_counter() - start, 3)}
            self._save(record, ckpt_io)
            print(f"qat epoch {self.epoch}/{self.epochs}  train_loss {train_loss:.5f}  val_nme (fake int8) "
                  f"{val_nme:.4f}  {record['seconds']:.1f} s" + ("  (best)" if improved else ""))
        if self.epoch < self.epochs:
            print(f"facemark qat: stopped after epoch {self.epoch}; run `facemark qat` again to resume")
            return False
        if self.best_state is not None:   # None only if every val NME was NaN: keep the last state
            self.graph.load_state_dict(self.best_state)
        self._measure()   # the ranges of the weights that ship
        self._write_float_checkpoint(ckpt_io)
        return True

    def val_nme(self) -> float:
        """Inter-pupil NME of the fake-quantised graph on the val split (ranges not moved)."""
        from facemark.train.validation import crop_set_nme

        return crop_set_nme(self.graph, self.val, self.scheme, self.job.cfg, torch.device("cpu"))

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
        self.ranges_current = True   # until the weights change

    def _epoch(self, epoch: int, loss_fn: nn.Module) -> float:
        total, faces = 0.0, 0
        bar = tqdm(self.loader.epoch(epoch), desc=f"qat epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False)
        for images, targets in bar:
            loss = loss_fn(self.graph(images), targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            self.ranges_current = False
            total, faces = total + loss.item() * len(images), faces + len(images)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        return total / max(faces, 1)

    def _resume(self) -> None:
        from facemark.train import checkpoint as ckpt_io

        path = RunDir(self.out_dir).last
        if not path.is_file():
            return
        saved = ckpt_io.load_checkpoint_file(path)
        if saved.get("settings") != self.settings:
            print(f"facemark qat: {path} was made with other settings or from another checkpoint; starting over",
                  file=sys.stderr)
            return
        self.graph.load_state_dict(saved["graph"])
        self.ranges_current = False
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        ckpt_io.restore_rng(saved["rng"])
        self.epoch, self.best_nme, self.best_epoch = saved["epoch"], saved["best_nme"], saved["best_epoch"]
        self.best_state = saved["best_graph"]
        print(f"facemark qat: resuming {self.out_dir} after epoch {self.epoch}")

    def _save(self, record: dict[str, Any], ckpt_io) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics = RunDir(self.out_dir).metrics
        kept = metrics.read_text().splitlines() if metrics.is_file() and self.epoch > 1 else []
        kept = [line for line in kept if line.strip() and json.loads(line)["epoch"] < self.epoch]
        atomic_write_text(metrics, "".join(f"{line}\n" for line in [*kept, json.dumps(record)]))
        ckpt_io.save_checkpoint(RunDir(self.out_dir).last, {
            "settings": self.settings, "epoch": self.epoch, "graph": self.graph.state_dict(),
            "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
            "rng": ckpt_io.rng_state(), "best_nme": self.best_nme, "best_epoch": self.best_epoch,
            "best_graph": self.best_state})

    def _write_float_checkpoint(self, ckpt_io) -> None:
        model = self.float_model()
        ckpt_io.save_checkpoint(RunDir(self.out_dir).best, checkpoint_dict(
            model, self.job.cfg, epoch=self.best_epoch, val_nme=self.best_nme, data_root=str(self.job.data_root),
            qat=self.record()))


def write_onnx(job: QuantJob, tuner: FineTuner) -> QuantResult:
    """onnx_int8_qdq_u8s8_qat: convert_pt2e of the fine-tuned graph, exported as QDQ ONNX."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from facemark.convert.onnx import INPUT_NAME, OUTPUT_NAME
    from facemark.quantize.onnx_int8 import finish, output_step
    from facemark.quantize.sensitivity import int8_mac_fraction
    from facemark.quantize.sensitivity_onnx import onnx_int8_nodes, onnx_macs

    row = ROWS["onnx"]
    from torchao.quantization.pt2e import move_exported_model_to_eval

    converted = convert_pt2e(copy.deepcopy(tuner.graph))
    move_exported_model_to_eval(converted)
    description = ("quantisation-aware fine-tuned: int8 per-channel weights, uint8 activations with the "
                   f"{converter_ranges(job.cfg)} ranges it was fine-tuned against, QDQ format; float32 I/O")
    facts = int8_facts(row, description, "NCHW", "float32", "float32", job, QAT_CHECKPOINT)
    facts["calibration"].update(method="qat", detail=tuner.settings["ranges"])
    facts["qat"] = tuner.record()
    with atomic_path(job.export_dir / row.file) as tmp:
        _export_dynamo(converted, tmp, job.size, INPUT_NAME, OUTPUT_NAME)
        facts["output_step"] = output_step(job, tmp)
        facts["int8_macs"] = round(int8_mac_fraction(onnx_macs(tmp), onnx_int8_nodes(tmp)), 4)
        finish(job, tmp, facts)
    return QuantResult(row.name, row.mode, Status.VERIFIED, row.file, facts)


def _export_dynamo(graph: nn.Module, path: Path, size: int, input_name: str, output_name: str) -> None:
    """torch.onnx's dynamo exporter (it translates the quantize/dequantize ops of a converted PT2E
    graph into QuantizeLinear/DequantizeLinear; the TorchScript one does not), batch 1, checked."""
    import onnx

    program = torch.onnx.export(graph, (torch.zeros(1, 3, size, size),), dynamo=True, input_names=[input_name],
                                output_names=[output_name], verbose=False)
    program.save(str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    proto.producer_name = "facemark"
    onnx.save(proto, str(path))


def write_tflite(job: QuantJob, tuner: FineTuner) -> QuantResult:
    """tflite_int8_full_qat: the fine-tuned float weights -> ONNX -> onnx2tf full integer."""
    from facemark.convert.onnx import export_onnx
    from facemark.quantize import tflite_int8

    source = export_onnx(tuner.float_model(), job.work_dir / "qat_fp32.onnx", job.size, job.cfg.export.opset)
    files: dict[str, Path] = {}
    tflite_int8.convert(job, job.cfg.quantize.tflite_io, files, source=source)
    produced = tflite_int8.full_integer(job, files, {})
    if produced is None:
        raise RuntimeError(f"onnx2tf wrote no *_full_integer_quant.tflite (see {job.work_dir / 'tflite_int8'})")
    description = "quantisation-aware fine-tuned weights; " + tflite_int8.description(
        True, job.cfg.quantize.tflite_io, job)
    extra = {"int8_macs": tflite_int8.int8_macs(produced), "qat": tuner.record()}
    return tflite_int8.write_tflite(job, ROWS["tflite"], produced, description, job.cfg.quantize.tflite_io,
                                    calibrated=True, extra=extra, source=QAT_CHECKPOINT)


WRITERS = {"onnx": write_onnx, "tflite": write_tflite}
