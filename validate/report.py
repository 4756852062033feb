"""The validation report: terminal table, RUN/validation/validation.json, validation.md and plots.

validation.json, schema "facemark-validation-v1" (keys only ever added, never renamed):
{
  "schema": "facemark-validation-v1", "created": ISO time, "facemark": version,
  "run": RUN, "checkpoint": {"file", "sha256"}, "manifest": {"file"},
  "scheme": name, "input_size": S,
  "data": {"root", "split", "count", "detector", "stems_sha256", "misses", "skipped"},
  "settings": {"machine", "cpu", "isa": [flags], "system", "python", "cores_available",
               "threads" (latency), "eval_workers" (parallel one-thread accuracy processes), "warmup",
               "runs", "batch": 1},
  "preprocess": {"median_ms", "p90_ms", "mean_ms", "min_ms", "runs"}  (uint8 crop -> float input),
  "banner": the x86 warning or null,
  "infer": {"flip", "passes", "model_calls", "label"}: the test-time refinement every row ran
           (facemark/runtime/refine.py; absent in reports from before it: the single pass),
  "gate": {"passed", "max_nme_increase", "max_nme", "max_stability", "reference", "failures": [{"artifact", "reason"}],
           "not_run": [{"artifact", "status"}], "superseded": [{"artifact", "by", "reasons"}]},
  "sensitivity": {"file", "formats": {fmt: {"artifact", "worst": [layer rows]}}} or null (quantize --explain),
  "rows": [ValidationRow.to_json() of each row: facemark/validation_row.py names and explains its fields]
}
In memory `report["rows"]` holds the ValidationRow objects; write_report writes their JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from facemark.io import atomic_write_text
from facemark.status import Status
from facemark.validation_row import ValidationRow

SCHEMA = "facemark-validation-v1"
COLUMNS = ("", "format", "artifact", "mode", "status", "size MB", "NME", "dNME%", "max px dev",
           "jitter", "lat med ms", "lat p90 ms")


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mark(row: ValidationRow) -> str:
    if row.gate.get("superseded_by"):
        return "sup"   # failed, but replaced by a passing mixed-precision artifact
    if not row.gate["passed"]:
        return "FAIL"
    return "ok" if row.status == Status.OK else "--"


def refined_label(report: dict[str, Any]) -> str | None:
    """The refinement's label when the report has refined figures ("flip + 2 passes"), else None."""
    infer = report.get("infer") or {}
    return infer["label"] if infer.get("model_calls", 1) > 1 else None


def columns(report: dict[str, Any]) -> tuple[str, ...]:
    """COLUMNS, then with refinement the refined NME, dNME% and latency beside the single pass's."""
    label = refined_label(report)
    if label is None:
        return COLUMNS
    short = label.replace(" passes", "p").replace(" ", "")   # "flip+2p"
    return (*COLUMNS, f"NME {short}", f"dNME% {short}", f"lat {short} ms")


def _percent(change: dict[str, Any]) -> float | None:
    rel = change.get("rel")
    return None if rel is None else round(100 * rel, 2) + 0.0   # + 0.0: no "-0.00" for a tiny gain


