"""The int8 study table: float, plain PTQ, mixed precision and QAT rows of validated runs, side by side.

    python benchmarks/int8_table.py runs/300w_v2 runs/300w_v3 runs/300w_lite0

Reads each RUN's validation/validation.json (from `facemark validate RUN`) and export/manifest.json.
One line per artifact that ran: method (float, PTQ, mixed, QAT), test NME, change against the
run's PyTorch row, landmark deviation from PyTorch in crop pixels (p99 over every point of every
face, and max), share of multiply-adds in int8, size, batch-1 latency (median, the thread count
validate used) and the gate's verdict (ok, FAIL, or sup: failing but superseded by a passing row).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from facemark.contract import ArtifactEntry
from facemark.manifest import load_manifest
from facemark.validation_row import ValidationRow, read_rows

HEADER = ("model", "artifact", "method", "NME", "dNME %", "p99 px", "max px", "int8 MACs", "MB", "ms", "gate")


def method(entry: ArtifactEntry) -> str:
    """What kind of row an artifact is, from its manifest entry."""
    if not entry.is_int8:
        return "float"
    if "qat" in entry.details:
        return "QAT"
    if entry.details.get("float_layers"):
        return "mixed"
    return "PTQ" if "calibration" in entry.details else "dynamic"


def verdict(row: ValidationRow) -> str:
    gate = row.gate or {}
    if gate.get("passed"):
        return "ok"
    return "sup" if gate.get("superseded_by") else "FAIL"


def run_rows(run: Path) -> list[tuple[str, ...]]:
    """The table lines of one validated run (rows that ran; PyTorch first)."""
    path = run / "validation" / "validation.json"
    rows = read_rows(json.loads(path.read_text()), path)
    artifacts = load_manifest(run / "export").artifacts
    config = run / "config.yaml"
    model = yaml.safe_load(config.read_text())["model"]["arch"] if config.is_file() else run.name
    lines = []
    for row in rows:
        if not row.evaluated:
            continue
        entry = artifacts.get(row.name)
        parity = row.parity or {}
        macs = entry.details.get("int8_macs") if entry else None
        lines.append((model, row.name, method(entry) if entry else "float",
                      f"{row.nme:.5f}", f"{100 * row.delta['rel']:+.2f}",
                      _num(parity.get("p99_px")), _num(parity.get("max_px")),
                      "-" if macs is None else f"{100 * macs:.1f} %", f"{row.size_bytes / 1e6:.2f}",
                      f"{row.latency['median_ms']:.2f}", verdict(row)))
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "validation" / "validation.json").is_file()]
    if missing:
        print(f"int8_table: no validation/validation.json in {', '.join(missing)} (run `facemark validate RUN`)",
              file=sys.stderr)
        return 2
    lines = [HEADER, *(line for run in args.runs for line in run_rows(run))]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for line in lines[1:]:
        print("| " + " | ".join(line) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
