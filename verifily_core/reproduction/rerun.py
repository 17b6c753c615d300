"""``reproduce_run``: re-create a run and compare every metric within a tolerance.

* ``train``: retrain from the saved ``config.yaml`` on the verified data into a new run
  (``reproduce-<run_id>`` in the original's output directory unless ``output_dir``), evaluated
  like the original (same test file, metrics and slices); compares the training metrics and
  every evaluation metric overall (``test_<metric>``) and per slice (``test_<metric>[<slice>]``).
* ``eval``: re-evaluate the saved adapter with the original evaluation's options into a new
  directory (``<run_id>.reproduce-eval`` beside the run unless ``output_dir``); compares the
  evaluation metrics.

The config and data hashes (and, for ``eval``, the artifacts) must verify first: re-creating a
run from changed inputs would not reproduce it. ``reproduce.json`` is written to the new run's
``eval/`` (the only writable part of a sealed run) or to the evaluation directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from verifily_core.errors import ConfigError, ReproduceError
from verifily_core.evaluation.result import RESULTS_FILE, EvalResult, load_eval_result
from verifily_core.evaluation.seal import seal_eval
from verifily_core.files import write_json
from verifily_core.reproduction.result import (
    ARTIFACTS, CONFIG, DATA, ENV, EVAL, NOT_REPRODUCIBLE, REPRODUCIBLE, MetricRow, ReproduceResult,
)
from verifily_core.reproduction.verify import verify_run
from verifily_core.runs import Run, load_run

MODES = ("train", "eval")
UNSTABLE = ("runtime", "_per_second", "duration")  # wall-clock metrics are not compared
REDACTED = "***"


def reproduce_run(run_path: str | Path, mode: str = "train", output_dir: str | Path | None = None,
                  tolerance: float = 0.005, device: str = "auto", runs_dir: str | Path = "runs",
                  hf_token: str | None = None, *, registries: Any) -> ReproduceResult:
    """Re-create a run (see the module docstring) and compare metrics within ``tolerance``
    (absolute difference).

    :raises ConfigError: unknown mode or negative tolerance.
    :raises ReproduceError: the inputs do not verify, or the original has no metrics to compare.
    """
    if mode not in MODES:
        raise ConfigError(f"--mode {mode}: expected train or eval")
    if not tolerance >= 0:
        raise ConfigError(f"--tolerance {tolerance}: must be a non-negative number")
    original = load_run(run_path, search_dirs=(runs_dir,))
    verified = verify_run(original.path)
    required = (CONFIG, DATA, EVAL) if mode == "train" else (CONFIG, DATA, ARTIFACTS, EVAL)
    for c in verified.checks:
        if c.name in required and not c.ok:
            raise ReproduceError(f"{original.run_id}: {c.name} MISMATCH ({c.reason}); the run's inputs changed, so "
                                 f"it cannot be reproduced (see `verifily reproduce --run {original.path} --verify-only`)")
    orig_eval = _read_eval(original.path / "eval")
    result = ReproduceResult(run_id=original.run_id, verdict=NOT_REPRODUCIBLE, mode=mode, checks=verified.checks,
                             tolerance=tolerance)
    env = verified.check(ENV)
    if env is not None and not env.ok:
        result.notes.append(f"environment differs from the original ({env.reason}): small metric differences may follow")
    if mode == "train":
        new, report_dir = _retrain(original, orig_eval, output_dir, device, hf_token, registries, result)
        before = {**_train_metrics(original.metrics), **_eval_metrics(orig_eval)}
        after = {**_train_metrics(new.metrics), **_eval_metrics(_read_eval(new.path / "eval"))}
        result.reproduced_run, result.output_dir = new.run_id, str(new.path)
        sealed_for = (new.path, new.run_id)
    else:
        if orig_eval is None:
            raise ReproduceError(f"{original.path}: the run was never evaluated; --mode eval needs its "
                                 "eval/eval_results.json (or use --mode train)")
        report_dir = Path(output_dir) if output_dir else original.path.parent / f"{original.run_id}.reproduce-eval"
        _evaluate_like(original.path, orig_eval, report_dir, device, hf_token, registries)
        before, after = _eval_metrics(orig_eval), _eval_metrics(_read_eval(report_dir))
        result.output_dir = str(report_dir)
        sealed_for = (original.path, original.run_id)
    if not before:
        raise ReproduceError(f"{original.path}: the run records no metrics to compare")
    result.metrics = compare_metrics(before, after, tolerance)
    result.verdict = REPRODUCIBLE if all(r.within_tolerance for r in result.metrics) else NOT_REPRODUCIBLE
    result.report_path = str(report_dir / "reproduce.json")
    _write_json(report_dir / "reproduce.json", result.to_json_dict())
    seal_eval(report_dir, *sealed_for)
    return result


def compare_metrics(before: dict[str, float | None], after: dict[str, float | None], tolerance: float) -> list[MetricRow]:
    """One row per original metric: within tolerance when ``|after - before| <= tolerance``
    (both undefined counts as equal; a metric missing from ``after`` does not)."""
    rows = []
    for name, a in before.items():
        present = name in after
        b = after.get(name)
        if a is None or b is None:
            rows.append(MetricRow(name, a, b, None, present and a is None and b is None))
            continue
        delta = b - a
        ok = math.isfinite(delta) and abs(delta) <= tolerance * (1 + 1e-9)
        rows.append(MetricRow(name, a, b, delta, ok))
    return rows


def _retrain(original: Run, orig_eval: EvalResult | None, output_dir: str | Path | None, device: str,
             hf_token: str | None, registries: Any, result: ReproduceResult) -> tuple[Run, Path]:
    from verifily_core.config import TrainConfig
    from verifily_core.training import plan_training, train_plan

    data = _unredacted(TrainConfig.from_yaml(original.path / "config.yaml").to_dict())
    data["output"].update({"dir": str(output_dir or original.path.parent), "name": f"reproduce-{original.run_id}",
                           "push_to_hub": False})
    if device != "auto":
        data["compute"]["device"] = device
    ref = original.dataset.get("ref")
    pinned = bool(ref) and str(data.get("dataset_version") or "").endswith("@latest")
    if pinned:
        data["dataset_version"] = ref
        result.notes.append(f"dataset_version {data['dataset_version'].split('@')[0]}@latest pinned to {ref}, the "
                            "version the run used (so the new run's config hash differs)")
    new = train_plan(plan_training(data, registries=registries), hf_token=hf_token)
    if new.config_hash != original.config_hash and not pinned:
        result.notes.append(f"the reproduced run's config hash differs ({original.config_hash} vs {new.config_hash})")
    if new.data_hash != original.data_hash:
        result.notes.append(f"the reproduced run's data hash differs ({original.data_hash} vs {new.data_hash})")
    if orig_eval is not None:
        done = _read_eval(new.path / "eval")
        if not _same_eval_options(orig_eval, done):
            _evaluate_like(new.path, orig_eval, new.path / "eval", device, hf_token, registries)
    return new, new.path / "eval"


def _evaluate_like(run_path: Path, orig: EvalResult, out: Path, device: str, hf_token: str | None,
                   registries: Any) -> None:
    """Evaluate ``run_path`` with the options of the original evaluation ``orig``."""
    from verifily_core.evaluator import evaluate

    test = orig.test_data or {}
    test_file = None if test.get("split") == "test" else test.get("path")
    evaluate(run_path, test_data=test_file, metrics=orig.metrics or None, slice_by=orig.slice_by,
             hard_examples=len(orig.hard_examples), hard_by=orig.hard_score, output=out, device=device, hf_token=hf_token,
             registries=registries)


def _same_eval_options(orig: EvalResult, new: EvalResult | None) -> bool:
    if new is None:
        return False
    return (orig.metrics, orig.slice_by) == (new.metrics, new.slice_by) and \
        (orig.test_data or {}).get("sha256") == (new.test_data or {}).get("sha256")


def _read_eval(path: Path) -> EvalResult | None:
    """The evaluation in ``path`` (a folder holding ``eval_results.json``), or ``None`` when there is none."""
    if not (path / RESULTS_FILE).is_file():
        return None
    return load_eval_result(path)


def _train_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    return {k: v for k, v in metrics.items() if _numeric(v) and not any(u in k for u in UNSTABLE)}


def _eval_metrics(result: EvalResult | None) -> dict[str, float | None]:
    """``test_<metric>`` overall and ``test_<metric>[<slice>]`` per slice."""
    if result is None:
        return {}
    out = {f"test_{k}": v for k, v in result.overall.items()}
    for name, values in result.slices.items():
        out.update({f"test_{k}[{name}]": v for k, v in values.items()})
    return out


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unredacted(data: Any) -> Any:
    """The config with redacted secrets (``***``) removed, so credentials come from the environment."""
    if isinstance(data, dict):
        return {k: (None if v == REDACTED else _unredacted(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [_unredacted(v) for v in data]
    return data


def _write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