def table_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """One tuple of display strings per row, in columns(report) order."""
    lines = []
    for row in report["rows"]:
        acc, change, par, lat = row.accuracy or {}, row.delta or {}, row.parity or {}, row.latency or {}
        jitter = (row.stability or {}).get("stability")
        line = (_mark(row), row.format, row.name, row.mode, row.status,
                _fmt(row.size_bytes / 1e6 if row.size_bytes is not None else None, ".2f"),
                _fmt(acc.get("nme_pupil"), ".5f"), _fmt(_percent(change), "+.2f"),
                _fmt(par.get("max_px"), ".3f"), _fmt(jitter, ".5f"), _fmt(lat.get("median_ms"), ".2f"),
                _fmt(lat.get("p90_ms"), ".2f"))
        if refined_label(report) is not None:
            refined = row.refined or {}
            line += (_fmt((refined.get("accuracy") or {}).get("nme_pupil"), ".5f"),
                     _fmt(_percent(refined.get("delta") or {}), "+.2f"),
                     _fmt((refined.get("latency") or {}).get("median_ms"), ".2f"))
        lines.append(line)
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The terminal table: one line per artifact, offending rows marked FAIL in the first column."""
    header = columns(report)
    lines = [header, *table_rows(report)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def gate_summary(report: dict[str, Any]) -> list[str]:
    gate = report["gate"]
    bounds = (f"max NME increase {_fmt(gate['max_nme_increase'], '+.2%')}, max NME "
              f"{_fmt(gate['max_nme'], 'g')}, max jitter {_fmt(gate.get('max_stability'), 'g')}, "
              f"reference: {gate['reference']}")
    lines = [f"gate {'PASSED' if gate['passed'] else 'FAILED'} ({bounds})"]
    lines += [f"  FAIL {item['artifact']}: {item['reason']}" for item in gate["failures"]]
    lines += [f"  listed, not evaluated: {item['artifact']} ({item['status']})" for item in gate["not_run"]]
    lines += [f"  superseded: {item['artifact']} by {item['by']} ({'; '.join(item['reasons'])})"
              for item in gate.get("superseded", [])]
    return lines


def print_report(report: dict[str, Any], out: TextIO | None = None) -> None:
    """Banner, settings line, table and gate verdict on the terminal."""
    out = out or sys.stdout
    settings, pre = report["settings"], report["preprocess"]
    if report["banner"]:
        print(f"!! {report['banner']}", file=out)
    print(f"{report['data']['count']} faces ({report['data']['split']}, detector {report['data']['detector']}); "
          f"latency: batch 1, {settings['threads']} thread(s), {settings['warmup']} warm-up + "
          f"{settings['runs']} runs, model time only; preprocessing {pre['median_ms']:.2f} ms; "
          f"{settings['cpu']} ({settings['machine']}; {' '.join(settings['isa']) or 'no ISA flags read'})", file=out)
    label = refined_label(report)
    if label is not None:
        print(f"refined: {label} ({report['infer']['model_calls']} model calls per face; refined latency: "
              f"all of them), beside the single pass", file=out)
    print(format_table(report), file=out)
    for line in video_lines(report):
        print(line, file=out)
    print("\n".join(gate_summary(report)), file=out)


def markdown(report: dict[str, Any]) -> str:
    """validation.md: the same table as the terminal plus settings, gate, worst images and regions."""
    settings = report["settings"]
    lines = [f"# Validation of {report['run']}", ""]
    if report["banner"]:
        lines += [f"> **{report['banner']}**", ""]
    lines += [f"- data: {report['data']['root']} split `{report['data']['split']}`, {report['data']['count']} faces, "
              f"detector `{report['data']['detector']}` ({len(report['data']['misses'])} misses)",
              f"- machine: {settings['cpu']} ({settings['machine']}), ISA: {', '.join(settings['isa']) or '-'}, "
              f"{settings['system']}, Python {settings['python']}",
              f"- latency: batch 1, {settings['threads']} thread(s), {settings['warmup']} warm-up, "
              f"{settings['runs']} timed runs, model time only; preprocessing "
              f"{report['preprocess']['median_ms']:.2f} ms (median, timed once)"]
    if refined_label(report) is not None:
        lines.append(f"- refinement: {refined_label(report)} ({report['infer']['model_calls']} model calls per "
                     f"face; its latency sums them), beside the single pass")
    header = columns(report)
    lines += ["", "| " + " | ".join(c or "gate" for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(report)]
    lines += ["", "## Gate", "", *[f"- {line.strip()}" for line in gate_summary(report)], "", "## Runtimes", ""]
    lines += [f"- {row.name}: " + ", ".join(f"{k} {v}" for k, v in row.runtime.items())
              for row in report["rows"] if row.runtime]
    lines += _stability_lines(report)
    video = video_lines(report)
    if video:
        lines += ["", "## Video (tracked + filtered, drawn clip)", "", *[f"- {line}" for line in video]]
    lines += ["", "## Largest deviations from PyTorch (crop pixels)", ""]
    lines += [f"- {row.name}: " + ", ".join(f"{w['stem']} {w['max_px']:.3f}" for w in row.parity["worst"])
              for row in report["rows"] if row.parity]
    lines += _region_table(report)
    lines += _int8_section(report)
    return "\n".join(lines) + "\n"


def video_lines(report: dict[str, Any]) -> list[str]:
    """One line per row with video figures (validate/video.py); none in reports from before them."""
    lines = []
    for row in report["rows"]:
        video = row.video
        if not video:
            continue
        if "error" in video:
            lines.append(f"video {row.name}: failed: {video['error']}")
            continue
        lag = "-" if video["lag"] is None else f"{video['lag']:+.2f}"
        lines.append(f"video {row.name}: jitter {_fmt(video['jitter'], '.5f')} "
                     f"(raw {_fmt(video['raw_jitter'], '.5f')}), "
                     f"lag {lag} frames, NME {_fmt(video['nme'], '.5f')}, detector on {video['detector_calls']}/"
                     f"{video['frames']} frames ({video['filter']})")
    return lines


def _stability_lines(report: dict[str, Any]) -> list[str]:
    """The stability section: definition, settings and each row's figures by kind."""
    rows = [row for row in report["rows"] if row.stability]
    if not rows:
        return []
    first = rows[0].stability
    lines = ["", "## Stability (jitter column)", "",
             f"RMS landmark movement / inter-pupil distance, median over {first['faces']} faces, under "
             f"{first['draws']} box shifts (up to {first['shift_fraction']:.0%} of the box) and "
             f"{first['draws']} sensor-noise draws (sigma {first['noise_sigma']:g}/255) per face, seed "
             f"{first['seed']}; lower is steadier.", "",
             "| artifact | jitter | shift | noise | p90 |", "|---|---|---|---|---|"]
    lines += [f"| {row.name} | {row.stability['stability']:.5f} | {row.stability['shift']:.5f} | "
              f"{row.stability['noise']:.5f} | {row.stability['p90']:.5f} |" for row in rows]
    return lines


