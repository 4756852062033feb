"""A validation row: what `facemark validate` measured for one artifact (or the PyTorch checkpoint),
one element of validation.json's "rows" (validate/report.py has the whole document).

The contract between the validate stage, which writes rows, and their readers (`facemark package`,
a --baseline): it lives in the core so both sides import it. The row is filled in stages
(validate/run.py: identity and sha256 check; context.py: the measured figures; gate.py: delta and
verdict), so it is a mutable dataclass; `to_json` writes every field
(null when not measured) and `from_json` reads a report back (a --baseline, `facemark package`).
Figure groups stay JSON objects, their keys documented per field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facemark.errors import ArtifactError
from facemark.status import Status


@dataclass
class ValidationRow:
    """One artifact's row; `status` is a facemark.status word, with ": why" for the failed kinds."""

    name: str                       # "pytorch" or the manifest's artifact name
    format: str
    file: str | None
    precision: str | None
    quantization: str | None        # the manifest's ("none" for a float artifact)
    mode: str                       # display label: how it is quantised, or its precision
    layout: str | None
    input_dtype: str | None
    baked_preprocessing: bool
    size_bytes: int | None
    sha256: str = "n/a"             # "ok" | "mismatch" | "missing" | "n/a"
    status: str = Status.OK.value   # "ok" | "not run: needs macOS" | "refused: ..." | "failed: ..."
    error: str | None = None
    runtime: dict[str, Any] | None = None    # runtime, version, delegate, threads, ...
    # facemark.metrics.summarize in image pixels: nme_pupil, nme_corner, fr@0.1, auc@0.1, fr@0.08,
    # auc@0.08, p50, p90, p95, p99, regions, count
    accuracy: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None      # reference, reference_nme, abs, rel (gate.delta)
    # crop pixels vs PyTorch: mean_px, p99_px, max_px, worst [{stem, max_px, mean_px}]
    parity: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None    # median_ms, p90_ms, mean_ms, min_ms, runs, warmup
    stability: dict[str, Any] | None = None  # validate/stability.py: stability (jitter), shift, noise, p90, ...
    infer: dict[str, Any] | None = None      # the refinement this row ran (the report's "infer")
    # refined figures beside the single pass's: infer, accuracy, delta, parity, latency (+ calls)
    refined: dict[str, Any] | None = None
    video: dict[str, Any] | None = None      # validate/video.py: jitter, raw_jitter, lag, nme, ... or {error}
    gate: dict[str, Any] | None = None       # passed, reasons, superseded_by (a failing row replaced)
    superseded_by: str | None = None         # the manifest's: the int8 row that ships instead
    int8_macs: float | None = None           # share of multiply-adds in int8
    float_layers: int = 0                    # layers kept in float
    seconds: float = 0.0                     # wall time of the row's child processes

    @property
    def state(self) -> Status:
        return Status.of(self.status)

    @property
    def evaluated(self) -> bool:
        """Measured: its accuracy, parity and latency are there."""
        return self.state == Status.OK and self.accuracy is not None

    @property
    def nme(self) -> float:
        """Inter-pupil NME of the single pass (an evaluated row only)."""
        return self.accuracy["nme_pupil"]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": str(self.status)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> ValidationRow:
        """A row of a validation.json; ArtifactError naming `where` and the key when malformed."""
        fields = {item.name: item for item in dataclasses.fields(cls)}
        if not isinstance(data, dict):
            raise ArtifactError(f"{where}: a row must be a JSON object, got {data!r:.60}")
        unknown = sorted(set(data) - set(fields))
        missing = [name for name, item in fields.items()
                   if name not in data and item.default is dataclasses.MISSING]
        if unknown or missing:
            raise ArtifactError(f"{where}: row {data.get('name')!r}: "
                                + (f"unknown keys {unknown}" if unknown else f"missing keys {missing}"))
        try:
            Status.of(data.get("status", Status.OK))
        except ValueError as exc:
            raise ArtifactError(f"{where}: status: {exc}") from None
        return cls(**data)


def read_rows(report: dict[str, Any], path: Path) -> list[ValidationRow]:
    """The rows of a loaded validation.json (ArtifactError naming `path` when one is malformed)."""
    return [ValidationRow.from_json(row, f"{path}: rows[{i}]") for i, row in enumerate(report.get("rows", []))]
