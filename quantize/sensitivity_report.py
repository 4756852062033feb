"""The --explain report of per-layer sensitivity: sensitivity.json (every layer), sensitivity.md
(top offenders per format) and sensitivity.png (their SQNR as bars), under RUN/export/sensitivity/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


# the report lists this many offenders in the markdown and the plot (the JSON keeps every layer)
TOP_LISTED = 15


def write_explain(out_dir: Path, reports: dict[str, dict[str, Any]]) -> list[Path]:
    """Write sensitivity.json (every layer), sensitivity.md (top offenders per format) and
    sensitivity.png (bar chart of the top offenders' SQNR) into `out_dir` -> the paths. Formats
    not in `reports` keep their sections from an earlier run.
    `reports`: {format: {"artifact", "inputs", "layers": rows from *_layer_errors}}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = out_dir / "sensitivity.json", out_dir / "sensitivity.md", out_dir / "sensitivity.png"
    if json_path.is_file():   # a run over one format keeps the other formats' sections
        reports = {**json.loads(json_path.read_text()).get("formats", {}), **reports}
    json_path.write_text(json.dumps({"schema": "facemark.sensitivity/1", "formats": reports}, indent=2))
    md_path.write_text(markdown(reports))
    _plot(png_path, reports)
    return [json_path, md_path, png_path]


def markdown(reports: dict[str, dict[str, Any]]) -> str:
    """The top TOP_LISTED offenders of each format as markdown tables."""
    lines = ["# int8 sensitivity (per layer, calibration crops)", "",
             "SQNR: signal-to-quantisation-noise ratio of the layer's own int8 output in dB (higher is better; "
             "below ~20 dB the layer's noise is over a tenth of its signal). Layers listed worst first; "
             "`macs`: multiply-adds the layer costs (what keeping it in float takes from the int8 share).", ""]
    for fmt, report in reports.items():
        total = sum(r["macs"] for r in report["layers"]) or 1
        lines += [f"## {fmt}: {report['artifact']} ({report['inputs']} crops, {len(report['layers'])} layers)", "",
                  "| rank | layer | op | SQNR dB | accumulated SQNR dB | MACs % |", "|---|---|---|---|---|---|"]
        for i, row in enumerate(report["layers"][:TOP_LISTED], 1):
            accumulated = row.get("xmodel_sqnr_db")
            lines.append(f"| {i} | `{row['layer']}` | {row['op']} | {row['sqnr_db']:.1f} | "
                         f"{'-' if accumulated is None else f'{accumulated:.1f}'} | {100 * row['macs'] / total:.2f} |")
        lines.append("")
    return "\n".join(lines)


def _plot(path: Path, reports: dict[str, dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(reports), 1), figsize=(7 * max(len(reports), 1), 6), squeeze=False)
    for ax, (fmt, report) in zip(axes[0], reports.items()):
        top = report["layers"][:TOP_LISTED][::-1]
        ax.barh([_short(r["layer"]) for r in top], [r["sqnr_db"] for r in top], color="tab:red")
        ax.set_xlabel("own int8 SQNR, dB (higher is better)")
        ax.set_title(f"{fmt}: worst {len(top)} layers")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]