def _int8_section(report: dict[str, Any]) -> list[str]:
    """int8 share of each quantised row and, after `quantize --explain`, the worst layers per format."""
    rows = [row for row in report["rows"] if row.int8_macs is not None]
    lines = []
    if rows:
        lines += ["", "## int8 share (multiply-adds computed in int8)", "",
                  "| artifact | int8 MACs | float layers | superseded by |", "|---|---|---|---|"]
        lines += [f"| {row.name} | {row.int8_macs:.1%} | {row.float_layers} | {row.superseded_by or '-'} |"
                  for row in rows]
    sensitivity = report.get("sensitivity")
    if sensitivity:
        lines += ["", f"## int8 sensitivity (worst layers; full report {sensitivity['file']})", ""]
        for fmt, entry in sensitivity["formats"].items():
            worst = ", ".join(f"`{w['layer']}` {w['sqnr_db']:.1f} dB" for w in entry["worst"])
            lines.append(f"- {fmt} ({entry['artifact']}): {worst}")
    return lines


def _region_table(report: dict[str, Any]) -> list[str]:
    rows = [row for row in report["rows"] if row.accuracy]
    if not rows:
        return []
    regions = list(rows[0].accuracy["regions"])
    lines = ["", "## Accuracy details (inter-pupil NME unless noted)", "",
             "| artifact | NME corner | FR@0.1 | AUC@0.1 | P90 | P95 | P99 | " + " | ".join(regions) + " |",
             "|" + "---|" * (7 + len(regions))]
    for row in rows:
        acc = row.accuracy
        cells = [acc["nme_corner"], acc["fr@0.1"], acc["auc@0.1"], acc["p90"], acc["p95"], acc["p99"],
                 *(acc["regions"][r] for r in regions)]
        lines.append(f"| {row.name} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return lines


def write_report(report: dict[str, Any], out_dir: Path, per_face_nme: dict[str, np.ndarray]) -> dict[str, Path]:
    """Write validation.json, validation.md, ced.png and nme_vs_latency.png into `out_dir`.

    `per_face_nme` maps row name -> (N,) inter-pupil NME for the CED chart (not stored in the JSON).
    """
    from facemark.plots import plot_ced, plot_scatter

    out_dir = Path(out_dir)
    paths = {"json": out_dir / "validation.json", "md": out_dir / "validation.md",
             "ced": out_dir / "ced.png", "scatter": out_dir / "nme_vs_latency.png"}
    document = {**report, "rows": [row.to_json() for row in report["rows"]]}
    atomic_write_text(paths["json"], json.dumps(document, indent=2, allow_nan=False) + "\n")
    atomic_write_text(paths["md"], markdown(report))
    plot_ced(per_face_nme, 0.1, paths["ced"], title="CED of every artifact")
    points = [(row.name, row.latency["median_ms"], row.accuracy["nme_pupil"])
              for row in report["rows"] if row.status == Status.OK]
    points += [(f"{row.name} ({row.refined['infer']['label']})", row.refined["latency"]["median_ms"],
                row.refined["accuracy"]["nme_pupil"]) for row in report["rows"]
               if row.status == Status.OK and row.refined]
    threads = report["settings"]["threads"]
    plot_scatter(points, f"latency median, ms (batch 1, {threads} thread(s))", "NME (inter-pupil)",
                 paths["scatter"], title="NME vs latency")
    return paths
