"""A run folder (RUN) and the files every stage reads or writes in it, named in one place.

    RUN/config.yaml       the resolved config of training       (train)
    RUN/best.pt           the lowest-val-NME checkpoint         (train)
    RUN/last.pt           the resumable checkpoint              (train)
    RUN/metrics.jsonl     one line per epoch                    (train)
    RUN/export/           artifacts and manifest.json           (export, quantize, qat)
    RUN/qat/              the QAT fine-tuning's checkpoints     (qat)
    RUN/validation/       validation.json/.md, plots, landmarks (validate)
    RUN/facemark.log      third-party output of every verb      (all)
    RUN/.facemark.lock    one writer at a time                  (all)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facemark.console import LOG_NAME
from facemark.manifest import MANIFEST_NAME
from facemark.runlock import LOCK_NAME


@dataclass(frozen=True)
class RunDir:
    """The paths of run folder `root` (nothing is created or checked here)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def last(self) -> Path:
        return self.root / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def manifest(self) -> Path:
        return self.export / MANIFEST_NAME

    @property
    def qat(self) -> Path:
        return self.root / "qat"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME
