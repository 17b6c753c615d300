"""Trainer callbacks of the local backend: the JSONL training log, NaN/inf guard, terminal progress."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from verifily_core.attribution import snapshots
from verifily_core.console import is_quiet
from verifily_core.distributed import TEST_EXIT_AT_STEP, barrier, world
from verifily_core.files import append_line, read_jsonl, write_jsonl
from verifily_local.checkpoints import write_checkpoint_manifest


EVAL_TIMINGS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def eval_metrics(logs: dict[str, Any]) -> dict[str, Any]:
    """The ``eval_*`` values of a log entry (the loss and the task's validation metrics),
    without the evaluation's timings."""
    return {k: v for k, v in logs.items() if k.startswith("eval_") and k not in EVAL_TIMINGS}


class JsonlLogCallback(TrainerCallback):
    """Appends one JSON object per logging step to ``train_log.jsonl``: step, epoch, loss, lr,
    grad_norm and the throughput since the previous line (non-padding input tokens per second).
    The final line's ``train_loss`` is the whole run's mean (:func:`whole_run_loss`), also after
    a resume, as in ``run_meta.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: tuple[float, int] | None = None
        self._first_step = 0

    def drop_after(self, step: int) -> None:
        """Forget lines logged after ``step`` (a resumed run repeats the steps after its checkpoint)."""
        if self.path.is_file():  # a kill may have cut the last line short: it is dropped too
            kept = [row for _, row in read_jsonl(self.path, skip_torn_tail=True) if row.get("step", 0) <= step]
            write_jsonl(self.path, kept)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._last = (time.monotonic(), state.num_input_tokens_seen)
        self._first_step = state.global_step  # a resumed run starts at its checkpoint

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key in ("loss", "learning_rate", "grad_norm", "train_loss"):
            if key in logs:
                record["lr" if key == "learning_rate" else key] = logs[key]
        record.update(eval_metrics(logs))
        if "train_loss" in logs:  # the Trainer's is this session's mean
            record["train_loss"] = whole_run_loss(state.log_history, self._first_step, state.global_step,
                                                  logs["train_loss"])
        now, tokens = time.monotonic(), state.num_input_tokens_seen
        if "loss" in logs and self._last is not None and now > self._last[0]:
            record["tokens_per_second"] = round((tokens - self._last[1]) / (now - self._last[0]), 1)
            record["tokens_seen"] = tokens
            self._last = (now, tokens)
        record["time"] = round(time.time(), 3)
        append_line(self.path, json.dumps(record) + "\n")


class CheckpointCallback(TrainerCallback):
    """Checkpoint policy of a run.

    * The logging window closes at every checkpoint, so the losses logged up to a checkpoint
      cover every step before it (a resumed run can then report the whole run's mean loss).
    * No checkpoint is written after the last step (the Trainer's default): the run is sealed
      right after and its checkpoints deleted. Kept when the best checkpoint is reloaded.
    * Each saved checkpoint gets its manifest (size and sha256 of its files, written last), so a
      resume can tell a damaged checkpoint and fall back to the one before it.
    """

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step >= state.max_steps and not args.load_best_model_at_end:
            control.should_save = False
        if control.should_save:
            control.should_log = True

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        barrier()  # every rank's RNG state is in the checkpoint before its manifest is taken
        if state.is_world_process_zero and folder.is_dir():
            write_checkpoint_manifest(folder)


class NonFiniteLossCallback(TrainerCallback):
    """Stops training at the first NaN/inf loss or gradient norm and remembers where."""

    def __init__(self) -> None:
        self.bad: str | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, float) and not math.isfinite(value):
                self.bad = f"{key} became {value} at step {state.global_step}"
                control.should_training_stop = True


class ProgressCallback(TrainerCallback):
    """One line per logging step on stderr (step, epoch, loss, ETA) and one per evaluation of the
    val split (its loss and the task's validation metrics); none with ``verifily --quiet``."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.first_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start, self.first_step = time.monotonic(), state.global_step  # a resumed run starts late

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if is_quiet() or not state.is_world_process_zero:
            return
        values = eval_metrics(logs or {})
        if values:
            cells = "  ".join(f"{k.removeprefix('eval_')} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in values.items())
            print(f"  eval at step {state.global_step}:  {cells}", file=sys.stderr, flush=True)
        if not logs or "loss" not in logs or not state.max_steps:
            return
        done = state.global_step
        elapsed = time.monotonic() - self.start
        eta = elapsed / max(done - self.first_step, 1) * (state.max_steps - done)
        print(f"  step {done}/{state.max_steps}  epoch {state.epoch or 0:.2f}  loss {logs['loss']:.4f}  "
              f"eta {int(eta // 60)}m{int(eta % 60):02d}s", file=sys.stderr, flush=True)


def whole_run_loss(log_history: list[dict[str, Any]], first_step: int, last_step: int, session_loss: float) -> float:
    """The mean training loss over all steps of a run that was resumed at ``first_step``.

    ``session_loss`` is the Trainer's mean over the steps of this session; the steps before
    come from the logged losses (each the mean over its window) of the resumed checkpoint.
    """
    if first_step <= 0:
        return session_loss
    total, prev = 0.0, 0
    for entry in sorted((e for e in log_history if "loss" in e and e["step"] <= first_step), key=lambda e: e["step"]):
        total += entry["loss"] * (entry["step"] - prev)
        prev = entry["step"]
    return (total + session_loss * (last_step - first_step)) / max(last_step, 1)



class SnapshotCallback(TrainerCallback):
    """``training.attribution_checkpoints``: the trainable (LoRA and head) weights at ``n`` steps
    evenly spaced over the run (the last one at its end), each as ``snapshots/step-<N>.safetensors``
    with the learning rate of that step in ``snapshots/snapshots.json``, for TracIn attribution."""

    def __init__(self, run_dir: Path, n: int) -> None:
        self.folder, self.n = run_dir / snapshots.FOLDER, n
        self._steps: set[int] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        total = state.max_steps
        self._steps = {max(1, round(k * total / self.n)) for k in range(1, self.n + 1)}

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        scheduler = kw.get("lr_scheduler")
        self._lr = float(scheduler.get_last_lr()[0]) if scheduler is not None else float(args.learning_rate)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step not in self._steps or not state.is_world_process_zero:
            return
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        from verifily_core.files import read_json, write_json

        self.folder.mkdir(exist_ok=True)
        name = snapshots.file_name(state.global_step)
        weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(kw["model"]).items()}
        stage = self.folder / f".{name}.tmp"
        save_file(weights, str(stage))
        stage.replace(self.folder / name)
        index_path = self.folder / snapshots.INDEX
        index = [e for e in (read_json(index_path) if index_path.is_file() else []) if e["step"] != state.global_step]
        index.append({"step": state.global_step, "lr": self._lr, "file": name})
        write_json(index_path, sorted(index, key=lambda e: e["step"]))


class ExitAtStepForTests(TrainerCallback):
    """Test hook only (``VERIFILY_TEST_EXIT_AT_STEP=RANK:STEP``): the process of that rank ends at once
    with ``os._exit(17)`` after that optimizer step, as a worker that crashes or is killed would.
    Added by the local backend only when the variable is set."""

    @staticmethod
    def requested() -> bool:
        """The variable is set."""
        import os

        return bool(os.environ.get(TEST_EXIT_AT_STEP))

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        import os

        rank, step = (int(x) for x in os.environ[TEST_EXIT_AT_STEP].split(":"))
        if world().rank == rank and state.global_step == step:
            os._exit(17)
