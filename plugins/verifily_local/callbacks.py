"""Trainer callbacks of the local backend: the JSONL training log, NaN/inf guard, terminal progress."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class JsonlLogCallback(TrainerCallback):
    """Appends one JSON object per logging step to ``train_log.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        for key in ("loss", "learning_rate", "grad_norm", "eval_loss", "train_loss", "train_samples_per_second"):
            if key in logs:
                record["lr" if key == "learning_rate" else key] = logs[key]
        record["time"] = round(time.time(), 3)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


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
    """One line per logging step on stderr: step, epoch, loss, ETA."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
        if not logs or "loss" not in logs or not state.max_steps:
            return
        done = state.global_step
        elapsed = time.monotonic() - self.start
        eta = elapsed / max(done, 1) * (state.max_steps - done)
        print(f"  step {done}/{state.max_steps}  epoch {state.epoch or 0:.2f}  loss {logs['loss']:.4f}  "
              f"eta {int(eta // 60)}m{int(eta % 60):02d}s", file=sys.stderr, flush=True)
