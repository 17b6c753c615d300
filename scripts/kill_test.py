#!/usr/bin/env python
"""Randomized kill test: SIGKILL ``verifily train``, ``verifily train --resume`` and
``verifily dataset create`` at random moments, then check that the store and the runs tell the
truth about themselves.

    python scripts/kill_test.py --kills 50 --seed 0

Offline, on CPU, with a tiny model built on the spot. Each episode starts one command, kills it
after a random delay (seeded; drawn within a randomly chosen phase of the uninterrupted command,
timed once: start-up, training, sealing and evaluation; for a create, scanning the sources or
copying and sealing) and checks, with the real commands:

- every folder of the dataset store is a version that ``verifily dataset verify --rows`` accepts
  (with the content hash of an uninterrupted create), or a hidden leftover that ``verifily
  dataset list`` reports and does not list;
- every run folder without a suffix is sealed and ``verifily reproduce --verify-only`` says
  MATCH (or its one fault is an evaluation a kill cut before its seal, which verify reports);
  every ``.partial``/``.failed`` folder is not listed as completed by ``verifily runs``; nothing
  else lies in the output folder.

Three targeted kills come first, at moments a random delay rarely hits: after a run's final
``run_meta.json`` and ``hashes.json`` but before its rename, while its checkpoints are removed,
and after a create's temporary folder is sealed but before its rename.

At the end every killed run is resumed, every cut evaluation re-run and every killed create run
again, uninterrupted: each must complete, every sealed run must then verify and have the metrics
(``run_meta.json`` and ``eval/eval_results.json``), log steps and adapter bytes of an
uninterrupted reference run, exactly, and every re-created version its content hash.

By default commands run in processes forked from this one after it has imported the heavy
libraries once (the real ``verifily`` entry point, a real SIGKILL, but seconds instead of a
fresh interpreter's import time); ``--exec`` starts a fresh interpreter for every command.
Kill moments depend on the machine's speed, so a seed fixes the plan, not the exact moments.
Prints a summary table; exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "TRANSFORMERS_VERBOSITY": "error"}
ENTRY = "from verifily_core.cli import main; main()"
KINDS = ("train", "resume", "create")
VOLATILE = {"train_runtime_s"}  # wall-clock metrics: never equal across runs
DATASET = "ds"  # the version training reads: ds@v1
CREATED = "dk"  # the dataset whose versions the killed creates write: dk@c1, dk@c2, ...


class Proc:
    """A running ``verifily`` command: forked from this process, or a fresh interpreter."""

    def __init__(self, args: list[str], log: Path, fork: bool, before: Any = None) -> None:
        self.args, self.log, self.started = args, log, time.monotonic()
        self.returncode: int | None = None
        out, err = open(log.with_suffix(".out"), "wb"), open(log.with_suffix(".err"), "wb")
        if fork:
            sys.stdout.flush()
            sys.stderr.flush()
            self.pid = os.fork()
            if self.pid == 0:  # the child: the console script's entry point, then exit without cleanup
                code = 70
                try:
                    os.dup2(out.fileno(), 1)
                    os.dup2(err.fileno(), 2)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    if before is not None:
                        before()
                    sys.argv = ["verifily", *args]
                    from verifily_core.cli import main

                    main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code)
            self.popen = None
        else:
            import subprocess

            code = ENTRY
            if before is not None:  # a targeted kill: the same hook, installed by the new interpreter
                code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
                        f"import kill_test; kill_test.{before.__name__}(); {ENTRY}")
            self.popen = subprocess.Popen([sys.executable, "-c", code, *args], stdout=out, stderr=err)
            self.pid = self.popen.pid
        out.close()
        err.close()

    def poll(self) -> int | None:
        if self.returncode is None:
            if self.popen is not None:
                self.returncode = self.popen.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or ``None`` if still running after ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                return None
            time.sleep(0.005)
        return self.returncode

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()

    @property
    def stdout(self) -> str:
        return self.log.with_suffix(".out").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.log.with_suffix(".err").read_text(errors="replace")


class KillTest:
    """The work folder, the reference results and the checks."""

    def __init__(self, work: Path, seed: int, fork: bool, verbose: bool = False) -> None:
        self.work, self.fork, self.verbose = work, fork, verbose
        self.rng = random.Random(seed)
        self.store, self.runs, self.logs = work / "store", work / "runs", work / "logs"
        self.config = work / "train.yaml"
        self.n_logs = 0
        self.violations: list[str] = []
        self.verified: set[str] = set()  # sealed runs and versions already checked (they never change)
        self.incomplete_evals: set[str] = set()  # sealed runs whose evaluation a kill cut before its seal
        self.reference: dict[str, Any] = {}
        self.durations: dict[str, float] = {}
        self.episodes: list[dict[str, Any]] = []
        self.final: Counter[str] = Counter()
        self.windows: list[tuple[float, float]] = []
        self.create_windows: list[tuple[float, float]] = []

    @property
    def kills(self) -> int:
        """Random kills so far (the targeted ones not counted)."""
        return sum(e["killed"] for e in self.episodes if e["delay"] is not None)

    # -- running commands -------------------------------------------------------------------

    def start(self, *args: Any, before: Any = None) -> Proc:
        self.n_logs += 1
        return Proc([str(a) for a in args], self.logs / f"{self.n_logs:04d}-{args[0]}", self.fork, before)

    def run(self, *args: Any, timeout: float = 600) -> Proc:
        proc = self.start(*args)
        if proc.wait(timeout) is None:
            proc.kill()
            self.violation(f"`verifily {' '.join(map(str, args))}` did not finish in {timeout:.0f}s")
        return proc

    def violation(self, text: str) -> None:
        self.violations.append(text)
        print(f"  VIOLATION: {text}", file=sys.stderr, flush=True)

    def ok(self, proc: Proc, what: str) -> bool:
        if proc.returncode == 0:
            return True
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        self.violation(f"{what}: `verifily {' '.join(proc.args)}` exited {proc.returncode}: {tail}")
        return False

    # -- set-up and references --------------------------------------------------------------

    def prepare(self, model: Path | None = None) -> None:
        """The tiny model, the data, ``ds@v1``, the config, and the uninterrupted references."""
        import subprocess

        from verifily_core.testing.data import make_sft_rows, write_jsonl

        for folder in (self.store, self.runs, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        if model is None:
            model = self.work / "tiny-llama"
            if self.fork:  # in a child: this process runs no torch code before it forks the commands
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        from verifily_core.testing.tiny_models import build_tiny_model

                        build_tiny_model("llama", model)
                        code = 0
                    finally:
                        os._exit(code)
                if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
                    raise SystemExit("building the tiny model failed")
            else:
                subprocess.run([sys.executable, "-m", "verifily_core.testing.tiny_models", "--out", str(self.work),
                                "--kind", "llama"], check=True, capture_output=True)
        data, big = self.work / "data", self.work / "create-source"
        for split, n, seed in (("train", 24, 1), ("val", 8, 2), ("test", 6, 3)):
            write_jsonl(data / f"{split}.jsonl", make_sft_rows(n, seed=seed))
        for split, n, seed in (("train", 6000, 4), ("val", 600, 5), ("test", 600, 6)):
            write_jsonl(big / f"{split}.jsonl", make_sft_rows(n, seed=seed))
        self.create_source = big
        import yaml

        self.config.write_text(yaml.safe_dump({
            "task": "sft", "base_model": str(model), "dataset_version": f"{DATASET}@v1",
            "dataset_store": str(self.store), "seed": 7,
            "training": {"num_epochs": 1, "max_steps": 8, "batch_size": 4, "gradient_accumulation_steps": 1,
                         "learning_rate": 0.01,
                         "logging_steps": 2, "save_steps": 2, "eval_steps": 100, "max_seq_length": 48,
                         "warmup_ratio": 0.0},
            "lora": {"r": 4, "alpha": 8},
            "eval": {"enabled": True, "bootstrap_resamples": 50, "hard_examples": 3},
            "data_checks": {"leakage": "off"},
            "output": {"dir": str(self.runs)},
        }))
        proc = self.run("dataset", "create", "--id", DATASET, "--version", "v1", "--task", "sft",
                        "--from-dir", data, "--store", self.store)
        if not self.ok(proc, "set-up"):
            raise SystemExit(f"set-up failed:\n{proc.stderr}")
        proc = self.start("dataset", "create", "--id", CREATED, "--version", "c0", "--task", "sft",
                          "--from-dir", big, "--store", self.store)
        copying = None
        while proc.poll() is None:  # the time its hidden temporary folder appears: copy, manifest, verify
            if copying is None and (self.store / CREATED).is_dir() and any(
                    p.name.startswith(".c0.") for p in (self.store / CREATED).iterdir()):
                copying = time.monotonic() - proc.started
            time.sleep(0.002)
        end = time.monotonic() - proc.started
        self.durations["create"] = end
        self.create_windows = [(0.0, copying or end / 2), (copying or end / 2, end * 1.05)]
        if not self.ok(proc, "reference create"):
            raise SystemExit(f"reference create failed:\n{proc.stderr}")
        self.reference["content_hash"] = self.manifest(CREATED, "c0")["content_hash"]
        proc, self.windows = self.timed_train(self.work / "reference")
        self.durations["train"] = self.durations["resume"] = self.windows[-1][1]
        if not self.ok(proc, "reference train"):
            raise SystemExit(f"reference train failed:\n{proc.stderr}")
        (ref,) = [p for p in (self.work / "reference").iterdir()]
        self.reference["run"] = self.outcome(ref)

    def timed_train(self, out: Path) -> tuple[Proc, list[tuple[float, float]]]:
        """Run the reference train, watching its folder; returns it and the time windows (from the
        start) of its phases: start-up, training (checkpoints), the end (last checkpoint to sealed
        and evaluated). Kill moments are drawn from a random phase, so that the short late phases
        get their share."""
        proc = self.start("train", "--config", self.config, "--output-dir", out)
        seen: dict[str, float] = {}
        while proc.poll() is None:
            now = time.monotonic() - proc.started
            folders = list(out.iterdir()) if out.is_dir() else []
            if folders:
                seen.setdefault("folder", now)
                ckpts = folders[0] / "checkpoints"
                if ckpts.is_dir() and any((c / "trainer_state.json").is_file() for c in ckpts.iterdir()):
                    seen["last checkpoint"] = now
            time.sleep(0.005)
        end = time.monotonic() - proc.started
        folder, last = seen.get("folder", 0.0), seen.get("last checkpoint", end / 2)
        return proc, [(0.0, folder), (folder, last), (last, end * 1.05)]

    def manifest(self, dataset_id: str, version: str) -> dict[str, Any]:
        return json.loads((self.store / dataset_id / version / "manifest.json").read_text())

    @staticmethod
    def outcome(run: Path) -> dict[str, Any]:
        """What must be identical between a run and the reference: metrics, eval numbers, adapter bytes."""
        meta = json.loads((run / "run_meta.json").read_text())
        hashes = json.loads((run / "hashes.json").read_text())
        results = run / "eval" / "eval_results.json"
        overall = json.loads(results.read_text())["overall"] if results.is_file() else None
        return {"metrics": {k: v for k, v in meta["metrics"].items() if k not in VOLATILE},
                "eval": overall,
                "adapter": {k: v for k, v in hashes["artifacts"].items() if k.startswith("adapter/")},
                "train_log_steps": [json.loads(line).get("step") for line in
                                    (run / "train_log.jsonl").read_text().splitlines()]}

    # -- episodes ---------------------------------------------------------------------------

    def resumable(self) -> list[Path]:
        return sorted(p for p in self.runs.iterdir()
                      if p.name.endswith((".partial", ".failed")) and (p / "run_meta.json").is_file())

    def episode(self, number: int) -> None:
        kind = self.rng.choices(KINDS, weights=(4, 4, 2))[0]
        if kind == "resume" and not self.resumable():
            kind = "train"
        if kind == "create":  # validating and hashing the sources, or copying and sealing the version
            delay = self.rng.uniform(*self.rng.choice(self.create_windows))
        else:  # start-up (before the run folder), training (checkpoints), the end (sealing, evaluation)
            delay = self.rng.uniform(*self.rng.choices(self.windows, weights=(1, 3, 2))[0])
        before = set(self.runs.iterdir())
        target: Any = None
        if kind == "train":
            proc = self.start("train", "--config", self.config)
        elif kind == "resume":
            target = self.rng.choice(self.resumable())
            proc = self.start("train", "--config", self.config, "--resume", target)
        else:
            target = f"c{number}"
            proc = self.start("dataset", "create", "--id", CREATED, "--version", target, "--task", "sft",
                              "--from-dir", self.create_source, "--store", self.store)
        finished = proc.wait(delay) is not None
        if not finished:
            proc.kill()
        record = {"n": number, "kind": kind, "delay": round(delay, 3), "killed": not finished,
                  "target": str(target) if target else None}
        if finished and proc.returncode != 0:
            self.ok(proc, f"episode {number} ({kind}, not killed)")
        if kind == "create":
            record["phase"] = self.create_phase(str(target))
        else:
            new = set(self.runs.iterdir()) - before
            record["phase"] = self.run_phase(target if kind == "resume" else None, new)
        self.episodes.append(record)
        if self.verbose:
            print(f"  episode {number}: {record}", file=sys.stderr, flush=True)
        self.check(f"after episode {number} ({kind}, {record['phase']})")

    def create_phase(self, version: str) -> str:
        if (self.store / CREATED / version).is_dir():
            return "version sealed"
        if any(p.name.startswith(f".{version}.") for p in (self.store / CREATED).iterdir()):
            return "temporary folder left"
        return "nothing written"

    def run_phase(self, resumed: Path | None, new: set[Path]) -> str:
        if resumed is not None:
            run_id = resumed.name.rsplit(".", 1)[0]
            folders = [p for p in self.runs.iterdir() if p.name.split(".")[0] == run_id]
        else:
            folders = list(new)
        if not folders:
            return "no run folder yet"
        folder = max(folders, key=lambda p: p.stat().st_mtime)
        if "." not in folder.name:
            return "sealed" + ("" if (folder / "eval" / "eval_results.json").is_file() else ", evaluation cut")
        if not (folder / "run_meta.json").is_file():
            return "folder without run_meta"
        status = json.loads((folder / "run_meta.json").read_text()).get("status")
        if status == "completed":
            return "sealing cut"
        steps = sorted(int(p.name.split("-")[1]) for p in (folder / "checkpoints").glob("checkpoint-*")
                       if (p / "trainer_state.json").is_file()) if (folder / "checkpoints").is_dir() else []
        return f"checkpoint {steps[-1]}" if steps else "no checkpoint"

    # -- targeted kills: moments a random delay rarely hits ------------------------------------

    def targeted(self) -> None:
        """Kill a train at the end of sealing (after the final ``run_meta.json`` and ``hashes.json``,
        before the rename), one while it removes its checkpoints, and a create between its sealed
        temporary folder and the rename; each is then checked like a random kill."""
        for name, kind, before in (("before the seal's rename", "train", _kill_before_seal),
                                   ("removing checkpoints", "train", _kill_removing_checkpoints),
                                   ("before the version's rename", "create", _kill_before_version_rename)):
            self.n_targeted = getattr(self, "n_targeted", 0) + 1
            number = f"t{self.n_targeted}"
            before_runs = set(self.runs.iterdir())
            if kind == "train":
                proc = self.start("train", "--config", self.config, before=before)
            else:
                proc = self.start("dataset", "create", "--id", CREATED, "--version", number, "--task", "sft",
                                  "--from-dir", self.create_source, "--store", self.store, before=before)
            proc.wait()
            killed = proc.returncode == -signal.SIGKILL
            if not killed:
                self.violation(f"targeted kill {name!r} did not happen (exit {proc.returncode}): "
                               f"{(proc.stderr.strip().splitlines() or [''])[-1]}")
            phase = self.create_phase(number) if kind == "create" else \
                self.run_phase(None, set(self.runs.iterdir()) - before_runs)
            self.episodes.append({"n": number, "kind": kind, "delay": None, "killed": killed, "target":
                                  number if kind == "create" else None, "phase": f"targeted: {name} -> {phase}"})
            self.check(f"after the targeted kill {name!r}")

    # -- invariants -------------------------------------------------------------------------

    def check(self, when: str) -> None:
        self.check_store(when)
        self.check_runs(when)

    def check_store(self, when: str) -> None:
        listed = self.run("dataset", "list", "--store", self.store, "--format", "json")
        if not self.ok(listed, f"{when}: dataset list"):
            return
        versions = {v["ref"]: v for v in json.loads(listed.stdout)}
        warnings = [line for line in listed.stderr.splitlines() if line.startswith("Warning: ")]
        for dataset in sorted(p for p in self.store.iterdir()):
            for folder in sorted(dataset.iterdir()):
                ref = f"{dataset.name}@{folder.name}"
                if folder.name.startswith("."):  # a killed create's leftover: never a version, always reported
                    if not any(str(folder) in w and "incomplete" in w for w in warnings):
                        self.violation(f"{when}: leftover {folder} is not reported as incomplete by dataset list")
                    continue
                if ref not in versions:
                    self.violation(f"{when}: {folder} is neither a listed version nor reported")
                    continue
                if ref in self.verified:
                    continue
                proc = self.run("dataset", "verify", ref, "--rows", "--store", self.store)
                if self.ok(proc, f"{when}: version {ref}"):
                    self.verified.add(ref)
                if dataset.name == CREATED and versions[ref]["content_hash"] != self.reference["content_hash"]:
                    self.violation(f"{when}: {ref} has content hash {versions[ref]['content_hash']}, "
                                   f"an uninterrupted create gives {self.reference['content_hash']}")

    def check_runs(self, when: str) -> None:
        listed = self.run("runs", "--runs-dir", self.runs, "--format", "json")
        if not self.ok(listed, f"{when}: runs"):
            return
        rows = json.loads(listed.stdout)
        for row in rows:
            if row["status"] == "completed" and "." in Path(row["path"]).name:
                self.violation(f"{when}: `verifily runs` lists {row['path']} as completed")
        for folder in sorted(self.runs.iterdir()):
            if folder.name.endswith((".partial", ".failed")):
                continue
            if folder.name.startswith(".") or not folder.is_dir() or "." in folder.name:
                self.violation(f"{when}: unexpected entry {folder} in the output folder")
                continue
            if str(folder) in self.verified:
                continue
            proc = self.run("reproduce", "--run", folder, "--verify-only", "--format", "json")
            try:
                report = json.loads(proc.stdout)
            except ValueError:
                self.ok(proc, f"{when}: sealed run {folder.name}")
                continue
            failed = [c for c in report["checks"] if c["status"] not in ("MATCH", "NOT CHECKED")]
            if report["verdict"] == "MATCH" and proc.returncode == 0:
                self.verified.add(str(folder))
            elif [c["name"] for c in failed] == ["Eval files"] and "no eval_hashes.json" in failed[0]["reason"]:
                self.incomplete_evals.add(str(folder))  # killed while evaluating: reported, eval re-run at the end
            else:
                self.violation(f"{when}: sealed run {folder.name} does not verify: {report['verdict']} "
                               f"{[(c['name'], c['reason']) for c in failed]}")

    # -- the end: finish everything, compare with the reference ------------------------------

    def finish(self) -> None:
        """Resume every killed run and re-create every killed version, uninterrupted; then every
        sealed run must equal the reference."""
        for folder in self.resumable():
            proc = self.run("train", "--config", self.config, "--resume", folder)
            if self.ok(proc, f"final resume of {folder.name}"):
                self.final["resumed"] += 1
        for folder in sorted(p for p in self.runs.iterdir() if p.name.endswith((".partial", ".failed"))):
            if not (folder / "run_meta.json").is_file():  # killed before its first run_meta.json: nothing to resume
                self.final["left without run_meta"] += 1
        for record in self.episodes:
            if record["kind"] == "create" and not (self.store / CREATED / record["target"]).is_dir():
                proc = self.run("dataset", "create", "--id", CREATED, "--version", record["target"], "--task", "sft",
                                "--from-dir", self.create_source, "--store", self.store)
                if self.ok(proc, f"re-create of {CREATED}@{record['target']}"):
                    self.final["re-created"] += 1
        self.check("after the final resumes and re-creates")
        reference = self.reference["run"]
        for folder in sorted(p for p in self.runs.iterdir() if "." not in p.name):
            if not (folder / "eval" / "eval_hashes.json").is_file():  # killed while evaluating
                proc = self.run("eval", "--run", folder)
                if self.ok(proc, f"final evaluation of {folder.name}"):
                    self.final["re-evaluated"] += 1
                    self.incomplete_evals.discard(str(folder))
                    self.check_runs(f"after re-evaluating {folder.name}")
            got = self.outcome(folder)
            for key in ("metrics", "eval", "adapter", "train_log_steps"):
                if got[key] != reference[key]:
                    self.violation(f"{folder.name}: {key} differ from the uninterrupted run: {got[key]} vs "
                                   f"{reference[key]}")
            self.final["sealed runs compared"] += 1

    # -- report -----------------------------------------------------------------------------

    def summary(self) -> str:
        lines = [f"{'command':<8} {'episodes':>8} {'killed':>7} {'finished':>9}  where the kills landed"]
        for kind in KINDS:
            eps = [e for e in self.episodes if e["kind"] == kind]
            phases = Counter(e["phase"] for e in eps if e["killed"])
            lines.append(f"{kind:<8} {len(eps):>8} {sum(e['killed'] for e in eps):>7} "
                         f"{sum(not e['killed'] for e in eps):>9}  "
                         + ", ".join(f"{p} {n}" for p, n in sorted(phases.items())))
        kills = sum(e["killed"] for e in self.episodes)
        lines.append(f"{'total':<8} {len(self.episodes):>8} {kills:>7} {len(self.episodes) - kills:>9}  "
                     f"({self.kills} random kills, {kills - self.kills} targeted)")
        lines.append("final: " + ", ".join(f"{k} {v}" for k, v in sorted(self.final.items())))
        lines.append("kill windows (s): train/resume " + ", ".join(f"{a:.2f}-{b:.2f}" for a, b in self.windows)
                     + "; create " + ", ".join(f"{a:.2f}-{b:.2f}" for a, b in self.create_windows))
        lines.append(f"reference: train {self.durations.get('train', 0):.1f}s, "
                     f"create {self.durations.get('create', 0):.1f}s, metrics {self.reference.get('run', {}).get('metrics')}")
        lines.append(f"violations: {len(self.violations)}")
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_before_seal() -> None:
    """In the child: SIGKILL when the run folder is about to be renamed into place."""
    real = os.rename

    def rename(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        if str(src).endswith(".partial") and not str(dst).endswith((".partial", ".failed")):
            _die()
        real(src, dst, *a, **kw)

    os.rename = rename


def _kill_removing_checkpoints() -> None:
    """In the child: SIGKILL after the first file of the newest checkpoint is removed at sealing."""
    real = shutil.rmtree

    def rmtree(path: Any, *a: Any, **kw: Any) -> None:
        ckpts = sorted(Path(path).rglob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if ckpts:
            victims = [f for f in ckpts[-1].iterdir() if f.name in ("optimizer.pt", "adapter_model.safetensors")]
            victims[0].unlink()
            _die()
        real(path, *a, **kw)

    shutil.rmtree = rmtree


def _kill_before_version_rename() -> None:
    """In the child: SIGKILL when a dataset create's sealed temporary folder is about to be renamed."""
    real = os.rename

    def rename(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        if Path(src).name.startswith(".") and str(src).endswith(".partial"):
            _die()
        real(src, dst, *a, **kw)

    os.rename = rename


def preimport() -> None:
    """Import what the commands import, so that forked children start warm (no torch ops run here)."""
    from importlib.metadata import entry_points

    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Trainer  # noqa: F401

    for ep in entry_points(group="verifily"):
        ep.load()
    import verifily_core.evaluator  # noqa: F401
    import verifily_core.reproduction.verify  # noqa: F401
    import verifily_local.backend  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=50,
                        help="commands to kill (an episode whose command finishes before its kill does not count) [50]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plan: commands, targets, delays [0]")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--exec", dest="fork", action="store_false",
                        help="start a fresh interpreter for every command instead of forking a warm one")
    parser.add_argument("--model", type=Path, help="an existing tiny model folder (default: build one)")
    parser.add_argument("--verbose", action="store_true", help="print every episode")
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="verifily-kill-test-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["VERIFILY_CACHE_DIR"] = str(work / "cache")
    started = time.monotonic()
    if args.fork:
        preimport()
    test = KillTest(work, args.seed, args.fork, args.verbose)
    try:
        test.prepare(args.model)
        test.targeted()
        number = 0
        while test.kills < args.kills and number < 3 * args.kills:  # an episode whose command finished first
            number += 1                                              # is not a kill
            test.episode(number)
        test.finish()
    finally:
        print(test.summary())
        print(f"seed {args.seed}, {'forked' if args.fork else 'fresh'} processes, "
              f"{time.monotonic() - started:.0f}s, work folder {work}" + ("" if args.keep or args.workdir else
                                                                          " (removed)"))
        if not (args.keep or args.workdir) and not test.violations:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if test.violations else 0


if __name__ == "__main__":
    sys.exit(main())
