"""The manifest contract (facemark/contract.py): each field read against its type, the JSON written
back unchanged, and the JSON Schema generated from the same dataclasses (docs/manifest.schema.json)
holding for Python's jsonschema and for the Android core's SchemaCheck alike."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from java_core import REPO, needs_jdk

import facemark
from facemark.config import load_config
from facemark.contract import ArtifactEntry, Manifest, manifest_json_schema
from facemark.errors import ArtifactError
from facemark.manifest import artifact_entry, load_manifest, new_manifest, record_artifact, save_manifest
from facemark.schemes import load_scheme
from facemark.status import Status
from facemark.weights import IMAGENET

SCHEMA_FILE = REPO / "docs" / "manifest.schema.json"
SHIPPED = sorted((Path(facemark.__file__).parent / "pretrained").glob("*/manifest.json"))


@pytest.fixture
def written(tmp_path) -> Path:
    """manifest.json as export writes it (new_manifest + a recorded TFLite entry), for lapa106 at 64 px."""
    cfg = load_config(overrides=["model.pretrained=false", "data.input_size=64", "infer.flip=true"])
    export_dir = tmp_path / "run" / "export"
    export_dir.mkdir(parents=True)
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.write_bytes(b"checkpoint")
    save_manifest(export_dir, new_manifest(cfg, load_scheme(cfg.data.scheme).facts(), checkpoint, IMAGENET))
    (export_dir / "model_fp32.tflite").write_bytes(b"TFL3")
    record_artifact(export_dir, "tflite_fp32", artifact_entry(
        export_dir, Path("model_fp32.tflite"), format="tflite", precision="float32", layout="NHWC",
        status=Status.VERIFIED, parity={"max_abs": 1e-6}, opset=17))
    return export_dir / "manifest.json"


def _without_nulls(value):
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def test_the_checked_in_schema_is_the_generated_one():
    assert json.loads(SCHEMA_FILE.read_text()) == manifest_json_schema(), \
        f"{SCHEMA_FILE} is stale: regenerate it with `make schema`"


def test_shipped_and_written_manifests_validate_and_read_back_unchanged(written):
    assert len(SHIPPED) == 2
    schema = manifest_json_schema()
    for path in [*SHIPPED, written]:
        document = json.loads(path.read_text())
        jsonschema.Draft202012Validator(schema).validate(document)
        manifest = Manifest.from_json(document, str(path))
        # an explicit null (an old int8 entry's float tensor "quantization") is written as absent
        assert manifest.to_json() == _without_nulls(document), path
    entry = load_manifest(written.parent).artifacts["tflite_fp32"]
    assert isinstance(entry, ArtifactEntry) and entry.status is Status.VERIFIED and entry.layout == "NHWC"
    assert entry.details == {"opset": 17}   # a format's own fact: kept, outside the typed fields


def _entry(document: dict) -> dict:
    return document["artifacts"]["tflite_fp32"]


# a hand edit -> (what Manifest.from_json says, what jsonschema says): both name the key
BREAKS = {
    "size missing": (lambda d: d["input"].pop("size"), "input: missing key 'size'", "'size' is a required property"),
    "size as text": (lambda d: d["input"].update(size="144"), "input.size: expected an integer, got '144'",
                     "'144' is not of type 'integer'"),
    "unknown status": (lambda d: _entry(d).update(status="shiny"), "artifacts.tflite_fp32.status: unknown status",
                       "'shiny' is not one of"),
    "unknown contract key": (lambda d: d["crop"].update(zoom=2), "crop: unknown key 'zoom'",
                             "Additional properties are not allowed ('zoom'"),
    "layout missing": (lambda d: _entry(d).pop("layout"), "artifacts.tflite_fp32: missing key 'layout'",
                       "'layout' is a required property"),
    "layout unknown": (lambda d: _entry(d).update(layout="CHW"), "artifacts.tflite_fp32.layout: expected 'NCHW'",
                       "'CHW' is not one of"),
    "pupils not indices": (lambda d: d["scheme"].update(pupils=[["a"], [1]]), "scheme.pupils[0][0]: expected an "
                           "integer", "'a' is not of type 'integer'"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_a_broken_manifest_fails_both_readers_naming_its_key(written, case):
    edit, ours, theirs = BREAKS[case]
    document = json.loads(written.read_text())
    edit(document)
    written.write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match=f"manifest.json: {ours}".replace("(", r"\(").replace("[", r"\[")):
        load_manifest(written.parent)
    with pytest.raises(jsonschema.ValidationError, match=theirs.replace("(", r"\(")):
        jsonschema.Draft202012Validator(manifest_json_schema()).validate(document)


def _schema_check(classes: Path, schema: Path, *manifests: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", str(classes), "org.facemark.core.SchemaCheck", str(schema),
                           *map(str, manifests)], capture_output=True, text=True, timeout=60)


@needs_jdk
def test_the_android_core_reads_the_same_contract(core_classes, written, tmp_path):
    """SchemaCheck.java: the schema requires every key ModelContract needs, and the manifests facemark
    writes (shipped and freshly written) validate and parse on the phone's side too."""
    result = _schema_check(core_classes, SCHEMA_FILE, *SHIPPED, written)
    assert result.returncode == 0 and "schema check: OK" in result.stdout, result.stdout + result.stderr

    broken = json.loads(written.read_text())
    _entry(broken).pop("layout")
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    result = _schema_check(core_classes, SCHEMA_FILE, tmp_path / "broken.json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "artifacts.tflite_fp32: missing key 'layout'" in result.stdout
    assert "ModelContract refuses it: manifest: missing key 'artifacts.tflite_fp32.layout'" in result.stdout

    # a schema in which Python stopped requiring what the app needs
    lax = manifest_json_schema()
    lax["properties"]["artifacts"]["additionalProperties"]["required"].remove("layout")
    (tmp_path / "lax.schema.json").write_text(json.dumps(lax))
    result = _schema_check(core_classes, tmp_path / "lax.schema.json")
    assert result.returncode == 1
    assert "the app needs 'artifacts.*.layout' but the schema does not require 'layout'" in result.stdout
