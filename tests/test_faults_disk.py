"""A full disk (ENOSPC) and other file system errors in `train`, `eval` and `dataset create`: one
line naming the path and what to do, the documented exit code, the run marked failed, nothing
left that looks complete, no temporary files.

The injected tests make the N-th durable write of the process fail (every file the project
writes is flushed with ``os.fsync`` by :mod:`verifily_core.files`), for several N over a whole
command; the last test fills a real small file system where one can be mounted without
privileges (a tmpfs in a user and mount namespace).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from verifily_core import files
from verifily_core.runs import list_runs, load_run
from verifily_core.testing import make_sft_rows, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                                   reason="needs /proc/self/fd to tell which file an fsync is for")]


class DiskFull:
    """Stands in for ``os.fsync``: from the ``occurrence``-th durable write of a file whose name
    contains ``match`` (any file when ``None``) on, every durable write raises ENOSPC (a full
    disk stays full). Temporary files carry their target's name (``.hashes.json.x1y2.tmp``)."""

    def __init__(self, match: str | None = None, occurrence: int = 1) -> None:
        self.match, self.occurrence, self.seen, self.full = match, occurrence, 0, False
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        if not self.full and (self.match is None or self.match in os.readlink(f"/proc/self/fd/{fd}")):
            self.seen += 1
            self.full = self.seen >= self.occurrence
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real(fd)


def make_config(tmp_path: Path, model_dir: Path, eval_enabled: bool = True) -> Path:
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_sft_rows(16, seed=1))
    write_jsonl(data / "test.jsonl", make_sft_rows(4, seed=3))
    cfg = {
        "task": "sft", "base_model": str(model_dir),
        "data_paths": {s: str(data / f"{s}.jsonl") for s in ("train", "test")},
        "training": {"max_steps": 4, "batch_size": 8, "learning_rate": 0.01, "logging_steps": 1, "save_steps": 2,
                     "max_seq_length": 32, "warmup_ratio": 0.0},
        "lora": {"r": 4, "alpha": 8},
        "eval": {"enabled": eval_enabled, "bootstrap_resamples": 20, "hard_examples": 2},
        "data_checks": {"leakage": "off"},
        "output": {"dir": str(tmp_path / "runs")},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def assert_one_clear_line(res, path_in: Path, problem: str = "no space left on device; free space or ") -> str:
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr, res.stderr
    assert problem in errors[0] and str(path_in) in errors[0], errors[0]
    return errors[0]


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".eval-")]


@pytest.fixture
def fault():
    """A monkeypatch of its own for the injected failure, so that ``fault.undo()`` ends the failure
    without undoing other fixtures' patches (such as the store's environment variable)."""
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


# The durable writes of the run made by make_config, in order: config.yaml, environment.json,
# run_meta.json (running), a train_log.jsonl line per step, checkpoint-2's manifest after the
# second, the final log line, adapter_config.json, run_meta.json (completed), hashes.json, then
# eval/: predictions.jsonl, hard_examples.jsonl, eval_results.json and the seal, eval_hashes.json.
WHERE = {"config": ("config.yaml", 1), "environment": ("environment.json", 1), "run_meta": ("run_meta.json", 1),
         "log": ("train_log.jsonl", 1), "checkpoint": ("verifily_checkpoint.json", 1),
         "log_after_checkpoint": ("train_log.jsonl", 3), "adapter_config": ("adapter_config.json", 1),
         "seal": ("run_meta.json", 2), "hashes": ("hashes.json", 1), "eval": ("predictions.jsonl", 1),
         "eval_results": ("eval_results.json", 1), "eval_seal": ("eval_hashes.json", 1)}


