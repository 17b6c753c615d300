"""One process at a time writes a run directory: an OS lock on the directory, released on crash."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from verifily_core.errors import ConfigError, RunLocked
from verifily_core.run_lock import lock_run
from verifily_core.testing import make_sft_rows, write_jsonl

# Holds an flock on the directory argv[1], says so, and waits to be killed.
HOLDER = """
import fcntl, os, pathlib, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
pathlib.Path(sys.argv[2]).write_text(str(os.getpid()))
time.sleep(600)
"""

# Exit 0 when the directory argv[1] can be locked now, 1 when another process holds it.
PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
"""


def probe(path: Path) -> int:
    return subprocess.run([sys.executable, "-c", PROBE, str(path)]).returncode


def hold_in_child(path: Path, tmp_path: Path) -> subprocess.Popen:
    marker = tmp_path / "holding"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(marker)])
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists()
    return proc


def test_the_lock_is_an_os_lock_on_the_directory_and_adds_no_file(tmp_path):
    run = tmp_path / "run_x.partial"
    run.mkdir()
    with lock_run(run):
        assert probe(run) == 1  # another process cannot take it
        assert list(run.iterdir()) == []  # nothing lands in the run (or its hashes)
    assert probe(run) == 0


def test_a_second_process_is_refused_naming_the_run_and_the_holder(tmp_path):
    run = tmp_path / "run_x.partial"
    run.mkdir()
    holder = hold_in_child(run, tmp_path)
    try:
        with pytest.raises(RunLocked) as err:
            lock_run(run)
        assert isinstance(err.value, ConfigError) and err.value.exit_code == 1
        message = str(err.value)
        assert str(run) in message and "another process" in message and "\n" not in message
        if Path("/proc/locks").is_file():
            assert f"pid {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_releases_the_lock_at_once(tmp_path):
    run = tmp_path / "run_x.partial"
    run.mkdir()
    holder = hold_in_child(run, tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with lock_run(run):  # no stale lock to clean up
        pass


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    run = tmp_path / "run_x.partial"
    run.mkdir()
    outer = lock_run(run)
    inner = lock_run(run)  # the run writer re-takes the lock the resume command holds
    inner.release()
    assert probe(run) == 1  # still held by the outer one
    outer.release()
    outer.release()  # idempotent
    assert probe(run) == 0


def test_the_lock_follows_the_directory_through_a_rename(tmp_path):
    run = tmp_path / "run_x.partial"
    run.mkdir()
    lock = lock_run(run)
    run.rename(tmp_path / "run_x")  # sealing renames the run while it is locked
    assert probe(tmp_path / "run_x") == 1
    lock.release()
    assert probe(tmp_path / "run_x") == 0


def test_a_missing_run_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"run_gone\.partial: no such run directory"):
        lock_run(tmp_path / "run_gone.partial")


def _config(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(8, seed=1))
    cfg = {"task": "sft", "base_model": "org/model", "data_paths": {"train": str(data / "train.jsonl")},
           "eval": {"enabled": False}, "data_checks": {"leakage": "off"}, "output": {"dir": str(tmp_path / "runs")}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_resume_of_a_run_another_process_trains_is_refused(tmp_path, verifily_subprocess):
    """Issue 13: two `--resume` of one run at once; the second gets one line and exit 1."""
    config = _config(tmp_path)
    run = tmp_path / "runs" / "run_x.partial"
    run.mkdir(parents=True)
    (run / "run_meta.json").write_text(json.dumps({"run_id": "run_x", "status": "running", "hashes": {}}))
    before = sorted(p.name for p in run.iterdir())
    holder = hold_in_child(run, tmp_path)
    try:
        res = verifily_subprocess("train", "--config", config, "--resume", run, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert str(run) in lines[0] and "another process" in lines[0] and "is writing it" in lines[0]
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr
    assert sorted(p.name for p in run.iterdir()) == before  # the run was not touched



def test_eval_into_a_run_another_process_writes_is_refused(tmp_path, verifily_subprocess):
    """`verifily eval` writes the run's eval/, so it takes the run's lock too (the run is refused
    before anything is loaded; another --output folder needs no lock)."""
    import json
    import subprocess
    import sys

    run = tmp_path / "run_x"
    run.mkdir()
    (run / "run_meta.json").write_text(json.dumps({
        "format_version": 1, "run_id": "run_x", "name": None, "status": "completed", "task": "sft",
        "base_model": "m", "dataset": {"ref": None}, "started_at": "2026-01-01T00:00:00Z", "completed_at": None,
        "duration_seconds": 1.0, "metrics": {}, "artifact_path": str(run), "error": None, "hashes": {}}))
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"fd = os.open({str(run)!r}, os.O_RDONLY)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "print('held', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = verifily_subprocess("eval", "--run", str(run))
    finally:
        holder.kill()
        holder.wait()
    assert res.returncode == 1, res.stderr
    assert f"run {run} is in use" in res.stderr and "is writing it" in res.stderr
