"""``verifily attribute --validate K`` and ``--leave-out KEY``: attribution claims checked by retraining.

Both write their outcome next to the scores (``eval/attribution/validate.json``,
``leave_out.json``), sealed with the run's evaluation; see
:mod:`verifily_core.attribution.counterfactual` for how variants are made and reused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from verifily_core.attribution.counterfactual import (
    Variant, compare_variants, derive_version, ensure_slices, outcome, plan_variant, train_variants,
)
from verifily_core.errors import ConfigError

VALIDATE_FILE = "validate.json"
LEAVE_OUT_FILE = "leave_out.json"


def validate_top(run_path: str | Path, k: int, scores: Sequence[dict[str, Any]], target: tuple[str, str] | None, *,
                 registries: Any, store: str | Path | None = None, hf_token: str | None = None) -> dict[str, Any]:
    """Retrain the run without the ``k`` lowest-scoring training rows of ``scores`` (``index``,
    ``score``: an attribution's ``row_scores``) and compare on ``target`` (``KEY=VALUE``, or the
    whole test split); write and return ``validate.json``.

    :raises ConfigError: ``k`` not smaller than the number of training rows.
    """
    run, cfg, dataset, opened = _open(run_path, registries, store)
    if not 0 < k < len(scores):
        raise ConfigError(f"--validate {k}: choose from 1 to {len(scores) - 1} (the run has {len(scores)} training rows)")
    worst = {r["index"] for r in sorted(scores, key=lambda r: r["score"])[:k]}
    derived = derive_version(dataset, lambda i, _row: i in worst, f"the {k} most harmful rows", f"validate{k}",
                             registries=registries, store=opened)
    slice_by = [target[0]] if target else []
    spec = plan_variant(run, cfg, derived, opened, f"{run.run_id} without its {k} most harmful rows",
                        f"without the {k} most harmful rows", k, registries=registries, slice_by=slice_by)
    variant, = train_variants([spec], run.path.parent, hf_token=hf_token)
    ensure_slices(run, slice_by, registries, hf_token)
    result = compare_variants(run.path, [variant], slice_by, registries=registries, seed=cfg.seed)
    name = f"{target[0]}={target[1]}" if target else "overall"
    doc = {"k": k, "removed": sorted(worst), "baseline": run.run_id, **_variant_doc(variant),
           "metric": result.metric, "target": outcome(result, variant.run_id, name),
           "overall": outcome(result, variant.run_id, "overall"), "warnings": list(result.warnings)}
    _write(run, VALIDATE_FILE, doc)
    return doc


def leave_out(run_path: str | Path, key: str, values: Sequence[str] | None = None, *,
              target: tuple[str, str] | None = None, max_steps: int | None = None, fraction: float | None = None,
              registries: Any, store: str | Path | None = None, hf_token: str | None = None,
              jobs: int = 1, progress: Any = None) -> dict[str, Any]:
    """Retrain the run once per value of the tag ``key`` (``values``, or every value its training
    rows carry), each without that value's rows, and compare every variant with the run (or, with
    a budget, with the full data retrained on the same budget) per slice of ``key`` and of
    ``target``'s key; write and return ``leave_out.json``. Finished variants are reused.

    :param max_steps: train every variant (and the baseline) for this many optimizer steps.
    :param fraction: the same, as a fraction of the run's own steps.
    :param jobs: variants trained at once (each in its own ``verifily train`` process when above 1).
    :raises ConfigError: both budgets, an unknown key or value.
    """
    run, cfg, dataset, opened = _open(run_path, registries, store)
    if max_steps is not None and fraction is not None:
        raise ConfigError("--max-steps and --fraction both set a budget; give one")
    seen: dict[str, int] = {}
    for row in dataset.iter_rows("train"):
        tags = row.get("tags") or {}
        if key in tags:
            seen[str(tags[key])] = seen.get(str(tags[key]), 0) + 1
    if not seen:
        raise ConfigError(f"--leave-out {key}: no training row of {dataset.ref or 'the run dataset'} has that tag "
                          f"(tag keys: {', '.join(dataset.tag_keys) or 'none'})")
    chosen = list(values) if values else sorted(seen)
    unknown = [v for v in chosen if v not in seen]
    if unknown:
        raise ConfigError(f"--values: {key}={', '.join(unknown)} carried by no training row "
                          f"(values: {', '.join(sorted(seen))})")
    if fraction is not None:
        steps = int((run.metrics or {}).get("train_steps") or 0)
        if steps <= 0:
            raise ConfigError(f"--fraction: {run.path} records no training steps; use --max-steps")
        max_steps = max(1, math.ceil(fraction * steps))
    slice_by = list(dict.fromkeys([key, *([target[0]] if target else [])]))
    steps_tag = f"-{max_steps}steps" if max_steps else ""
    specs = []
    for value in chosen:
        derived = derive_version(dataset, lambda _i, row, v=value: str((row.get("tags") or {}).get(key)) == v,
                                 f"rows with {key}={value}", f"without-{key}-{value}", registries=registries,
                                 store=opened)
        specs.append(plan_variant(run, cfg, derived, opened, f"{run.run_id} without {key}={value}{steps_tag}",
                                  f"{key}={value} left out", seen[value], registries=registries,
                                  max_steps=max_steps, slice_by=slice_by))
    if max_steps:  # the run trained longer: the full data on the same budget is the fair baseline
        specs.append(plan_variant(run, cfg, None, opened, f"{run.run_id} full data{steps_tag}", "the full data", 0,
                                  registries=registries, max_steps=max_steps, slice_by=slice_by))
    variants: list[Variant] = train_variants(specs, run.path.parent, jobs=jobs, hf_token=hf_token, progress=progress)
    if max_steps:
        baseline = variants.pop().run_path
    else:
        ensure_slices(run, slice_by, registries, hf_token)
        baseline = run.path
    result = compare_variants(baseline, variants, slice_by, registries=registries, seed=cfg.seed)
    slices = ["overall", *(s for spec in slice_by for s in result.slice_groups.get(spec, []))]
    doc = {"key": key, "baseline": baseline.name, "max_steps": max_steps, "metric": result.metric,
           "target": f"{target[0]}={target[1]}" if target else None,
           "variants": [{**_variant_doc(v), "value": value,
                         "slices": [outcome(result, v.run_id, s) for s in slices]}
                        for value, v in zip(chosen, variants)],
           "warnings": list(result.warnings)}
    _write(run, LEAVE_OUT_FILE, doc)
    return doc


def _open(run_path: str | Path, registries: Any, store: str | Path | None) -> tuple[Any, Any, Any, Any]:
    from verifily_core.datasets import resolve_dataset
    from verifily_core.datasets.store import open_store
    from verifily_core.evaluator import completed_run, verified_config

    run = completed_run(run_path, "check its attribution")
    cfg = verified_config(run, "check its attribution", True)
    return run, cfg, resolve_dataset(cfg, registries), open_store(store, cfg.dataset_store)


def _variant_doc(v: Variant) -> dict[str, Any]:
    return {"label": v.label, "removed_rows": v.removed, "dataset": v.dataset, "run_id": v.run_id,
            "run": str(v.run_path), "reused": v.reused}


def _write(run: Any, name: str, doc: dict[str, Any]) -> None:
    from verifily_core.attribution import FOLDER
    from verifily_core.evaluation.seal import seal_eval
    from verifily_core.files import write_json
    from verifily_core.run_lock import lock_run

    with lock_run(run.path):
        folder = run.path / "eval" / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / name, doc)
        seal_eval(run.path / "eval", run.path, run.run_id)
