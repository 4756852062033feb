"""`facemark benchmark`: the paper's architecture figure, NME against CPU latency, GPU latency,
GFLOPs and parameters, one point per config (configs/arch/*.yaml).

Each config is trained in OUT/runs/<config name>/ (reused when finished, see experiments.py) and
evaluated on the split; then, with no training running, every model's costs are measured the
same way (train/costs.py). Writes OUT/benchmark.csv, benchmark.json, benchmark.md and
benchmark.png. A config that fails with a user error (e.g. missing pretrained weights) is a row
with status "failed" and its message; the others still run and the exit code is 1.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from pathlib import Path

from facemark.io import atomic_write_text
from facemark.rundir import RunDir
from facemark.train.experiments import Budget, Experiment, markdown_table, prepare_experiments, run_all

COLUMNS = ["name", "arch", "input_size", "epochs", "status", "nme_pupil", "nme_corner", "fr@0.1", "auc@0.1",
           "faces", "params_m", "gflops", "cpu_ms", "gpu_ms", "cpu_threads", "gpu_name", "config", "run_dir",
           "error"]


def _train_all(experiments: list[Experiment], data_root: Path, split: str) -> list[dict]:
    rows = []
    for experiment, row, result in run_all(experiments, data_root, split):
        row["cfg"] = experiment.cfg
        if result is not None:
            metrics = result["metrics"]
            row.update({key: metrics[key] for key in ("nme_pupil", "nme_corner", "fr@0.1", "auc@0.1")},
                       faces=metrics["count"])
        rows.append(row)
    return rows


def _measure_all(rows: list[dict], threads: int | None, warmup: int | None, runs: int | None) -> None:
    """Costs of every trained row, measured after all training so that nothing competes for the CPU."""
    from facemark.model import load_checkpoint
    from facemark.train.costs import measure_costs

    for row in rows:
        if row["status"] == "failed":
            continue
        cfg = row["cfg"]
        model, _, _ = load_checkpoint(RunDir(row["run_dir"]).best)
        costs = measure_costs(model, cfg.data.input_size, threads or cfg.validate.threads,
                              warmup if warmup is not None else cfg.validate.warmup, runs or cfg.validate.runs)
        row.update(params_m=costs["params"] / 1e6, gflops=costs["gflops"], cpu_ms=costs["cpu_ms"],
                   gpu_ms=costs["gpu_ms"], cpu_threads=costs["cpu_threads"], gpu_name=costs["gpu_name"])
        gpu = "no GPU" if costs["gpu_ms"] is None else f"{costs['gpu_ms']:.2f} ms GPU"
        print(f"[{row['name']}] {costs['params'] / 1e6:.2f} M params, {costs['gflops']:.3f} GFLOPs, "
              f"{costs['cpu_ms']:.2f} ms CPU ({costs['cpu_threads']} thread(s)), {gpu}")


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table_row(row: dict) -> list[str]:
    gpu = "no GPU" if row.get("gpu_ms") is None and row["status"] != "failed" else _fmt(row.get("gpu_ms"), 2)
    status = row["status"] + (f": {row['error']}" if row.get("error") else "")
    return [row["name"], _fmt(row.get("arch")), _fmt(row.get("input_size")), _fmt(row.get("epochs")),
            _fmt(row.get("nme_pupil")), _fmt(row.get("fr@0.1")), _fmt(row.get("params_m"), 2),
            _fmt(row.get("gflops"), 3), _fmt(row.get("cpu_ms"), 2), gpu, status]


def _report(rows: list[dict], budget: Budget, data_root: Path, split: str) -> str:
    table = markdown_table(["config", "arch", "input", "epochs", "NME (inter-pupil)", "FR@0.1", "params (M)",
                            "GFLOPs", "CPU ms", "GPU ms", "status"], [_table_row(r) for r in rows])
    threads = "/".join(sorted({str(r["cpu_threads"]) for r in rows if r.get("cpu_threads")})) or "-"
    gpus = ", ".join(sorted({r["gpu_name"] for r in rows if r.get("gpu_name")})) or "no GPU (no CUDA device)"
    caveat = " - not comparable to the paper's full training" if budget.reduced else ""
    cpu = platform.processor() or platform.machine()
    return "\n".join([f"# facemark benchmark: {data_root} ({split} split)", "", f"**{budget.describe()}**{caveat}",
                      "", table, "",
                      f"CPU latency: batch 1, {threads} thread(s), median after warm-up, on {cpu}; "
                      f"GPU latency: {gpus}. GFLOPs count a multiply-add as 2 FLOPs."]) + "\n"


def _figure(rows: list[dict], budget: Budget, path: Path) -> Path:
    from facemark.plots import plot_panels

    done = [r for r in rows if r["status"] != "failed"]

    def points(key: str) -> list[tuple[str, float, float]]:
        return [(r["name"], r[key], r["nme_pupil"]) for r in done if r.get(key) is not None]

    threads = done[0]["cpu_threads"] if done else "?"
    panels = [("NME vs CPU latency", f"CPU latency, batch 1, {threads} thread(s) [ms]", points("cpu_ms"), None),
              ("NME vs GPU latency", "GPU latency, batch 1 [ms]", points("gpu_ms"), "no GPU"),
              ("NME vs GFLOPs", "GFLOPs (multiply-add = 2)", points("gflops"), None),
              ("NME vs parameters", "parameters [M]", points("params_m"), None)]
    title = "facemark benchmark" + (f" ({budget.describe()})" if budget.reduced else "")
    return plot_panels(panels, "NME (inter-pupil)", path, title=title)


def _write(rows: list[dict], out_dir: Path, budget: Budget, data_root: Path, split: str) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "benchmark.csv", buffer.getvalue())
    summary = {"data_root": str(data_root), "split": split, "budget": budget.to_dict(),
               "machine": {"cpu": platform.processor() or platform.machine(), "platform": platform.platform()},
               "rows": [{key: row.get(key) for key in COLUMNS} for row in rows]}
    atomic_write_text(out_dir / "benchmark.json", json.dumps(summary, indent=2) + "\n")
    report = _report(rows, budget, data_root, split)
    atomic_write_text(out_dir / "benchmark.md", report)
    _figure(rows, budget, out_dir / "benchmark.png")
    return report


def run_benchmark(configs: list[Path], data_root: Path, out_dir: Path, budget: Budget, overrides: list[str],
                  split: str = "test", threads: int | None = None, warmup: int | None = None,
                  runs: int | None = None) -> int:
    """Train/evaluate/measure every config (files or folders of *.yaml) -> exit code (0: all rows ok).

    threads/warmup/runs default to each config's validate.threads/warmup/runs.
    """
    out_dir = Path(out_dir)
    experiments = prepare_experiments(configs, overrides, budget, out_dir, Path(data_root))
    rows = _train_all(experiments, Path(data_root), split)
    _measure_all(rows, threads, warmup, runs)
    print(_write(rows, out_dir, budget, Path(data_root), split))
    print(f"wrote {out_dir / 'benchmark.png'}, benchmark.csv, benchmark.json, benchmark.md")
    return 1 if any(r["status"] == "failed" for r in rows) else 0
