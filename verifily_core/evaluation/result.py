"""``EvalResult``: what an evaluation found, and the ``eval_results.json`` document it becomes.

This module imports no NumPy, so ``verifily compare`` can read results cheaply
(:func:`load_eval_result`). The file schema is documented in ``docs/run-directory.md``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import attrs

from verifily_core import files
from verifily_core.errors import EvalError

FORMAT_VERSION = 1
NOTE = "Slice metrics show correlation, not causation."
RESULTS_FILE = "eval_results.json"
PREDICTIONS_FILE = "predictions.jsonl"
HARD_FILE = "hard_examples.jsonl"
PLOTS_DIR = "plots"
"""The folder of an evaluation directory that ``verifily eval --plot`` draws into (removed when
the folder is evaluated again, so no plot outlives its numbers)."""
METHOD = "percentile bootstrap"


@attrs.define
class MetricValue:
    """A scalar metric on one set of rows: value, bootstrap interval, rows that counted."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0

    @property
    def interval(self) -> tuple[float, float] | None:
        """``(ci_low, ci_high)`` or ``None`` when there is no interval."""
        return None if self.ci_low is None or self.ci_high is None else (self.ci_low, self.ci_high)

    def to_json(self) -> dict[str, Any]:
        """``{"value", "ci_low", "ci_high", "n"}``."""
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "MetricValue":
        """Inverse of :meth:`to_json`."""
        return cls(doc.get("value"), doc.get("ci_low"), doc.get("ci_high"), int(doc.get("n") or 0))


@attrs.define
class SliceResult:
    """One slice: its tag keys, the spec that made it, its size, the small flag and its metrics."""

    name: str
    keys: list[str]
    spec: str
    n: int
    small: bool
    metrics: dict[str, MetricValue]

    def to_json(self) -> dict[str, Any]:
        """The slice's entry in ``eval_results.json``."""
        return {"keys": self.keys, "spec": self.spec, "n": self.n, "small": self.small,
                "metrics": {k: v.to_json() for k, v in self.metrics.items()}}


