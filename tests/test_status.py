"""facemark.status: the one vocabulary of artifact and validation-row statuses, read by member."""

import json

import pytest

from facemark.status import Status


@pytest.mark.parametrize("text, member", [
    ("verified", Status.VERIFIED),
    ("written, not run on this host", Status.WRITTEN),
    ("ok", Status.OK),
    ("not run: needs macOS", Status.NOT_RUN),
    ("not exported: failed: onnx2tf crashed", Status.NOT_EXPORTED),
    ("refused: sha256 mismatch", Status.REFUSED),
    ("failed: process aborted (signal 6, SIGABRT)", Status.FAILED),
])
def test_a_stored_status_reads_as_its_member(text, member):
    assert Status.of(text) is member


def test_a_reason_follows_the_word_and_the_json_is_the_plain_string():
    text = Status.FAILED.because("timed out after 600 s")
    assert text == "failed: timed out after 600 s" and Status.of(text) is Status.FAILED
    assert json.loads(json.dumps({"status": Status.VERIFIED})) == {"status": "verified"}


def test_an_unknown_status_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown status 'exploded: boom'; known: verified, written, not run"):
        Status.of("exploded: boom")


def test_a_manifest_with_an_unknown_status_is_refused_in_one_line(tmp_path):
    import shutil
    from pathlib import Path

    import facemark
    from facemark.errors import ArtifactError
    from facemark.manifest import load_manifest

    folder = tmp_path / "ibug68"
    shutil.copytree(Path(facemark.__file__).parent / "pretrained" / "ibug68", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    name = next(iter(manifest["artifacts"]))
    manifest["artifacts"][name]["status"] = "shiny"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"manifest.json: artifacts.{name}.status: unknown status 'shiny'"):
        load_manifest(folder)
