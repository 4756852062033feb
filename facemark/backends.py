"""The artifact formats, as one table: each row says everything facemark does with one format.

Every other list of formats is derived from BACKENDS: the config schema's choices (export.formats,
quantize.formats, quantize.qat_formats), the CLI's --format choices, the artifact registry
(facemark.artifacts: suffix, float precisions, int8 rows), export's and quantize's dispatch, the
runners (facemark.runtime.create_runner) and the platform rule. A new format is one row here plus
its modules: the converter (`convert(job) -> list[RowResult]`), the int8 backend (`planned(job)`,
`quantize(job)`, and `write_qat(job, tuner)` when it has a QAT row) and the Runner subclass.
tests/test_backends.py holds that no other module lists two formats.

This module is a leaf (stdlib and facemark.errors only): modules are named as import strings and
loaded by the stage that uses them, so reading the table imports no toolchain.
"""

from __future__ import annotations

import importlib
import platform
from dataclasses import dataclass
from types import ModuleType

from facemark.errors import ArtifactError


@dataclass(frozen=True)
class Int8Row:
    """One int8 artifact of a format: `{format}_int8_{tag}`, quantised as `mode` says.

    competes: a calibrated row quantize.selection measures (the lowest val NME ships); mixed: a
    `{name}_mixed` row recovers it with sensitive layers in float (quantize.mixed); qat: the mode
    of its `{name}_qat` row written by `facemark qat` (None: no QAT row)."""

    tag: str
    mode: str
    competes: bool = False
    mixed: bool = False
    qat: str | None = None


@dataclass(frozen=True)
class Backend:
    """One artifact format: its files, precisions, int8 rows and the modules of each stage."""

    name: str                          # the --format choice and the manifest entry's `format`
    suffix: str                        # the file's suffix in RUN/export
    layout: str                        # input layout of its artifacts without baked preprocessing
    float_precisions: tuple[str, ...]  # what `facemark export` writes (each plain and baked)
    int8: tuple[Int8Row, ...]          # what `facemark quantize` (and `facemark qat`) write
    int8_from: str                     # the float artifact its int8 rows start from
    converter: str                     # module with convert(job): its float artifacts
    quantizer: str                     # module with planned(job), quantize(job) [, write_qat(job, tuner)]
    runner: str                        # "module:Class" of the Runner that runs its artifacts
    platforms: tuple[str, ...] = ()    # platform.system() values it runs on (empty: all)
    extra: str = "export"              # the optional dependency group of its toolchain

    def runs_here(self) -> bool:
        """True when this machine can run its artifacts (Core ML exists only on macOS)."""
        return not self.platforms or platform.system() in self.platforms

    def where_it_runs(self) -> str:
        """'runs only on macOS' style note for a row that cannot run here."""
        names = {"Darwin": "macOS"}
        return "needs " + " or ".join(names.get(p, p) for p in self.platforms)

    def module(self, stage: str) -> ModuleType:
        """The module of `stage` ("converter" or "quantizer"), imported now."""
        return importlib.import_module(getattr(self, stage))

    def runner_class(self) -> type:
        """The Runner subclass of this format, imported now."""
        module, _, name = self.runner.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def qat_rows(self) -> tuple[Int8Row, ...]:
        return tuple(row for row in self.int8 if row.qat)


BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (
    Backend("onnx", ".onnx", "NCHW", ("float32",),
            (Int8Row("qdq_u8s8", "static QDQ u8s8", competes=True, mixed=True, qat="QAT QDQ u8s8"),
             Int8Row("qdq_s8s8", "static QDQ s8s8", competes=True, mixed=True),
             Int8Row("dynamic", "dynamic")),
            "onnx_fp32", "facemark.convert.onnx", "facemark.quantize.onnx_int8",
            "facemark.runtime.runners:OnnxRunner"),
    Backend("tflite", ".tflite", "NHWC", ("float32", "float16"),
            (Int8Row("full", "full integer", competes=True, mixed=True, qat="QAT full integer"),
             Int8Row("dynamic", "dynamic range")),
            "onnx_fp32", "facemark.convert.tflite", "facemark.quantize.tflite_int8",
            "facemark.runtime.litert:LiteRTRunner"),
    Backend("coreml", ".mlpackage", "NCHW", ("float32", "float16"),
            (Int8Row("w8", "W8 weight-only"), Int8Row("w8a8", "W8A8")),
            "coreml_fp32", "facemark.convert.coreml", "facemark.quantize.coreml_int8",
            "facemark.runtime.runners:CoreMLRunner", platforms=("Darwin",)),
)}

FORMATS: tuple[str, ...] = tuple(BACKENDS)
QAT_FORMATS: tuple[str, ...] = tuple(name for name, backend in BACKENDS.items() if backend.qat_rows)


def backend(name: str) -> Backend:
    """The row of format `name`; an unknown one is an ArtifactError listing the known."""
    if name not in BACKENDS:
        raise ArtifactError(f"unknown artifact format {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name]
