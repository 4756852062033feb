"""One writer per run folder, and interruptions: a second writer refused, stale locks taken over,
Ctrl-C and SIGTERM exit 130/143 in one line, save the step in progress and resume exactly.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from facemark.cli import main
from facemark.config import load_config
from facemark.runlock import lock_path
from facemark.train.engine import train

from cli_errors import error_line, facemark_child, no_partial
from drawn_faces import make_drawn_split


# ---------------------------------------------------------------- one writer per run folder
HOLDER = """\
import sys
from facemark.runlock import hold_run_lock
with hold_run_lock(sys.argv[1], "train"):
    print("held", flush=True)
    sys.stdin.read()   # until the test closes stdin
"""


def test_second_writer_is_refused_naming_the_holder(capsys, run_copy, data):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_copy)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.stat().st_mtime_ns for p in run_copy.rglob("*") if p.is_file()}
        for argv in (["export", run_copy, "--format", "onnx"], ["quantize", run_copy, "--format", "onnx"],
                     ["validate", run_copy], ["train", "--data", data, "--run", run_copy, "--resume",
                                              "--set", "data.detector=synth", "--set", "model.pretrained=false"],
                     ["pipeline", "--data", data, "--run", run_copy]):
            line = error_line(capsys, argv)
            assert f"{run_copy}: run folder is in use by pid {holder.pid} on {socket.gethostname()}, " \
                   f"`facemark train` since " in line, line
        assert {p: p.stat().st_mtime_ns for p in run_copy.rglob("*") if p.is_file()} == before   # nothing written
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    assert not lock_path(run_copy).exists()   # released by the holder


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_lock_of_a_killed_process_is_taken_over(capsys, run_copy):
    pid = _dead_pid()
    lock_path(run_copy).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "verb": "export",
                                               "started": "2026-01-01T00:00:00+00:00", "process_start": None}))
    assert main(["export", str(run_copy), "--format", "onnx"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "stale lock" in line]
    assert len(notes) == 1 and f"pid {pid}" in notes[0] and str(lock_path(run_copy)) in notes[0]
    assert not lock_path(run_copy).exists()
    no_partial(run_copy)


def test_lock_from_another_host_is_not_guessed_at(capsys, run_copy):
    record = {"pid": os.getpid(), "host": "build-agent-7", "verb": "quantize", "started": "2026-01-01T00:00:00+00:00"}
    lock_path(run_copy).write_text(json.dumps(record))
    line = error_line(capsys, ["export", run_copy, "--format", "onnx"])
    assert "build-agent-7" in line and f"delete {lock_path(run_copy)}" in line
    assert json.loads(lock_path(run_copy).read_text()) == record   # left alone


# ---------------------------------------------------------------- Ctrl-C
TRAIN_SET = ["model.arch=mobilenetv3_small_050", "model.pretrained=false", "data.input_size=64", "data.detector=drawn",
             "data.workers=0", "train.epochs=8", "train.warmup_epochs=0", "train.batch_size=4", "train.device=cpu",
             "train.amp=false"]


def test_ctrl_c_during_training_exits_130_and_resumes(tmp_path):
    data, run = tmp_path / "drawn", tmp_path / "run"
    # 8 epochs of 6 steps: the SIGINT lands after epoch 1 with most of the run still to go
    make_drawn_split(data, "train", 24)
    make_drawn_split(data, "val", 2)
    argv = ["train", "--data", str(data), "--run", str(run)] + [a for item in TRAIN_SET for a in ("--set", item)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT back to its default in the child: a test run started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    process = subprocess.Popen([sys.executable, "-m", "facemark", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (run / "last.pt").is_file():   # mid-training: after the first saved epoch
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"facemark train: interrupted (Ctrl-C); resume with: facemark {shlex.join(argv)} --resume"]
    no_partial(run)
    assert not lock_path(run).exists()
    saved = len((run / "metrics.jsonl").read_text().splitlines())
    assert 1 <= saved < 8
    hinted = shlex.split(lines[0].split("resume with: ")[1])
    assert main(hinted[1:]) == 0   # the hinted command, through the same CLI in this process
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == list(range(1, 9))


@pytest.mark.parametrize("verb_argv, hint", [
    (["export", "runs/x", "--format", "onnx"], "run the same command again to resume: facemark export runs/x --format onnx"),
    (["train", "--data", "d", "--run", "NEW"], "no epoch was saved; start again with: facemark train --data d --run NEW"),
])
def test_interrupt_hint_per_verb(tmp_path, verb_argv, hint):
    from facemark.cli import build_parser, resume_hint

    argv = [str(tmp_path / "new") if a == "NEW" else a for a in verb_argv]
    assert resume_hint(build_parser().parse_args(argv), argv) == hint.replace("NEW", str(tmp_path / "new"))

def test_a_handled_signal_is_held_to_the_end_of_a_step_and_forgotten_after_the_block():
    """interrupt.deferred holds a SIGTERM until its block ends; run_child refuses new children while
    the interruption unwinds, and starts them again once interrupt.handled's block is left (a
    library caller, or the next test in a pytest worker, goes on in the same process)."""
    from facemark import interrupt

    steps = []
    with pytest.raises(interrupt.Terminated), interrupt.handled():
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("finished")   # the step ends before the signal is raised
        steps.append("next step")
    assert steps == ["finished"]
    with pytest.raises(KeyboardInterrupt), interrupt.handled():   # SIGTERM: a background shell ignores SIGINT
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except interrupt.Terminated:
            interrupt.run_child([sys.executable, "-c", "pass"])   # still unwinding: refused
    assert interrupt.run_child([sys.executable, "-c", "print(7)"], capture_output=True, text=True).stdout == "7\n"


def test_sigterm_during_training_saves_the_step_and_resumes_exactly(tmp_path):
    data, run, whole = tmp_path / "drawn", tmp_path / "run", tmp_path / "whole"
    make_drawn_split(data, "train", 60)   # 30 steps of 2 faces per epoch
    make_drawn_split(data, "val", 2)
    settings = ["model.arch=mobilenetv3_small_050", "model.pretrained=false", "data.input_size=64", "data.detector=drawn",
                "data.workers=1", "train.epochs=3", "train.warmup_epochs=0", "train.batch_size=2", "train.device=cpu",
                "train.amp=false"]
    argv = ["train", "--data", str(data), "--run", str(run)] + [a for item in settings for a in ("--set", item)]
    logs = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(logs[0], "w") as out_file, open(logs[1], "w") as err_file:
        process = facemark_child(argv, stdout=out_file, stderr=err_file)
        # SIGTERM once epoch 2's progress bar (on stderr) shows step 3 or later: mid-epoch, whatever
        # the machine's speed (the bar refreshes every 0.1 s, a few steps)
        deadline = time.monotonic() + 120
        while not re.search(r"epoch 2/3:[^|]*\|[^|]*\| ([3-9]|[12]\d)/30", logs[1].read_text()):
            assert process.poll() is None and time.monotonic() < deadline, logs[1].read_text()
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGTERM)    # the whole group: the DataLoader worker gets it too
        process.wait(timeout=60)
    out, err = (path.read_text() for path in logs)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert lines == [f"facemark train: interrupted (SIGTERM); resume with: facemark {shlex.join(argv)} --resume"]
    saved = re.search(r"interrupted in epoch 2 after step (\d+)/30: saved (\S+) in", out)
    assert saved and 3 <= int(saved[1]) < 30 and saved[2] == str(run / "last.pt"), out
    no_partial(run)
    assert not lock_path(run).exists()

    hinted = shlex.split(lines[0].split("resume with: ")[1])
    assert main(hinted[1:]) == 0
    train(load_config(overrides=settings), data, whole, resume=False)
    metrics = [[json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
               for folder in (run, whole)]
    assert [m["epoch"] for m in metrics[0]] == [m["epoch"] for m in metrics[1]] == [1, 2, 3]
    for resumed, uninterrupted in zip(*metrics):
        for key in ("train_loss", "val_nme", "lr"):
            assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-6), key
    a, b = (torch.load(folder / "last.pt", weights_only=True) for folder in (run, whole))
    assert a["interrupted_epoch"] is None and b["interrupted_epoch"] is None
    for name, tensor in b["model"].items():
        torch.testing.assert_close(a["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("verb, started", [("export", None), ("validate", "validating onnx_fp32"),
                                           ("quantize", "facemark quantize: calibrating"),
                                           ("qat", "facemark qat: calibrating")])
def test_sigterm_stops_a_verb_that_runs_again(run_copy, capsys, verb, started):
    """SIGTERM once the verb is under way (its lock taken, or the line `started` on stdout/stderr):
    one line, exit 143, no lock, nothing partial; the same command then finishes."""
    argv = {"export": ["export", run_copy, "--format", "onnx"], "validate": ["validate", run_copy, "--limit", "2"],
            "quantize": ["quantize", run_copy, "--format", "onnx", "--calibration-count", "4"],
            "qat": ["qat", run_copy, "--epochs", "1", "--set", "quantize.formats=[onnx]", "--set",
                    "quantize.qat_formats=[onnx]", "--set", "quantize.calibration_count=4"]}[verb]
    process = facemark_child(argv)
    if started is None:
        deadline = time.monotonic() + 60
        while not lock_path(run_copy).exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.01)
    else:
        next(line for line in (process.stdout if verb in ("quantize", "qat") else process.stderr) if started in line)
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, out + err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        f"facemark {verb}: interrupted (SIGTERM); run the same command again to resume: "
        f"facemark {shlex.join(map(str, argv))}"]
    assert not lock_path(run_copy).exists()
    no_partial(run_copy)
    assert main([str(a) for a in argv]) == 0