@pytest.mark.parametrize("where", WHERE)
def test_train_on_a_full_disk_fails_cleanly(where, tmp_path, fault, verifily_cli, verifily_tiny_llama_dir):
    config = make_config(tmp_path, verifily_tiny_llama_dir)
    disk = DiskFull(*WHERE[where])
    fault.setattr(os, "fsync", disk)
    res = verifily_cli("train", "--config", config)
    fault.undo()
    assert disk.full, f"the run never wrote {WHERE[where]}"
    runs = tmp_path / "runs"
    assert temporaries(tmp_path) == []
    sealed = [p for p in runs.iterdir() if "." not in p.name]
    if where.startswith("eval"):  # the run was sealed before evaluation failed: it is complete and verifies
        assert res.exit_code == 4, res.output
        assert_one_clear_line(res, sealed[0] / "eval")
        assert list((sealed[0] / "eval").iterdir()) == []  # no unsealed result left to read
        assert verifily_cli("reproduce", "--run", sealed[0], "--verify-only").exit_code == 0
        return
    assert res.exit_code == 3, res.output
    line = assert_one_clear_line(res, runs)
    assert sealed == [], "a failed run must not look complete"
    (failed,) = runs.iterdir()
    assert failed.name.endswith(".failed")
    if (failed / "run_meta.json").is_file():
        assert load_run(failed).status == "failed"
        assert "--resume" in line  # it can be continued once there is room
        assert [r["status"] for r in list_runs(runs)] == ["failed"]
    assert not (failed / "hashes.json").exists() or load_run(failed).status == "failed"


def test_a_run_failed_on_a_full_disk_resumes_once_there_is_room(tmp_path, fault, verifily_cli,
                                                                verifily_tiny_llama_dir):
    config = make_config(tmp_path, verifily_tiny_llama_dir, eval_enabled=False)
    reference = verifily_cli("train", "--config", config, "--output-dir", tmp_path / "reference")
    assert reference.exit_code == 0, reference.output
    (ref,) = (tmp_path / "reference").iterdir()
    fault.setattr(os, "fsync", DiskFull("train_log.jsonl", 3))  # after a checkpoint
    assert verifily_cli("train", "--config", config).exit_code == 3
    fault.undo()
    (failed,) = (tmp_path / "runs").iterdir()
    assert (failed / "checkpoints").is_dir()
    res = verifily_cli("train", "--config", config, "--resume", failed)
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name == failed.name.removesuffix(".failed")
    metrics = [{k: v for k, v in json.loads((r / "run_meta.json").read_text())["metrics"].items()
                if k != "train_runtime_s"} for r in (ref, run)]
    assert metrics[0] == metrics[1]
    assert verifily_cli("reproduce", "--run", run, "--verify-only").exit_code == 0


def test_a_resumed_failed_run_that_fails_again_is_kept(tmp_path, fault, verifily_cli, verifily_tiny_llama_dir):
    """Regression: failing a run that already sits in ``<run_id>.failed`` deleted the folder."""
    config = make_config(tmp_path, verifily_tiny_llama_dir, eval_enabled=False)
    fault.setattr(os, "fsync", DiskFull("train_log.jsonl", 3))
    assert verifily_cli("train", "--config", config).exit_code == 3
    (failed,) = (tmp_path / "runs").iterdir()
    fault.setattr(os, "fsync", DiskFull("train_log.jsonl"))  # resuming rewrites the log before training
    res = verifily_cli("train", "--config", config, "--resume", failed)
    fault.undo()
    assert res.exit_code == 3, res.output
    assert_one_clear_line(res, failed)
    assert list((tmp_path / "runs").iterdir()) == [failed] and (failed / "checkpoints").is_dir()
    assert load_run(failed).status == "failed"


