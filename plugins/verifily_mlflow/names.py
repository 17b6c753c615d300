"""Metric names of a tracked run (no MLflow import): what the Trainer logs, and the test metrics of
an evaluation overall, with their confidence bounds, and per slice.

MLflow names allow letters, digits, ``_ - . /`` and spaces, so a slice name
(``source=human&difficulty=hard``) is written with ``.`` between key and value and ``/`` between
pairs: ``test_macro_f1.source.human/difficulty.hard``; any other character becomes ``_``.
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any, Mapping

STEP_NAMES = {"loss": "train_loss", "learning_rate": "lr", "grad_norm": "grad_norm"}
"""Trainer log keys of a logging step -> metric names."""
EVAL_TIMINGS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
_BAD = re.compile(r"[^\w.\- /]")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def step_metrics(logs: Mapping[str, Any]) -> dict[str, float]:
    """One Trainer log entry as metrics: ``train_loss``, ``lr``, ``grad_norm`` of a logging step;
    ``val_loss`` and ``val_<metric>`` of an evaluation of the val split (``eval_*`` renamed); the
    ``epoch`` with either. The end-of-training summary (``train_loss``, ``train_runtime``) gives
    nothing: its numbers are logged from ``run_meta.json`` as ``final_*``."""
    out: dict[str, float] = {}
    for key, value in logs.items():
        number = _number(value)
        if number is None:
            continue
        if key in STEP_NAMES:
            out[STEP_NAMES[key]] = number
        elif key.startswith("eval_") and key not in EVAL_TIMINGS:
            out["val_" + key.removeprefix("eval_")] = number
    if out and _number(logs.get("epoch")) is not None:
        out["epoch"] = float(logs["epoch"])
    return out


def final_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """A run's ``run_meta.json`` metrics as ``final_<name>`` (``eval_*`` as ``final_val_*``)."""
    out = {}
    for key, value in metrics.items():
        number = _number(value)
        if number is not None:
            out["final_" + ("val_" + key.removeprefix("eval_") if key.startswith("eval_") else key)] = number
    return out


def slice_part(slice_name: str) -> str:
    """The part of a metric name that names a slice (see the module docstring)."""
    pairs = [pair.replace("=", ".", 1) for pair in slice_name.split("&")]
    text = _BAD.sub("_", "/".join(pairs))
    if posixpath.normpath(text) != text or text.startswith("/"):  # an empty or dot-only part
        text = text.replace("/", "_")
    return text


def tracked_test_metrics(result: Any) -> dict[str, float]:
    """The scalar test metrics of an ``EvalResult``: ``test_<metric>`` with ``.ci_low`` and
    ``.ci_high``, ``test_n``, and the same per slice (``test_<metric>.<slice>``, ``test_n.<slice>``,
    ``test_<metric>.<slice>.ci_low``)."""
    out: dict[str, float] = {"test_n": float(result.num_examples)}

    def add(values: Mapping[str, Any], suffix: str) -> None:
        for name, mv in values.items():
            value = _number(mv.value)
            if value is None:
                continue
            out[f"test_{name}{suffix}"] = value
            for bound in ("ci_low", "ci_high"):
                number = _number(getattr(mv, bound))
                if number is not None:
                    out[f"test_{name}{suffix}.{bound}"] = number

    add(result.metric_values, "")
    for slice_name, sl in result.slice_results.items():
        part = slice_part(slice_name)
        out[f"test_n.{part}"] = float(sl.n)
        add(sl.metrics, f".{part}")
    return out
