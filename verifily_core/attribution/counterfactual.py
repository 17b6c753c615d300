"""Checking attribution by retraining: without the most harmful rows, or without a tag value.

An influence score is an estimate; the check is the counterfactual it predicts. Each variant is
a **derived dataset version** in the store: the run's version less some training rows, its
``manifest.json`` naming what it derives from (``derived_from``: the source version and content
hash, the rule and the row indices removed). The variant is trained with the run's config and
seed on it (a new sealed run, evaluated on the same test split), then compared with the run by
the paired bootstrap of ``verifily compare``, overall and per slice.

Variants are reused: a derived version is created once (its name carries a digest of the source
content and of the rows removed), and a completed run under the run's output folder with the
variant's config hash is taken as its run, so an interrupted ``--leave-out`` resumes where it
stopped. A budget (``max_steps``) trains every variant shorter; the run is then not a fair
baseline, so the full dataset is retrained with the same budget and compared instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from verifily_core.errors import DataError

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@attrs.define
class Variant:
    """One retrained variant of a run: what was removed and the run that learned without it."""

    label: str
    removed: int
    dataset: str
    run_id: str
    run_path: Path
    reused: bool


def derive_version(dataset: Any, drop: Callable[[int, Mapping[str, Any]], bool], rule: str, slug: str,
                   *, registries: Any, store: Any) -> Any:
    """The version ``dataset`` less the training rows ``drop(index, row)`` selects, created in
    ``store`` (or the existing one made by the same removal). Other splits are kept as they are.

    :raises DataError: nothing or everything would be removed, or a version of that name exists
        with other content.
    """
    from verifily_core.files import write_lines

    removed: list[int] = []
    kept = 0
    for i, row in enumerate(dataset.iter_rows("train")):  # streamed twice: never the whole split in memory
        if drop(i, row):
            removed.append(i)
        else:
            kept += 1
    if not removed:
        raise DataError(f"{rule}: no training row of {dataset.ref or 'the run dataset'} matches, so nothing "
                        "would change; check the tag values with `verifily dataset show`")
    if not kept:
        raise DataError(f"{rule}: every training row would be removed; nothing would be left to train on")
    digest = hashlib.sha256(json.dumps([dataset.content_hash, removed]).encode()).hexdigest()[:10]
    version = f"{dataset.version}-{_SLUG.sub('_', slug)[:48]}-{digest}"
    from verifily_core.datasets.resolve import PATHS_DATASET_ID

    dataset_id = dataset.dataset_id if dataset.ref else PATHS_DATASET_ID
    origin = {"ref": dataset.ref, "content_hash": dataset.content_hash, "rule": rule,
              "removed_rows": len(removed), "removed": {"train": removed}}
    existing = next((v for v in store.versions(dataset_id) if v.version == version), None)
    if existing is not None:
        if existing.derived_from.get("content_hash") != dataset.content_hash or \
                existing.derived_from.get("removed") != origin["removed"]:
            raise DataError(f"dataset {existing.ref} exists in {store.root} but was not derived this way; "
                            "remove it or use another store (--store)")
        return existing
    gone = set(removed)
    with tempfile.TemporaryDirectory(prefix=".derive-") as tmp:
        train = Path(tmp) / "train.jsonl"
        write_lines(train, (json.dumps(r, ensure_ascii=False) + "\n"
                            for i, r in enumerate(dataset.iter_rows("train")) if i not in gone))
        paths = {"train": train, **{s: dataset.split_path(s) for s in ("val", "test") if dataset.has_split(s)}}
        return store.create(dataset_id, version, dataset.task, paths, tag_schema=dataset.tag_schema or None,
                            registries=registries, derived_from=origin)


@attrs.define
class VariantSpec:
    """A variant to train: its plan (the run's config on ``dataset``) and what it removed."""

    label: str
    removed: int
    dataset: str
    plan: Any


def plan_variant(run: Any, cfg: Any, dataset: Any | None, store: Any, name: str, label: str, removed: int, *,
                 registries: Any, max_steps: int | None = None, slice_by: Sequence[str] = ()) -> VariantSpec:
    """The run's config ``cfg`` on ``dataset`` (a derived version; ``None``: the run's own data),
    at most ``max_steps`` steps, evaluated with ``slice_by`` added to its slices, into the run's
    output folder, named ``name``."""
    from verifily_core.training import plan_training

    data = cfg.to_dict()
    if dataset is not None:
        data.update(data_paths=None, dataset_version=dataset.ref, dataset_store=str(store.root))
    data["output"] = {**data["output"], "dir": str(run.path.parent), "name": name, "push_to_hub": False}
    data["training"] = {**data["training"], "attribution_checkpoints": 0,
                        **({"max_steps": max_steps} if max_steps else {})}
    data["eval"] = {**data["eval"], "slice_by_tags": list(dict.fromkeys([*data["eval"]["slice_by_tags"], *slice_by]))}
    ref = dataset.ref if dataset is not None else (cfg.dataset_version or "data_paths")
    return VariantSpec(label, removed, ref, plan_training(data, registries=registries))


def train_variants(specs: Sequence[VariantSpec], folder: Path, *, jobs: int = 1, hf_token: str | None = None,
                   progress: Callable[[str], None] | None = None) -> list[Variant]:
    """Train every spec not already finished in ``folder`` (a completed run with its config
    hash), ``jobs`` at a time: one in this process, or several as ``verifily train`` processes
    (each through the config's compute backend). Returns the variants in the order of ``specs``.

    :raises TrainingError: a variant's training failed (its last error line and log named).
    """
    from verifily_core.training import train_plan

    found: dict[int, tuple[Path, bool]] = {}
    pending = []
    for i, spec in enumerate(specs):
        done = finished_run(folder, spec.plan.config_hash)
        if done is not None:
            found[i] = (done, True)
        else:
            pending.append(i)
    if jobs <= 1:
        for i in pending:
            if progress:
                progress(f"training {specs[i].label} ({specs[i].removed} rows removed)")
            found[i] = (train_plan(specs[i].plan, hf_token=hf_token).path, False)
    elif pending:
        for i, path in _train_in_processes([specs[i] for i in pending], pending, jobs, hf_token, progress):
            found[i] = (path, False)
        missing = [specs[i].label for i in pending if finished_run(folder, specs[i].plan.config_hash) is None]
        if missing:
            from verifily_core.errors import TrainingError

            raise TrainingError(f"no completed run for {', '.join(missing)} in {folder}")
    return [Variant(s.label, s.removed, s.dataset, found[i][0].name, found[i][0], found[i][1])
            for i, s in enumerate(specs)]


def _train_in_processes(specs: Sequence[VariantSpec], keys: Sequence[int], jobs: int, hf_token: str | None,
                        progress: Callable[[str], None] | None) -> list[tuple[int, Path]]:
    """``verifily train`` for each spec, ``jobs`` processes at a time; ``(key, run path)`` of each."""
    import os
    import subprocess
    import sys
    import time

    from verifily_core.errors import TrainingError
    from verifily_core.files import write_text

    env = {**os.environ, **({"HF_TOKEN": hf_token} if hf_token else {})}
    out: list[tuple[int, Path]] = []
    with tempfile.TemporaryDirectory(prefix=".variants-") as tmp:
        queue = list(zip(keys, specs))
        running: list[tuple[int, VariantSpec, Any, Any]] = []
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    key, spec = queue.pop(0)
                    config = write_text(Path(tmp) / f"variant{key}.yaml", spec.plan.config.to_yaml())
                    if progress:
                        progress(f"training {spec.label} ({spec.removed} rows removed) in a separate process")
                    output = tempfile.TemporaryFile(dir=tmp)  # the process's output, read if it fails
                    proc = subprocess.Popen([sys.executable, "-m", "verifily_core.cli", "--quiet", "train",
                                             "--config", str(config)], stdout=output, stderr=subprocess.STDOUT, env=env)
                    running.append((key, spec, proc, output))
                time.sleep(0.2)
                for item in [r for r in running if r[2].poll() is not None]:
                    running.remove(item)
                    key, spec, proc, output = item
                    output.seek(0)
                    lines = output.read().decode("utf-8", errors="replace").strip().splitlines()
                    output.close()
                    if proc.returncode != 0:
                        errors = [line for line in lines if line.startswith("Error:")] or lines[-1:]
                        raise TrainingError(f"training {spec.label} failed (exit {proc.returncode}): "
                                            f"{errors[-1] if errors else 'no output'}")
                    done = finished_run(Path(spec.plan.config.output.dir), spec.plan.config_hash)
                    if done is not None:
                        out.append((key, done))
        finally:
            for _, _, proc, output in running:  # a failure or an interrupt stops the others
                proc.terminate()
                proc.wait()
                output.close()
    return out


def finished_run(folder: Path, config_hash: str) -> Path | None:
    """A completed run directly under ``folder`` whose config hash is ``config_hash``, else ``None``."""
    from verifily_core.files import read_json

    for meta in sorted(folder.glob("*/run_meta.json")):
        try:
            doc = read_json(meta)
        except (OSError, ValueError):
            continue
        if doc.get("status") == "completed" and (doc.get("hashes") or {}).get("config_hash") == config_hash:
            return meta.parent
    return None


def compare_variants(baseline: Path, variants: Sequence[Variant], slice_by: Sequence[str], *,
                     registries: Any, seed: int) -> Any:
    """``verifily compare`` of ``baseline`` and the variants on the task's main metric, overall
    and by ``slice_by`` (the run's slices are re-evaluated by those keys first when missing)."""
    from verifily_core.comparison.compare_runs import compare

    return compare([str(baseline), *(str(v.run_path) for v in variants)], metric="main",
                   slice_by=",".join(slice_by) or None, registries=registries, seed=seed, data_changes=False)


def ensure_slices(run: Any, slice_by: Sequence[str], registries: Any, hf_token: str | None) -> None:
    """Re-evaluate ``run`` with its slices plus ``slice_by`` when it was not evaluated by all of them."""
    from verifily_core.evaluator import evaluate
    from verifily_core.files import read_json

    path = run.path / "eval" / "eval_results.json"
    have = list(read_json(path).get("slice_by") or []) if path.is_file() else []
    if path.is_file() and set(slice_by) <= set(have):
        return
    evaluate(run.path, slice_by=list(dict.fromkeys([*have, *slice_by])), registries=registries, hf_token=hf_token)


def outcome(result: Any, run_id: str, slice_name: str) -> dict[str, Any]:
    """The delta of ``run_id`` against the baseline on ``slice_name`` (``overall`` or a slice),
    with its paired interval, from a :class:`~verifily_core.comparison.result.CompareResult`."""
    from verifily_core.comparison.result import OVERALL

    interval = ((result.intervals or {}).get(run_id) or {}).get(slice_name) or {}
    delta = result.deltas.get(run_id) if slice_name == OVERALL else (result.slice_deltas.get(slice_name) or {}).get(run_id)
    value = result.overall.get(run_id) if slice_name == OVERALL else (result.slices or {}).get(slice_name, {}).get(run_id)
    return {"slice": slice_name, "value": value, "delta": delta, "ci_low": interval.get("ci_low"),
            "ci_high": interval.get("ci_high"), "significant": bool(interval.get("significant")),
            "n": interval.get("n")}
