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
    RUN/schemes/SCHEME/   a run folder of each extra scheme     (train with data.sets)

A leaf: it imports nothing of facemark but the errors (the modules that write these files import
their names from here), so any module may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import Any

from facemark.errors import DataError

LOG_NAME = "facemark.log"
LOCK_NAME = ".facemark.lock"
MANIFEST_NAME = "manifest.json"


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

    def scheme_run(self, scheme: str) -> RunDir:
        """The one-scheme run folder of extra scheme `scheme` (facemark.train.multiset)."""
        return RunDir(self.root / "schemes" / scheme)

    def data_root(self, given: Path | str | None, checkpoint: dict[str, Any]) -> Path:
        """The dataset a verb reads: `--data` when given, else the one best.pt recorded at training;
        DataError naming the checkpoint when neither says, or naming the folder when it is missing."""
        root = given if given is not None else checkpoint.get("data_root")
        if not root:
            raise DataError(f"{self.best}: the checkpoint records no dataset root; pass --data ROOT")
        if not Path(root).is_dir():
            raise DataError(f"{root}: dataset root not found (pass --data ROOT of the dataset this run was "
                            f"trained on)")
        return Path(root)