def test_a_checkpoint_write_that_fails_without_a_reason_is_named(tmp_path, fault, verifily_cli,
                                                                 verifily_tiny_llama_dir):
    """``torch.save`` says neither why nor where; with little free space it is reported as a full disk."""
    import torch

    def broken_save(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    fault.setattr(torch, "save", broken_save)
    fault.setattr("verifily_core.errors._free_bytes", lambda path: 4096)
    res = verifily_cli("train", "--config", make_config(tmp_path, verifily_tiny_llama_dir, eval_enabled=False))
    assert res.exit_code == 3, res.output
    assert_one_clear_line(res, tmp_path / "runs")
    (failed,) = (tmp_path / "runs").iterdir()
    assert failed.name.endswith(".failed") and load_run(failed).status == "failed"


@pytest.mark.parametrize("fail_at", ["predictions.jsonl", "eval_results.json", "eval_hashes.json"])
def test_eval_on_a_full_disk_fails_cleanly(fail_at, tmp_path, fault, verifily_cli, verifily_tiny_llama_dir):
    config = make_config(tmp_path, verifily_tiny_llama_dir, eval_enabled=False)
    assert verifily_cli("train", "--config", config).exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    fault.setattr(os, "fsync", DiskFull(fail_at))
    res = verifily_cli("eval", "--run", run)
    fault.undo()
    assert res.exit_code == 4, res.output
    assert_one_clear_line(res, run / "eval")
    assert list((run / "eval").iterdir()) == []  # nothing half-written, no staging folder
    assert verifily_cli("eval", "--run", run).exit_code == 0  # once there is room


def test_dataset_create_on_a_full_disk_leaves_no_version(tmp_path, fault, verifily_cli, verifily_store,
                                                         verifily_sft_files):
    args = ["dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft",
            "--train", verifily_sft_files["train"], "--test", verifily_sft_files["test"]]
    fault.setattr(os, "fsync", DiskFull("manifest.json"))
    res = verifily_cli(*args)
    fault.undo()
    assert res.exit_code == 2, res.output
    assert_one_clear_line(res, verifily_store / "ds")

    real_copy = shutil.copyfile

    def copy_then_fill(src, dst, **kw):  # as sendfile reports it: the source first, the target second
        if str(dst).endswith("test.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))
        return real_copy(src, dst, **kw)

    fault.setattr(shutil, "copyfile", copy_then_fill)
    res = verifily_cli(*args)
    fault.undo()
    assert res.exit_code == 2, res.output
    assert "test.jsonl: no space left on device; free space or pass --store elsewhere" in res.stderr
    assert_one_clear_line(res, verifily_store / "ds")
    assert not verifily_store.exists() or list(verifily_store.rglob("*")) == []
    listed = verifily_cli("dataset", "list")
    assert listed.exit_code == 0 and "Warning" not in listed.stderr and "No dataset versions" in listed.stdout
    assert verifily_cli(*args).exit_code == 0  # once there is room


def test_other_file_system_errors_name_the_path(tmp_path, fault, verifily_cli, verifily_store, verifily_sft_files):
    def refuse(src, dst, **kw):  # a store folder the user may not write into
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    fault.setattr(shutil, "copyfile", refuse)
    res = verifily_cli("dataset", "create", "--id", "ds", "--version", "v1", "--task", "sft",
                       "--train", verifily_sft_files["train"])
    fault.undo()
    assert res.exit_code == 2, res.output
    assert_one_clear_line(res, verifily_store, problem="permission denied; check its permissions or pass --store elsewhere")


def test_describe_os_error_and_library_messages(tmp_path):
    from verifily_core.errors import describe_os_error, os_error_of

    full = OSError(errno.ENOSPC, "No space left on device", "/data/runs/x/run_meta.json")
    assert describe_os_error(full, "set output.dir elsewhere") == \
        "/data/runs/x/run_meta.json: no space left on device; free space or set output.dir elsewhere"
    assert describe_os_error(OSError(errno.EDQUOT, "Disk quota exceeded"), "x", path="/r") == \
        "/r: disk quota exceeded; free space or x"
    assert describe_os_error(OSError(errno.EROFS, "Read-only", "/r")) == "/r: read-only file system; write to another file system"
    rust = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    assert os_error_of(rust, tmp_path).errno == errno.ENOSPC
    assert os_error_of(ValueError("bad value")) is None
    try:
        try:
            raise FileNotFoundError(errno.ENOENT, "No such file", "/m/config.json")
        except OSError as exc:
            raise RuntimeError("could not load") from exc
    except RuntimeError as chained:
        assert os_error_of(chained).filename == "/m/config.json"
    try:  # an OSError handled inside a library is not the cause of what it raised next
        try:
            raise FileNotFoundError(errno.ENOENT, "No such file", "/m/config.json")
        except OSError:
            raise ValueError("Unrecognized model")
    except ValueError as unrelated:
        assert os_error_of(unrelated) is None


def test_a_file_system_error_in_any_command_is_one_line(fault, verifily_cli, tmp_path):
    def refuse(runs_dir):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "runs" / "x" / "run_meta.json"))

    fault.setattr("verifily_core.runs.list_runs", refuse)
    res = verifily_cli("runs", "--runs-dir", tmp_path)
    assert res.exit_code == 1, res.output
    assert_one_clear_line(res, tmp_path / "runs" / "x", problem="run_meta.json: permission denied; check its permissions")


