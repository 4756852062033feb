"""The one driver of artifact rows for every verb that writes artifacts (export, quantize, qat).

A format's module returns one `RowResult` per registry row (facemark.artifacts) it wrote or failed
to write. `run_rows` runs a module's entry under a failure guard (a broken toolchain fails that
format's planned rows and never stops the others), records every written row in
RUN/export/manifest.json, and `summary_table` prints them all in one layout, parity in one unit:
the distance of the artifact's landmarks to PyTorch's in crop pixels (mean / max) and as a
fraction of the inter-pupil distance (convert.parity.parity_figures).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facemark.artifacts import Artifact
from facemark.manifest import artifact_entry, record_artifact
from facemark.status import Status


@dataclass
class RowResult:
    """One row of a summary table. `file` (relative to the export folder) and `facts` (its manifest
    entry beyond file/sha256/size/tools) are set when the artifact was written."""

    name: str
    mode: str              # how it is quantised (facemark.artifacts.Artifact.mode; "none" for float)
    status: str
    file: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == Status.FAILED


def written(row: Artifact, facts: dict[str, Any]) -> RowResult:
    """The result of registry row `row` written with manifest `facts` (their status included)."""
    return RowResult(row.name, row.mode, facts["status"], row.file, facts)


def error_text(exc: BaseException, limit: int = 300) -> str:
    """'ExcType: first line of the message' (at most `limit` characters of it)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


def attempt(row: Artifact, work: Callable[[], RowResult]) -> RowResult:
    """Run the `work` that writes registry row `row`, timed; any exception becomes a failed row
    naming the artifact, so one artifact's failure never stops the others."""
    start = time.perf_counter()
    try:
        result = work()
    except Exception as exc:  # a converter bug, a crash in a child process, a refused output step
        result = RowResult(row.name, row.mode, Status.FAILED, error=error_text(exc))
    result.seconds = time.perf_counter() - start
    return result


def run_rows(export_dir: Path, planned: list[Artifact], produce: Callable[[], list[RowResult]],
             missing_hint: str = "") -> list[RowResult]:
    """Run one format's `produce` -> its rows, each written one recorded in the manifest.

    An error outside the per-artifact guards (an import, the shared conversion step) fails every
    row in `planned`; an ImportError adds `missing_hint` (which extra to install)."""
    start = time.perf_counter()
    try:
        results = produce()
    except Exception as exc:  # a broken toolchain must not stop the other formats
        error = error_text(exc) + (f" ({missing_hint})" if isinstance(exc, ImportError) and missing_hint else "")
        seconds = time.perf_counter() - start
        results = [RowResult(row.name, row.mode, Status.FAILED, seconds=seconds, error=error) for row in planned]
    for result in results:
        if not result.failed:
            result.facts["seconds"] = round(result.seconds, 1)
            entry = artifact_entry(export_dir, Path(result.file), **result.facts)
            record_artifact(export_dir, result.name, entry)
            result.facts = entry.to_json()   # what the summary prints: the recorded facts
    return results


def summary_table(results: list[RowResult]) -> str:
    """Artifact, mode, status, size, parity vs PyTorch (mean / max point distance in crop px and
    as a fraction of the inter-pupil distance), seconds; errors listed under the table."""
    header = ("artifact", "mode", "status", "size", "parity vs pytorch", "seconds")
    rows = [header]
    for r in results:
        size = f"{r.facts['size_bytes'] / 1e6:.2f} MB" if "size_bytes" in r.facts else "-"
        rows.append((r.name, r.mode, r.status, size, parity_text(r.facts), f"{r.seconds:.1f}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [f"  {r.name}: {r.error}" for r in results if r.failed]
    return "\n".join(lines)


def parity_text(facts: dict[str, Any]) -> str:
    """'0.012/0.051 px, 0.02% IPD (val)' from an entry's parity figures (or its fake-quant simulation)."""
    figures, note = facts.get("parity"), ""
    if figures is None and "simulated_parity" in facts:
        figures, note = facts["simulated_parity"], ", fake-quant sim"
    if figures is None:
        return "not run"
    return f"{figures['mean_px']:.3f}/{figures['max_px']:.3f} px, {figures['nme_ipd']:.2%} IPD ({figures['split']}{note})"
