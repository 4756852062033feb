"""The backend table (facemark/backends.py) is the only list of artifact formats: every choice, row,
dispatch and runner is derived from it, and no other module names two formats in one literal."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from facemark.artifacts import ARTIFACTS, qat_row
from facemark.backends import BACKENDS, FORMATS, QAT_FORMATS, backend
from facemark.errors import ArtifactError

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("facemark", "train", "convert", "quantize", "validate", "benchmarks")


def _format_lists(path: Path) -> list[tuple[int, list[str]]]:
    """(line, names) of every list, tuple, set or dict-keys literal in `path` naming two or more
    formats or format suffixes."""
    names = set(FORMATS) | {row.suffix for row in BACKENDS.values()}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [key for key in node.keys if key is not None]
        else:
            continue
        named = {item.value for item in items if isinstance(item, ast.Constant) and item.value in names}
        if len(named) >= 2:
            found.append((node.lineno, sorted(named)))
    return found


def test_no_module_but_the_table_lists_the_formats(tmp_path):
    table = REPO / "facemark" / "backends.py"
    lists = {f"{path.relative_to(REPO)}:{line}": named for folder in SOURCES
             for path in sorted((REPO / folder).rglob("*.py")) if path != table
             for line, named in _format_lists(path)}
    assert not lists, f"format lists outside facemark/backends.py: {lists}"
    listing = tmp_path / "listing.py"   # the scan can fail: it finds the lists of the old code
    listing.write_text('SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}\nMODELS = (".pt", ".onnx", ".mlpackage")\n')
    assert _format_lists(listing) == [(1, ["onnx", "tflite"]), (2, [".mlpackage", ".onnx"])]


def test_every_choice_and_row_comes_from_the_table():
    from facemark.config_schema import ExportConfig, QuantizeConfig
    from facemark.verbs import FORMAT_CHOICES

    assert FORMAT_CHOICES == [*BACKENDS, "all"]
    def allowed(section, key: str) -> str:
        return section.__dataclass_fields__[key].metadata["rule"].allowed

    assert allowed(ExportConfig, "formats").endswith(f"from {', '.join(FORMATS)}, all")
    assert allowed(QuantizeConfig, "formats").endswith(f"from {', '.join(FORMATS)}, all")
    assert allowed(QuantizeConfig, "qat_formats").endswith(f"from {', '.join(QAT_FORMATS)}, all")
    assert {row.format for row in ARTIFACTS.values()} == set(BACKENDS)
    for fmt, row in BACKENDS.items():
        floats = {a.precision for a in ARTIFACTS.values() if a.format == fmt and a.producer == "export"}
        assert floats == set(row.float_precisions)
        assert ARTIFACTS[row.int8_from].producer == "export"
        int8 = {a.name for a in ARTIFACTS.values() if a.format == fmt and a.producer == "quantize"}
        assert {f"{fmt}_int8_{spec.tag}" for spec in row.int8} <= int8
        assert all(a.file.endswith(row.suffix) for a in ARTIFACTS.values() if a.format == fmt)
    assert [qat_row(fmt).name for fmt in QAT_FORMATS] == ["onnx_int8_qdq_u8s8_qat", "tflite_int8_full_qat"]


@pytest.mark.parametrize("fmt", list(BACKENDS))
def test_each_row_names_modules_that_hold_its_stage_functions(fmt):
    """The import strings resolve: converter.convert, quantizer.planned/quantize (and write_qat
    where the format has a QAT row), and a Runner subclass whose name is the table's."""
    from facemark.runtime import Runner

    row = backend(fmt)
    assert callable(importlib.import_module(row.converter).convert)
    quantizer = importlib.import_module(row.quantizer)
    assert callable(quantizer.planned) and callable(quantizer.quantize)
    assert hasattr(quantizer, "write_qat") == (fmt in QAT_FORMATS)
    assert issubclass(row.runner_class(), Runner)


def test_an_unknown_format_is_refused_naming_the_known():
    with pytest.raises(ArtifactError, match="unknown artifact format 'tflitee'; known: onnx, tflite, coreml"):
        backend("tflitee")


def test_the_platform_rule_is_the_tables(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert BACKENDS["onnx"].runs_here() and not BACKENDS["coreml"].runs_here()
    assert BACKENDS["coreml"].where_it_runs() == "needs macOS"
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert BACKENDS["coreml"].runs_here()
