"""The regression gate: does every artifact keep its NME within the allowed bounds?

Reference NME: this run's PyTorch row, or with --baseline a previous validation.json's row of
the same artifact name (the baseline's PyTorch row for an artifact it did not have; the PyTorch
row itself is then compared with the baseline's PyTorch row, so a retrained checkpoint that got
worse fails too). The baseline must have been measured on the same faces: same data fingerprint
(file names and contents, facemark.data.fingerprint), split, count, stems and detector.

Row verdicts, by status:
- "ok": fails when nme_pupil > max_nme, or (nme - ref) / ref > max_nme_increase (either bound
  may be None = not checked);
- "refused: ..." (sha256 mismatch, file missing): fails. A tampered or replaced artifact is not
  the one that was exported and checked, so it must not pass silently;
- "failed: ..." (the runtime crashed or could not load it): fails. An artifact in the manifest
  that cannot run on its own runtime cannot be shipped as validated;
- "not run: ..." (Core ML off macOS) and "not exported: ...": pass, listed under `not_run`.

With test-time refinement (the report's "infer"), an "ok" row's refined figures are judged by
the same bounds, against the reference's refined NME: what ships (refined) and what the model
does alone (single pass) must both hold. A baseline row is the reference for the refined figures
only when it ran the same refinement; otherwise this run's PyTorch row is.

An int8 row whose manifest entry says `superseded_by` (quantize.selection found another int8 row
of its format, e.g. its mixed-precision or QAT recovery, more accurate on val faces) does not fail
the gate when the row that supersedes it passes: it stays in the table, marked superseded, with
its reasons listed under `superseded`. If the shipped row fails too, both fail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facemark.data.fingerprint import difference
from facemark.errors import ArtifactError
from facemark.io import read_json_document
from facemark.validate.accuracy import delta
from facemark.validation_row import ValidationRow, read_rows
from facemark.status import Status

PYTORCH = "pytorch"


def load_baseline(path: Path, data: dict[str, Any], schema: str) -> dict[str, Any]:
    """Read a previous validation.json and check it was measured on the same faces as `data`:
    the data fingerprint (file names and contents, scheme, detector, count; skipped for a baseline
    from before fingerprints), then whichever of split, count, stems and detector `data` has
    (validate checks the fingerprint alone before cropping, the rest after)."""
    path = Path(path)
    report = read_json_document(path, schema, "validation report", missing="baseline report not found")
    theirs = report.get("data", {})
    change = difference(theirs.get("fingerprint"), data["fingerprint"]) if data.get("fingerprint") else None
    if change:
        raise ArtifactError(f"{path}: baseline was measured on other faces of the {data['fingerprint']['split']} "
                            f"split ({change}); NMEs on different faces do not compare")
    for key in ("split", "count", "stems_sha256", "detector"):
        if key in data and theirs.get(key) != data.get(key):
            raise ArtifactError(f"{path}: baseline was measured on other faces ({key}: {theirs.get(key)!r} "
                                f"there, {data.get(key)!r} here); NMEs on different faces do not compare")
    rows = {row.name: row for row in read_rows(report, path)}
    if PYTORCH not in rows or not rows[PYTORCH].evaluated:
        raise ArtifactError(f"{path}: baseline has no evaluated PyTorch row")
    return {"file": str(path), "rows": rows}


def reference_nme(name: str, rows: dict[str, ValidationRow], baseline: dict[str, Any] | None) -> tuple[str, float]:
    """(label, NME) of the row that artifact `name` is compared with."""
    if baseline is None:
        return PYTORCH, rows[PYTORCH].nme
    theirs = baseline["rows"].get(name)
    if theirs is None or theirs.status != Status.OK:
        theirs, name = baseline["rows"][PYTORCH], PYTORCH
    return f"baseline:{name}", theirs.nme


def refined_reference(name: str, rows: dict[str, ValidationRow], baseline: dict[str, Any] | None,
                      infer: dict[str, Any]) -> tuple[str, float]:
    """(label, NME) the refined figures of artifact `name` are compared with: the baseline's row
    (else its PyTorch row) when it ran the same refinement `infer`, else this run's PyTorch row."""
    def same(row: ValidationRow | None) -> bool:
        refined = (row.refined if row is not None else None) or {}
        return row is not None and row.status == Status.OK and (refined.get("infer") or {}).get("label") == \
            infer["label"]

    if baseline is not None:
        for candidate in (name, PYTORCH):
            if same(baseline["rows"].get(candidate)):
                return f"baseline:{candidate}", baseline["rows"][candidate].refined["accuracy"]["nme_pupil"]
    return PYTORCH, rows[PYTORCH].refined["accuracy"]["nme_pupil"]


