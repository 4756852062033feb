"""Every artifact facemark can write, as data: one row per manifest key.

A row says what the artifact is (format, precision, how it is quantised: `mode`), which verb
writes it (`producer`: export, quantize or qat), its file in RUN/export, and, for the rows derived
from another one, that row (`recovers`). Names follow one rule: `{format}_{precision tag}` for float
rows (`_baked` when the normalisation is inside the graph), `{format}_int8_{kind}` for post-training
int8, and `{plain}_mixed` (sensitive layers kept in float, quantize.mixed) and `{plain}_qat`
(quantisation-aware fine-tuned weights) for the rows that recover a plain int8 one; files are
`model_{name without the format}` plus the format's suffix.

`competes` marks the calibrated int8 rows of a format that run on every machine: after every
producer, quantize.selection measures them on val faces and the lowest NME ships (the others get
`superseded_by`), whichever verb ran last.
"""

from __future__ import annotations

from dataclasses import dataclass

from facemark.backends import BACKENDS
from facemark.errors import ConfigError

PRECISION_TAG = {"float32": "fp32", "float16": "fp16"}
ONNX_ACTIVATIONS = {"uint8": "u8s8", "int8": "s8s8"}   # quantize.onnx_activation -> the QDQ row's tag


@dataclass(frozen=True)
class Artifact:
    """One manifest key: what the artifact is and who writes it."""

    name: str
    format: str            # onnx | tflite | coreml
    precision: str         # float32 | float16 | int8
    producer: str          # export | quantize | qat
    mode: str              # how it is quantised, as tables show it ("none" for float rows)
    recovers: str | None = None   # the plain int8 row a mixed or QAT row recovers
    competes: bool = False      # a calibrated int8 row selection measures (see the module docstring)

    @property
    def file(self) -> str:
        """Its file in RUN/export, e.g. model_fp16.tflite, model_int8_qdq_u8s8_mixed.onnx."""
        return "model_" + self.name.removeprefix(f"{self.format}_") + BACKENDS[self.format].suffix


def _float_rows() -> list[Artifact]:
    return [Artifact(float_name(fmt, precision, baked), fmt, precision, "export", "none")
            for fmt, backend in BACKENDS.items() for precision in backend.float_precisions for baked in (False, True)]


def _int8_rows() -> list[Artifact]:
    """The backends' int8 rows (facemark.backends.Int8Row): the competing plain rows first, then
    their mixed and QAT recoveries, then the others, each group in table order."""
    specs = [(fmt, row) for fmt, backend in BACKENDS.items() for row in backend.int8]
    plain = [Artifact(f"{fmt}_int8_{row.tag}", fmt, "int8", "quantize", row.mode, competes=row.competes)
             for fmt, row in specs]
    rows = [row for row in plain if row.competes]
    rows += [Artifact(f"{row.name}_mixed", row.format, "int8", "quantize", f"{row.mode}, sensitive layers float",
                      recovers=row.name, competes=True) for row, (_, spec) in zip(plain, specs) if spec.mixed]
    rows += [Artifact(f"{row.name}_qat", row.format, "int8", "qat", spec.qat, row.name, True)
             for row, (_, spec) in zip(plain, specs) if spec.qat]
    return rows + [row for row in plain if not row.competes]


def qat_row(fmt: str) -> Artifact:
    """The registry row `facemark qat` writes for format `fmt` (one of facemark.backends.QAT_FORMATS)."""
    return next(row for row in ARTIFACTS.values() if row.producer == "qat" and row.format == fmt)


def float_name(fmt: str, precision: str, baked: bool) -> str:
    """Manifest key of a float row, e.g. onnx_fp32, tflite_fp16, coreml_fp32_baked."""
    return f"{fmt}_{PRECISION_TAG[precision]}" + ("_baked" if baked else "")


ARTIFACTS: dict[str, Artifact] = {row.name: row for row in _float_rows() + _int8_rows()}


def artifact(name: str) -> Artifact:
    """The registry row of manifest key `name`; an unknown one is a ConfigError listing the known."""
    if name not in ARTIFACTS:
        raise ConfigError(f"unknown artifact {name!r}; known: {', '.join(ARTIFACTS)}")
    return ARTIFACTS[name]


def making_command(name: str, run: str) -> str:
    """The command that writes artifact `name` into RUN/export, e.g. `facemark export RUN --format onnx`
    (names outside the table: `facemark export RUN`)."""
    row = ARTIFACTS.get(name)
    if row is None or row.producer == "export":
        baked = " --bake-preprocessing" if name.endswith("_baked") else ""
        return f"facemark export {run}" + (f" --format {row.format}{baked}" if row is not None else "")
    return f"facemark qat {run}" if row.producer == "qat" else f"facemark quantize {run} --format {row.format}"


def onnx_static(activation: str) -> Artifact:
    """The static QDQ row of quantize.onnx_activation `activation` (uint8 -> u8s8, int8 -> s8s8)."""
    if activation not in ONNX_ACTIVATIONS:
        raise ConfigError(f"quantize.onnx_activation: expected one of {', '.join(ONNX_ACTIVATIONS)}, "
                          f"got {activation!r}")
    return ARTIFACTS[f"onnx_int8_qdq_{ONNX_ACTIVATIONS[activation]}"]


def mixed_of(plain: str) -> Artifact:
    """The mixed-precision row that recovers int8 row `plain`."""
    return artifact(f"{plain}_mixed")
