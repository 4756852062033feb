"""The demo's figures as a record: a `make demo` run's validation report -> docs/demo.json, the file
the README's and docs/results.md's demo figures come from (tests/test_readme.py checks that they
quote it, so a figure typed by hand or left from an older run fails the suite).

    /usr/bin/time -f %e make demo            # prints the wall seconds last
    python benchmarks/demo_record.py runs/demo --wall-seconds 540

Recorded: the date of the report, the test faces, PyTorch's inter-pupil NME and FR@0.1, the int8
row that ships per format (the competing row quantize.selection did not supersede) with its NME
change against PyTorch, the gate's verdict and the wall time given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from facemark.artifacts import ARTIFACTS
from facemark.io import atomic_write_text
from facemark.validation_row import read_rows

RECORD = Path(__file__).resolve().parents[1] / "docs" / "demo.json"


def demo_record(run: Path, wall_seconds: float) -> dict[str, Any]:
    """The record of the validated demo run `run` (its RUN/validation/validation.json)."""
    path = run / "validation" / "validation.json"
    report = json.loads(path.read_text())
    rows = {row.name: row for row in read_rows(report, path)}
    ships = {row.format: {"artifact": row.name, "delta_rel": round(row.delta["rel"], 6)}
             for row in rows.values()
             if row.evaluated and row.name in ARTIFACTS and ARTIFACTS[row.name].competes and not row.superseded_by}
    torch_row = rows["pytorch"]
    return {"measured": report["created"][:10], "command": "make demo", "faces": report["data"]["count"],
            "wall_seconds": round(wall_seconds), "pytorch": {"nme_pupil": round(torch_row.nme, 6),
                                                             "fr@0.1": round(torch_row.accuracy["fr@0.1"], 4)},
            "ships": dict(sorted(ships.items())), "gate_passed": report["gate"]["passed"]}


def readme_row(record: dict[str, Any]) -> str:
    """The README results table's demo row, as the record gives it."""
    ships = ", ".join(f"{100 * item['delta_rel']:+.2f} % {fmt.replace('tflite', 'TFLite').replace('onnx', 'ONNX')}"
                      for fmt, item in record["ships"].items())
    verdict = "gate passes" if record["gate_passed"] else "gate fails"
    return (f"| demo, synthetic faces ({record['faces']}) | {record['pytorch']['nme_pupil']:.4f} IP; shipped int8 "
            f"{ships}; {verdict} | {record['measured']} | `make demo` |")


def wall_text(record: dict[str, Any]) -> str:
    minutes, seconds = divmod(record["wall_seconds"], 60)
    return f"{minutes} min {seconds} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the demo's run folder (runs/demo)")
    parser.add_argument("--wall-seconds", type=float, required=True, help="make demo's wall time")
    args = parser.parse_args()
    record = demo_record(args.run, args.wall_seconds)
    atomic_write_text(RECORD, json.dumps(record, indent=2) + "\n")
    print(f"wrote {RECORD}\nREADME row: {readme_row(record)}\nwall: {wall_text(record)}")


if __name__ == "__main__":
    main()