def _nme_reasons(nme: float, change: dict[str, Any], max_nme_increase: float | None, max_nme: float | None,
                 what: str = "NME") -> list[str]:
    reasons = []
    if max_nme is not None and nme > max_nme:
        reasons.append(f"{what} {nme:.5f} > max {max_nme:g}")
    rel = change["rel"]
    if max_nme_increase is not None and rel is not None and rel > max_nme_increase:
        reasons.append(f"{what} {nme:.5f} is {rel:+.2%} vs {change['reference']} {change['reference_nme']:.5f} "
                       f"(allowed {max_nme_increase:+.2%})")
    return reasons


def _row_reasons(row: ValidationRow, max_nme_increase: float | None, max_nme: float | None,
                 max_stability: float | None = None) -> list[str]:
    status = row.status
    if Status.of(status) in (Status.REFUSED, Status.FAILED):
        return [f"{status} ({row.error})" if row.error else status]
    if status != Status.OK:
        return []
    reasons = _nme_reasons(row.nme, row.delta, max_nme_increase, max_nme)
    refined = row.refined
    if refined:
        reasons += _nme_reasons(refined["accuracy"]["nme_pupil"], refined["delta"], max_nme_increase, max_nme,
                                f"NME {refined['infer']['label']}")
    jitter = (row.stability or {}).get("stability")
    if max_stability is not None and jitter is not None and jitter > max_stability:
        reasons.append(f"stability {jitter:.5f} > max {max_stability:g} (RMS movement / inter-pupil distance)")
    return reasons


def apply_gate(rows: list[ValidationRow], max_nme_increase: float | None, max_nme: float | None,
               baseline: dict[str, Any] | None = None, max_stability: float | None = None) -> dict[str, Any]:
    """Fill each row's "delta" and "gate" ({"passed", "reasons"}) -> the report's gate section:
    {"passed", "max_nme_increase", "max_nme", "max_stability", "reference", "failures":
    [{"artifact", "reason"}], "not_run": [{"artifact", "status"}]}. A row without a stability
    figure (validate.stability_faces: 0) is not judged on it."""
    by_name = {row.name: row for row in rows}
    failures, not_run = [], []
    for row in rows:
        if row.status == Status.OK:
            label, ref = reference_nme(row.name, by_name, baseline)
            row.delta = delta(row.nme, ref, label)
            if row.refined:
                label, ref = refined_reference(row.name, by_name, baseline, row.refined["infer"])
                row.refined["delta"] = delta(row.refined["accuracy"]["nme_pupil"], ref, label)
        reasons = _row_reasons(row, max_nme_increase, max_nme, max_stability)
        row.gate = {"passed": not reasons, "reasons": reasons}
        failures += [{"artifact": row.name, "reason": reason} for reason in reasons]
        if Status.of(row.status) in (Status.NOT_RUN, Status.NOT_EXPORTED):
            not_run.append({"artifact": row.name, "status": row.status})
    superseded = _superseded(rows, by_name)
    failures = [f for f in failures if f["artifact"] not in superseded]
    return {"passed": not failures, "max_nme_increase": max_nme_increase, "max_nme": max_nme,
            "max_stability": max_stability,
            "reference": f"baseline {baseline['file']}" if baseline else "this run's PyTorch row",
            "failures": failures, "not_run": not_run,
            "superseded": [{"artifact": name, "by": by, "reasons": by_name[name].gate["reasons"]}
                           for name, by in superseded.items()]}


def _superseded(rows: list[ValidationRow], by_name: dict[str, ValidationRow]) -> dict[str, str]:
    """{failing row: the passing row that supersedes it}; marks those rows' gate entries."""
    result = {}
    for row in rows:
        successor = by_name.get(row.superseded_by or "")
        if row.gate["passed"] or successor is None:
            continue
        if successor.status == Status.OK and successor.gate["passed"]:
            row.gate["superseded_by"] = successor.name
            result[row.name] = successor.name
    return result
