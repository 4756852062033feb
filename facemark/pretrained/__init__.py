"""The models that ship inside the package: landmark models a user names instead of training one,
and the torch-free face detector's nets.

    facemark/pretrained/
      ibug68/        manifest.json (the export contract of the shipped artifacts), card.json (data,
                     recipe, test figures, licence: docs/models.md), model_int8_full.tflite, ...
      datatang106/   the same for the Datatang 106-point model
      mtcnn/         pnet.onnx rnet.onnx onet.onnx (facenet-pytorch's MTCNN weights), card.json

A model is named `NAME` (its card's default artifact, the int8 TFLite) or `NAME:ARTIFACT` (an
artifact of its manifest, e.g. `ibug68:onnx_fp32`); `facemark models` lists them. Everything here
is written by `facemark package` (`make models` rebuilds it from the shared data). Nothing in this
module imports numpy, torch or a runtime: it only names files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facemark.errors import ArtifactError
from facemark.io import file_inside

ROOT = Path(__file__).resolve().parent
CARD_NAME = "card.json"
CARD_SCHEMA = "facemark-model-card-v1"


def model_names() -> list[str]:
    """The shipped landmark models (folders with a card and a manifest), sorted."""
    return sorted(folder.name for folder in ROOT.iterdir()
                  if (folder / CARD_NAME).is_file() and (folder / "manifest.json").is_file())


def is_model_name(text: str) -> bool:
    """Whether `text` names a shipped model (`NAME` or `NAME:ARTIFACT`), not a path."""
    return text.split(":", 1)[0] in model_names()


def read_card(folder: Path) -> dict[str, Any]:
    """A packaged model folder's card.json (schema facemark-model-card-v1)."""
    path = Path(folder) / CARD_NAME
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read the model card ({exc})") from exc
    if not isinstance(card, dict) or card.get("schema") != CARD_SCHEMA:
        raise ArtifactError(f"{path}: not a model card (expected schema {CARD_SCHEMA!r})")
    return card


def artifact_of(folder: Path, artifact: str | None = None) -> Path:
    """A packaged model folder -> the file of `artifact` (None: the card's default), checked to be
    a file of that folder listed in its card."""
    folder = Path(folder)
    card = read_card(folder)
    name = artifact or card["default"]
    files = {key: entry["file"] for key, entry in card["artifacts"].items()}
    if name not in files:
        raise ArtifactError(f"{folder}: no artifact {name!r}; this model has {', '.join(sorted(files))}")
    return file_inside(folder, files[name], folder / CARD_NAME, f"artifacts.{name}.file")


def resolve(text: str) -> Path:
    """`NAME` or `NAME:ARTIFACT` -> the artifact file inside the package."""
    name, _, artifact = text.partition(":")
    if name not in model_names():
        raise ArtifactError(f"unknown model {name!r}; shipped models: {', '.join(model_names()) or 'none'}")
    return artifact_of(ROOT / name, artifact or None)


def detector_folder(name: str) -> Path:
    """The folder of a shipped detector's nets (e.g. `mtcnn`)."""
    folder = ROOT / name
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no shipped detector {name!r} (rebuild with `make models`)")
    return folder
