"""The run-folder lock in one process: nesting, release on errors, no trace left, unreadable locks.
(Two processes and stale locks are cases of the bad-input catalogue, tests/test_interruptions.py.)"""

from __future__ import annotations

import json
import os

import pytest

from facemark import runlock
from facemark.errors import FacemarkError
from facemark.runlock import hold_run_lock, lock_path


def test_nested_holds_share_one_lock_and_release_on_error(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        with hold_run_lock(run, "pipeline"):
            record = json.loads(lock_path(run).read_text())
            assert (record["pid"], record["verb"]) == (os.getpid(), "pipeline")
            with hold_run_lock(run, "train"):   # the pipeline's own stages
                assert json.loads(lock_path(run).read_text())["verb"] == "pipeline"
            assert lock_path(run).is_file()
            raise RuntimeError("boom")
    assert not lock_path(run).exists()


def test_a_folder_made_only_for_the_lock_is_removed(tmp_path):
    with pytest.raises(FacemarkError):
        with hold_run_lock(tmp_path / "new", "train"):
            raise FacemarkError("no data")
    assert not (tmp_path / "new").exists()
    with hold_run_lock(tmp_path / "kept", "train"):
        (tmp_path / "kept" / "last.pt").write_bytes(b"x")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["last.pt"]


def test_unreadable_lock_names_the_file_to_delete(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "UNREADABLE_GRACE_S", 0.1)
    lock_path(tmp_path).write_text("")   # a process killed between creating and writing it
    with pytest.raises(FacemarkError, match=f"lock is unreadable; .*delete {lock_path(tmp_path)}"):
        with hold_run_lock(tmp_path, "export"):
            pass
    assert lock_path(tmp_path).read_text() == ""


def test_release_never_removes_another_process_lock(tmp_path):
    record = {"pid": os.getpid() + 1, "host": "elsewhere", "verb": "train", "started": "2026-01-01T00:00:00+00:00"}
    lock_path(tmp_path).write_text(json.dumps(record))
    runlock.release(tmp_path)
    assert json.loads(lock_path(tmp_path).read_text()) == record