def test_the_atomic_writer_names_the_target_and_removes_its_temporary(tmp_path, fault):
    fault.setattr(os, "fsync", DiskFull())
    with pytest.raises(OSError) as exc:
        files.write_json(tmp_path / "a.json", {"a": 1})
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "a.json")
    with pytest.raises(OSError) as exc:
        files.append_line(tmp_path / "log.jsonl", "{}\n")
    assert exc.value.filename == str(tmp_path / "log.jsonl")
    fault.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


# -- a real small file system ----------------------------------------------------------------------

FILL_LEVELS_KIB = (4, 24, 60, 120, 144, 240)
"""Free space left on a 4 MiB tmpfs before `verifily train` starts: the run's first files, then
the checkpoint (the run's peak: adapter, optimizer and scheduler states) run out of space, and
the last level completes. The later phases (sealing, evaluation) need less than the checkpoint,
so only the injected failures above reach them."""


IN_NAMESPACE = textwrap.dedent("""
    import json, os, subprocess, sys
    from verifily_core.testing.pytest_plugin import invoke_verifily
    mount, config, levels = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
    runs = os.path.join(mount, "runs")
    report = []
    for free in levels:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mount], check=True)
        try:
            with open(os.path.join(mount, "filler"), "wb") as fh:
                fh.write(bytes((4096 - free) * 1024))
            res = invoke_verifily("train", "--config", config, "--output-dir", runs)
            files = sorted(os.path.relpath(os.path.join(root, name), runs)
                           for root, dirs, names in os.walk(runs) for name in [*names, *dirs])
            folders = sorted(os.listdir(runs)) if os.path.isdir(runs) else []
            listed = invoke_verifily("runs", "--runs-dir", runs, "--format", "json")
            verified = {f: invoke_verifily("reproduce", "--run", os.path.join(runs, f), "--verify-only").exit_code
                        for f in folders if "." not in f}
            report.append({"free": free, "rc": res.exit_code, "stderr": res.stderr, "files": files,
                           "folders": folders, "verified": verified,
                           "runs": json.loads(listed.stdout) if listed.exit_code == 0 else listed.stderr})
        finally:
            subprocess.run(["umount", mount], check=True)
    print(json.dumps(report))
""")


def _namespace_unavailable(tmp_path: Path) -> str | None:
    """Why a tmpfs cannot be mounted here without privileges, or None."""
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return "needs Linux with unshare(1)"
    probe = tmp_path / "probe"
    probe.mkdir()
    res = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                          f"mount -t tmpfs -o size=64k tmpfs {probe} && umount {probe}"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return ("needs unprivileged user and mount namespaces to mount a small tmpfs "
                f"(unshare -rm: {res.stderr.strip() or res.returncode})")
    return None


def test_a_real_full_file_system_at_several_fill_levels(tmp_path, verifily_tiny_llama_dir):
    reason = _namespace_unavailable(tmp_path)
    if reason:
        pytest.skip(reason)
    mount = tmp_path / "small"
    mount.mkdir()
    config = make_config(tmp_path, verifily_tiny_llama_dir)
    res = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", IN_NAMESPACE,
                          str(mount), str(config), ",".join(map(str, FILL_LEVELS_KIB))],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    outcomes = set()
    for case in report:
        where = f"{case['free']} KiB free: {case}"
        assert not [f for f in case["files"] if f.endswith(".tmp") or "/.eval-" in f], where
        assert "Traceback" not in case["stderr"] and "unexpected" not in case["stderr"], where
        sealed = [f for f in case["folders"] if "." not in f]
        assert all(rc == 0 for rc in case["verified"].values()), where  # a sealed run always verifies
        if case["rc"] == 0:
            outcomes.add("completed")
            assert len(sealed) == 1, where
            continue
        errors = [line for line in case["stderr"].splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "no space left on device; free space or" in errors[0], where
        assert str(mount) in errors[0], where
        if case["rc"] == 4:  # sealed, then evaluation ran out of space
            outcomes.add("eval failed")
            assert len(sealed) == 1 and not any(f.startswith(f"{sealed[0]}/eval/") for f in case["files"]), where
            continue
        assert case["rc"] == 3 and sealed == [], where
        outcomes.add("train failed")
        assert [f for f in case["folders"] if f.endswith(".failed")] == case["folders"], where
        assert isinstance(case["runs"], list) and all(r["status"] == "failed" for r in case["runs"]), where
    assert outcomes >= {"train failed", "completed"}, report
