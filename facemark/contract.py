"""The typed contract of an exported run: RUN/export/manifest.json as dataclasses.

`Manifest` = the run-level `RunContract` (scheme, input, output, crop, infer, checkpoint; shared by
every artifact of the run) + one frozen `ArtifactEntry` per written file. Each class reads its JSON
with `from_json` (every field checked against its type hint: a bad document fails naming its key)
and writes it with `to_json`; the JSON layout is the one the Android app reads (ModelContract.java).
`manifest_json_schema()` is the JSON Schema generated from the same type hints, checked in as
docs/manifest.schema.json and checked from Python and from the Java core's tests.

A leaf module: the standard library and facemark's errors and status only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from facemark.errors import ArtifactError
from facemark.status import Status

MANIFEST_SCHEMA = "facemark-manifest-v1"
INPUT_SCALE = "pixels/255, then (x - mean) / std"
POINT_ORDER = "x0, y0, x1, y1, ..."
LATER_CROPS = "tight box of the previous pass's landmarks, crop.margin"


class _Json:
    """from_json / to_json for a dataclass whose fields are JSON values, tuples, dicts, Status or
    other such dataclasses. `None` optional fields are left out of the JSON; an unknown key is
    refused, except in a class with an EXTRA field, which keeps them there."""

    EXTRA: typing.ClassVar[str | None] = None

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest"):
        return _read_dataclass(cls, data, where)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == self.EXTRA:
                out.update(_plain(value))
            elif value is not None:
                out[item.name] = _plain(value)
        return out


@dataclass(frozen=True)
class SchemeFacts(_Json):
    """The landmark scheme: P points; `pupils` two index groups (image-left, image-right, each
    pupil the group's mean), `corners` the outer eye corners (NME normalisers)."""

    name: str
    num_points: int
    pupils: tuple[tuple[int, ...], ...]
    corners: tuple[int, ...]


@dataclass(frozen=True)
class InputSpec(_Json):
    """The S x S RGB crop a model takes: pixels/255, then (x - mean) / std per channel."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color: Literal["RGB"] = "RGB"
    scale: str = INPUT_SCALE


@dataclass(frozen=True)
class OutputSpec(_Json):
    """2P values x0, y0, x1, y1, ... in normalised crop units (P - S/2) / (S/2)."""

    space: str
    formula: str
    values: int
    order: str = POINT_ORDER


@dataclass(frozen=True)
class CropSpec(_Json):
    """Crop side = max(w, h) of the `detector`'s box x (1 + margin), centred on the box."""

    margin: float
    detector: str


@dataclass(frozen=True)
class InferSpec(_Json):
    """Test-time refinement (facemark/runtime/refine.py): `passes` crops, each also run mirrored
    when `flip` (points re-indexed by `flip_permutation`); `model_calls` = passes x (1 + flip)."""

    flip: bool
    passes: int
    model_calls: int
    flip_permutation: tuple[int, ...]
    later_crops: str = LATER_CROPS


@dataclass(frozen=True)
class CheckpointRef(_Json):
    """The checkpoint the artifacts were exported from (relative to the run folder or absolute)."""

    file: str
    sha256: str


@dataclass(frozen=True)
class RunContract(_Json):
    """What every artifact of one run shares: scheme, input crop, output space, crop rule, the
    refinement its users apply (None in manifests from before it: the single pass) and the checkpoint."""

    scheme: SchemeFacts
    input: InputSpec
    output: OutputSpec
    crop: CropSpec
    checkpoint: CheckpointRef
    infer: InferSpec | None = None

    @property
    def size(self) -> int:
        return self.input.size


@dataclass(frozen=True)
class TensorQuantization(_Json):
    """How an integer I/O tensor maps to real values: real = (q - zero_point) * scale."""

    dtype: str
    scale: float
    zero_point: int
    formula: str = "real = (q - zero_point) * scale"


@dataclass(frozen=True)
class InputTensor(_Json):
    """An artifact's input tensor: (1, 3, S, S) NCHW or (1, S, S, 3) NHWC."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    color: str
    preprocessing: str
    quantization: TensorQuantization | None = None


@dataclass(frozen=True)
class OutputTensor(_Json):
    """An artifact's output tensor: (1, 2P) in `space` ("normalised crop", or "crop pixels" when baked)."""

    name: str
    shape: tuple[int, ...]
    space: str
    formula: str
    order: str = POINT_ORDER
    dtype: str | None = None
    quantization: TensorQuantization | None = None


@dataclass(frozen=True)
class ArtifactEntry(_Json):
    """One written file of the export folder (`file` relative to it) and how to feed it. `parity`:
    its figures against PyTorch on real crops; `details`: the facts of its format alone (ONNX opset,
    int8 calibration, int8_macs, float_layers, val_comparison, QAT settings, ...), kept as written."""

    EXTRA: typing.ClassVar[str | None] = "details"

    file: str
    format: str
    precision: str
    layout: Literal["NCHW", "NHWC", "image"]   # image: a Core ML image input (baked)
    sha256: str
    size_bytes: int
    status: Status
    quantization: str = "none"
    input_dtype: str = "float32"
    baked_preprocessing: bool = False
    mode: str | None = None
    input: InputTensor | None = None
    output: OutputTensor | None = None
    parity: dict[str, Any] | None = None
    superseded_by: str | None = None
    made_from: str | None = None    # an int8 row's float artifact (onnx_fp32) or QAT checkpoint (qat/best.pt)
    seconds: float | None = None
    created: str | None = None
    tools: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def is_int8(self) -> bool:
        return "int8" in self.precision or "int8" in self.quantization

    def replaced(self, **changes: Any) -> ArtifactEntry:
        """A copy with fields or `details` keys changed (a detail set to None is removed)."""
        own = {k: v for k, v in changes.items() if k in self.__dataclass_fields__}
        details = {**self.details, **{k: v for k, v in changes.items() if k not in own}}
        return dataclasses.replace(self, **own, details={k: v for k, v in details.items() if v is not None})


@dataclass
class Manifest:
    """RUN/export/manifest.json: the run's contract and its artifacts by name (mutable: stages add
    entries; each entry is frozen). JSON: {"schema", scheme, input, output, crop, infer, checkpoint,
    "artifacts": {name: entry}}."""

    contract: RunContract
    artifacts: dict[str, ArtifactEntry] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise _wrong(where, "a JSON object", data)
        if data.get("schema") != MANIFEST_SCHEMA:
            raise ArtifactError(f"{where}: schema {data.get('schema')!r} is not {MANIFEST_SCHEMA!r}")
        artifacts = data.get("artifacts", {})
        if not isinstance(artifacts, dict):
            raise ArtifactError(f"{where}: 'artifacts' must be a mapping of name to entry")
        sections = {k: v for k, v in data.items() if k not in ("schema", "artifacts")}
        return cls(RunContract.from_json(sections, f"{where}:"),   # its keys are the document's own
                   {str(name): ArtifactEntry.from_json(entry, f"{where}: artifacts.{name}")
                    for name, entry in artifacts.items()})

    def to_json(self) -> dict[str, Any]:
        return {"schema": MANIFEST_SCHEMA, **self.contract.to_json(),
                "artifacts": {name: entry.to_json() for name, entry in self.artifacts.items()}}


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of manifest.json, generated from the dataclasses above."""
    contract = _schema_of(RunContract)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": MANIFEST_SCHEMA,
            "title": "facemark export manifest", "type": "object",
            "required": ["schema", *contract["required"], "artifacts"],
            "properties": {"schema": {"const": MANIFEST_SCHEMA}, **contract["properties"],
                           "artifacts": {"type": "object", "additionalProperties": _schema_of(ArtifactEntry)}},
            "additionalProperties": False}


# --- reading JSON by type hint -------------------------------------------------------------------

def _read_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise _wrong(where, "a JSON object", data)
    hints = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    extra_name = getattr(cls, "EXTRA", None)
    unknown = [key for key in data if key not in fields or key == extra_name]
    if unknown and extra_name is None:
        raise ArtifactError(f"{where.rstrip(':')}: unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    values = {}
    for name, item in fields.items():
        if name == extra_name:
            values[name] = {key: data[key] for key in unknown}
        elif name in data:
            values[name] = _read(hints[name], data[name], _child(where, name))
        elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
            raise ArtifactError(f"{where.rstrip(':')}: missing key {name!r}")
    return cls(**values)


def _child(where: str, name: str) -> str:
    """The key path of field `name` under `where` ("FILE:" for a document's own keys: "FILE: name")."""
    return f"{where} {name}" if where.endswith(":") else f"{where}.{name}"


def _read(kind: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _read(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(kind):
        return _read_dataclass(kind, value, where)
    if kind is Status:
        try:
            return Status(value)
        except ValueError:
            raise ArtifactError(f"{where}: unknown status {value!r} (known: "
                                f"{', '.join(member.value for member in Status)})") from None
    if origin is Literal:
        if value not in args:
            raise _wrong(where, " or ".join(repr(a) for a in args), value)
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _wrong(where, "a list", value)
        return tuple(_read(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _wrong(where, "a JSON object", value)
        return {str(key): _read(args[1], item, f"{where}.{key}") for key, item in value.items()}
    return _read_scalar(kind, value, where)


def _read_scalar(kind: type, value: Any, where: str) -> Any:
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind in (str, bool) and isinstance(value, kind):
        return value
    raise _wrong(where, {float: "a number", int: "an integer", str: "a string", bool: "true or false"}[kind], value)


def _wrong(where: str, expected: str, value: Any) -> ArtifactError:
    return ArtifactError(f"{where}: expected {expected}, got {value!r:.80}")


def _plain(value: Any) -> Any:
    """A field's value as JSON data: dataclasses through their to_json, tuples as lists, Status as its string."""
    if isinstance(value, _Json):
        return value.to_json()
    if isinstance(value, Status):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


# --- the JSON Schema of the same type hints ------------------------------------------------------

_SCALARS = {str: {"type": "string"}, int: {"type": "integer"}, float: {"type": "number"},
            bool: {"type": "boolean"}}


def _schema_of(kind: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return {}
    if origin in (types.UnionType, typing.Union):   # an optional field: absent, or null (read as absent)
        return {"anyOf": [_schema_of(next(a for a in args if a is not type(None))), {"type": "null"}]}
    if dataclasses.is_dataclass(kind):
        return _dataclass_schema(kind)
    if kind is Status:
        return {"enum": [member.value for member in Status]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple:
        return {"type": "array", "items": _schema_of(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1])}
    return dict(_SCALARS[kind])


def _dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    extra_name = getattr(cls, "EXTRA", None)
    fields = [item for item in dataclasses.fields(cls) if item.name != extra_name]
    required = [item.name for item in fields
                if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING]
    return {"type": "object", "required": required,
            "properties": {item.name: _schema_of(hints[item.name]) for item in fields},
            "additionalProperties": extra_name is not None}


if __name__ == "__main__":   # `python -m facemark.contract > docs/manifest.schema.json` (make schema)
    import json

    print(json.dumps(manifest_json_schema(), indent=2))
