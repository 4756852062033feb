"""The import rules the code claims (DESIGN.md, facemark/__init__.py), held by reading every module:
imports flow one way, core <- train <- convert <- quantize <- validate, with the application layer
(the CLI and the pipeline, which run the stages) above them all; and the CLI and the Python API start
without the training or conversion stacks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# package folder -> its layer's rank; a module may import its own rank or a lower one
LAYERS = {"facemark": 0, "train": 1, "convert": 2, "quantize": 3, "validate": 4}
STAGES = {"train": 1, "convert": 2, "quantize": 3, "validate": 4}   # facemark.<stage> -> rank
APPLICATION = {"facemark/cli.py", "facemark/verbs.py", "facemark/pipeline.py", "facemark/__main__.py"}


def _imported(path: Path) -> set[str]:
    """Every absolute module name `path` imports, at module level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _rank(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "facemark":
        return None
    return STAGES.get(parts[1], 0) if len(parts) > 1 else 0


def test_imports_flow_one_way():
    broken = []
    for folder, rank in LAYERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative in APPLICATION:
                continue
            for module in sorted(_imported(path)):
                above = _rank(module)
                if above is not None and above > rank:
                    broken.append(f"{relative} imports {module}")
    assert not broken, "a layer imports one above it:\n" + "\n".join(broken)


def test_the_application_layer_is_what_imports_the_stages():
    """The exemption above is used: the CLI and the pipeline do run the stages."""
    for relative in ("facemark/verbs.py", "facemark/pipeline.py"):
        assert any((_rank(m) or 0) > 0 for m in _imported(REPO / relative)), relative


def test_the_cli_and_the_api_start_without_the_training_stack():
    heavy = ("torch", "timm", "tensorflow", "onnxruntime", "onnx", "coremltools", "albumentations", "ai_edge_litert")
    code = ("import sys, facemark.cli; from facemark import Landmarker; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_run_folder_is_a_leaf_that_names_every_file():
    """facemark.rundir imports nothing heavier than the errors, so every module can use it."""
    code = "import sys, facemark.rundir; print(sorted(m for m in sys.modules if m.startswith('facemark')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.strip() == "['facemark', 'facemark.errors', 'facemark.rundir']", done.stdout + done.stderr


def test_a_verb_finds_its_dataset_one_way(tmp_path):
    """`--data`, else the checkpoint's recorded root: the same answer and the same errors for
    export, quantize and validate (RunDir.data_root)."""
    import pytest

    from facemark.errors import DataError
    from facemark.rundir import RunDir

    run = RunDir(tmp_path / "run")
    (tmp_path / "data").mkdir()
    assert run.data_root(None, {"data_root": str(tmp_path / "data")}) == tmp_path / "data"
    assert run.data_root(tmp_path / "data", {"data_root": "/moved/away"}) == tmp_path / "data"
    with pytest.raises(DataError, match=f"{run.best}: the checkpoint records no dataset root; pass --data ROOT"):
        run.data_root(None, {})
    with pytest.raises(DataError, match="gone: dataset root not found"):
        run.data_root(tmp_path / "gone", {})