@attrs.define
class EvalResult:
    """The outcome of one evaluation (``overall``/``slices`` as in python-api.md, plus intervals)."""

    task: str
    num_examples: int
    metric_values: dict[str, MetricValue]
    slice_results: dict[str, SliceResult]
    details: dict[str, Any]
    hard_examples: list[dict[str, Any]]
    metrics: list[str]
    higher_is_better: dict[str, bool]
    confidence: dict[str, Any]
    slice_by: list[str] = attrs.field(factory=list)
    min_slice_size: int = 30
    hard_score: str | None = None
    hard_higher_is_better: bool | None = None
    hard_tie_break: list[str] = attrs.field(factory=list)
    hard_threshold: float | None = None
    hard_tested: int = 0
    over_represented: list[dict[str, Any]] = attrs.field(factory=list)
    metric_settings: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    run_id: str | None = None
    test_data_path: str | None = None
    test_data: dict[str, Any] | None = None
    created_at: str | None = None
    eval_duration_seconds: float = 0.0
    output_dir: str | None = None
    files: dict[str, str] = attrs.field(factory=dict)
    plots: list[Path] = attrs.field(factory=list, eq=False)
    records: list[dict[str, Any]] = attrs.field(factory=list, repr=False, eq=False)
    metric_objects: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def overall(self) -> dict[str, float | None]:
        """Overall scalar metric values: ``{"token_f1": 0.71, ...}``."""
        return {k: v.value for k, v in self.metric_values.items()}

    @property
    def intervals(self) -> dict[str, tuple[float, float] | None]:
        """Overall bootstrap intervals: ``{"token_f1": (0.66, 0.76), ...}``."""
        return {k: v.interval for k, v in self.metric_values.items()}

    @property
    def slices(self) -> dict[str, dict[str, float | None]]:
        """Per-slice scalar values: ``{"source=human": {"token_f1": 0.73}, ...}``."""
        return {name: {k: v.value for k, v in s.metrics.items()} for name, s in self.slice_results.items()}

    def to_json_dict(self) -> dict[str, Any]:
        """The ``eval_results.json`` document."""
        test_data = dict(self.test_data or {})
        test_data.setdefault("path", self.test_data_path)
        test_data["num_examples"] = self.num_examples
        return json_safe({
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "task": self.task,
            "created_at": self.created_at,
            "duration_seconds": self.eval_duration_seconds,
            "test_data": test_data,
            "metrics": self.metrics,
            "higher_is_better": self.higher_is_better,
            "metric_settings": self.metric_settings,
            "confidence": self.confidence,
            "overall": {"n": self.num_examples, "metrics": {k: v.to_json() for k, v in self.metric_values.items()}},
            "slice_by": self.slice_by,
            "min_slice_size": self.min_slice_size,
            "slices": {name: s.to_json() for name, s in self.slice_results.items()},
            "details": self.details,
            "hard_examples": {"count": len(self.hard_examples), "score": self.hard_score,
                              "higher_is_better": self.hard_higher_is_better, "tie_break": self.hard_tie_break,
                              "threshold": self.hard_threshold, "tested_rows": self.hard_tested, "file": HARD_FILE,
                              "over_represented": self.over_represented},
            "files": self.files,
            "note": NOTE,
        })

    @classmethod
    def from_json_dict(cls, doc: dict[str, Any], hard_examples: list[dict[str, Any]] | None = None) -> "EvalResult":
        """Rebuild a result from ``eval_results.json`` (``hard_examples`` from its JSONL file)."""
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise EvalError(f"eval results format_version {version!r} is not supported (expected {FORMAT_VERSION})")
        hard = doc.get("hard_examples") or {}
        test_data = doc.get("test_data") or {}
        return cls(
            task=doc["task"], num_examples=int(doc["overall"]["n"]),
            metric_values={k: MetricValue.from_json(v) for k, v in doc["overall"]["metrics"].items()},
            slice_results={name: SliceResult(name, list(s.get("keys") or []), s.get("spec", ""), int(s["n"]),
                                             bool(s.get("small")),
                                             {k: MetricValue.from_json(v) for k, v in s["metrics"].items()})
                           for name, s in (doc.get("slices") or {}).items()},
            details=doc.get("details") or {}, hard_examples=hard_examples or [], metrics=list(doc.get("metrics") or []),
            higher_is_better=dict(doc.get("higher_is_better") or {}), confidence=dict(doc.get("confidence") or {}),
            metric_settings={k: dict(v) for k, v in (doc.get("metric_settings") or {}).items()},
            slice_by=list(doc.get("slice_by") or []), min_slice_size=int(doc.get("min_slice_size") or 0),
            hard_score=hard.get("score"), hard_higher_is_better=hard.get("higher_is_better"),
            hard_tie_break=list(hard.get("tie_break") or []), hard_threshold=hard.get("threshold"),
            hard_tested=int(hard.get("tested_rows") or 0),
            over_represented=list(hard.get("over_represented") or []), run_id=doc.get("run_id"),
            test_data_path=test_data.get("path"), test_data=test_data, created_at=doc.get("created_at"),
            eval_duration_seconds=float(doc.get("duration_seconds") or 0.0), files=dict(doc.get("files") or {}),
        )


def json_safe(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays as lists and numbers, non-finite floats as ``None``,
    mapping keys as strings and anything else unknown as its ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # a NumPy scalar or array
        return json_safe(value.tolist())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def load_eval_result(path: str | Path) -> EvalResult:
    """Read ``eval_results.json`` (a file, or an eval/run directory holding it) and its hard examples.

    :raises EvalError: when the file is missing, not JSON or of an unknown format version.
    """
    path = Path(path)
    for candidate in (path, path / RESULTS_FILE, path / "eval" / RESULTS_FILE):
        if candidate.is_file():
            break
    else:
        raise EvalError(f"{path}: no {RESULTS_FILE} found; run `verifily eval --run <run>` first")
    try:
        doc = files.read_json(candidate)
    except (OSError, ValueError) as exc:
        raise EvalError(f"{candidate}: cannot read eval results ({exc})") from None
    hard_path = candidate.parent / HARD_FILE
    try:
        result = EvalResult.from_json_dict(doc, read_jsonl(hard_path) if hard_path.is_file() else [])
    except EvalError as exc:
        raise EvalError(f"{candidate}: {exc}") from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise EvalError(f"{candidate}: malformed eval results ({type(exc).__name__}: {exc})") from None
    result.output_dir = str(candidate.parent)
    return result


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file such as ``predictions.jsonl`` (EvalError naming a bad line)."""
    return [row for _, row in files.read_jsonl(path, error=EvalError)]
