"""Model-independent evaluation: per-example records in; metrics overall and per slice with
seeded bootstrap intervals, hard examples and the ``eval/`` files out.

Names are imported lazily so that importing this package costs nothing (NumPy is loaded only
when something is computed). See ``docs/evaluation.md``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "build_eval_result": "verifily_core.evaluation.report",
    "EvalResult": "verifily_core.evaluation.result",
    "MetricValue": "verifily_core.evaluation.result",
    "SliceResult": "verifily_core.evaluation.result",
    "load_eval_result": "verifily_core.evaluation.result",
    "read_jsonl": "verifily_core.evaluation.result",
    "write_eval_files": "verifily_core.evaluation.writer",
    "render_eval": "verifily_core.evaluation.render",
    "paired_bootstrap_delta": "verifily_core.evaluation.paired",
    "metric_value": "verifily_core.evaluation.paired",
    "PairedDelta": "verifily_core.evaluation.paired",
    "parse_slice_by": "verifily_core.slices",
    "tag_keys": "verifily_core.evaluation.slicing",
    "compute_slices": "verifily_core.evaluation.slicing",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verifily_core.evaluation' has no attribute {name!r}")
