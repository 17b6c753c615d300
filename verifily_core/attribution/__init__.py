"""``verifily attribute``: which training rows helped or hurt a run on a test slice.

The run's model is rebuilt as evaluation rebuilds it; every training row of its dataset
version gets a projected gradient of its loss, and every test row of the chosen slice one of its
negative log-odds of the reference (``objective="margin"``) or of its loss, with respect to the
trainable (LoRA and head) parameters (:mod:`verifily_core.attribution.gradients`). With
``final`` the rows are scored by their influence on the slice at the final model
(:mod:`verifily_core.attribution.scores`). A run that kept snapshots of those weights during
training (``training.attribution_checkpoints``) can be scored by TracIn (``tracin``): the sum
over the snapshots of the step's learning rate times the inner product of a row's gradient with
the slice's mean gradient; or by ``ensemble``: the influence at each snapshot (and the final
model), each divided by its spread over the rows, averaged (an ensemble over the training
trajectory, as TRAK ensembles over models). Scores are summarised per tag value with
bootstrap intervals. The files go to the run's
``eval/attribution/`` and are sealed with the run's evaluation (``eval/eval_hashes.json``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs

from verifily_core.errors import ConfigError, DataError

FOLDER = "attribution"
ROWS_FILE = "row_scores.jsonl"
TAGS_FILE = "by_tag.json"
SUMMARY_FILE = "attribution.json"
OBJECTIVES = {"margin": "the test rows' negative log-odds of their reference", "loss": "the test rows' loss"}
AUTO = "auto"
"""``--method auto``: ``ensemble`` when the run kept snapshots, else ``final``."""
METHODS = {"final": "influence at the final model (unit projected gradients, Fisher-preconditioned)",
           "ensemble": "influence averaged over the run's snapshots (each scaled to unit spread)",
           "tracin": "TracIn over the run's snapshots (projected gradients, learning-rate weighted)"}


@attrs.define
class AttributionResult:
    """What :func:`attribute_run` computed and where it wrote it."""

    folder: Path
    target: str
    rows: list[dict[str, Any]]
    by_tag: dict[str, Any]
    summary: list[str]
    settings: dict[str, Any]
    validation: dict[str, Any] | None = None
    """What ``--validate K`` measured (``validate.json``), when asked for."""

    def ranked(self, n: int, harmful: bool = True) -> list[dict[str, Any]]:
        """The ``n`` most harmful (lowest score) or most helpful rows."""
        return sorted(self.rows, key=lambda r: r["score"] if harmful else -r["score"])[:n]


def parse_slice(spec: str | None) -> tuple[str, str] | None:
    """``KEY=VALUE`` of ``--slice`` as a pair (``None`` for the whole test split)."""
    if spec is None:
        return None
    key, sep, value = spec.partition("=")
    if not sep or not key or not value:
        raise ConfigError(f"--slice {spec!r}: write TAG=VALUE, e.g. --slice source=human")
    return key, value


def attribute_run(run_path: str | Path, *, registries: Any, test_slice: str | None = None,
                  test_data: str | Path | None = None, projection: int = 32, damping: float = 10.0,
                  batch_size: int | None = None, device: str = "auto", hf_token: str | None = None,
                  verify: bool = True, method: str = "auto", objective: str = "margin") -> AttributionResult:
    """Score every training row of the run at ``run_path`` by its influence on the
    test rows (``test_slice`` ``KEY=VALUE`` of their tags, or all; ``test_data`` instead of the
    dataset's test split) and write ``eval/attribution/``; see the module docstring.

    :raises EvalError: the run is not completed or does not verify.
    :raises DataError: no test rows in the slice, or a dataset that does not verify.
    :param method: ``final`` (influence at the final model), ``ensemble`` (influence averaged over
        the run's snapshots) or ``tracin`` (TracIn over them); ``auto``: ``ensemble`` for a run that
        kept snapshots, else ``final``.
    :param objective: what is explained of each test row: ``margin`` (its negative log-odds of the
        reference, see :func:`~verifily_core.attribution.gradients.row_margins`) or ``loss``.
    :raises ConfigError: a bad ``--slice``, method or objective, ``ensemble`` or ``tracin`` for a
        run without snapshots, or a task whose training features carry no labels.
    """
    if method not in (AUTO, *METHODS):
        raise ConfigError(f"--method {method}: use one of {AUTO}, {', '.join(METHODS)}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective {objective}: use one of {', '.join(OBJECTIVES)}")
    from verifily_core.evaluator import completed_run, verified_config
    from verifily_core.run_lock import lock_run

    pair = parse_slice(test_slice)
    run = completed_run(run_path, "attribute with it")
    with lock_run(run.path):  # one writer of the run's eval/ at a time
        cfg = verified_config(run, "attribute with it", verify)
        return _attribute(run, cfg, registries, pair, test_data, projection, damping, batch_size, device, hf_token,
                          method, objective)


def _attribute(run: Any, cfg: Any, registries: Any, pair: tuple[str, str] | None, test_data: str | Path | None,
               projection: int, damping: float, batch_size: int | None, device: str,
               hf_token: str | None, method: str, objective: str) -> AttributionResult:
    from verifily_core.attribution.gradients import gradient_features
    from verifily_core.attribution.scores import by_tag, influence, summary_lines, unit_rows
    from verifily_core.attribution.snapshots import read_snapshots
    from verifily_core.datasets import resolve_dataset, row_id
    from verifily_core.evaluation.seal import seal_eval
    from verifily_core.evaluator import load_run_model, read_test_rows
    from verifily_core.files import write_json, write_jsonl
    from verifily_core.modeling import quiet_libraries, resolve_device

    started = time.monotonic()
    task = registries.tasks.get(cfg.task)
    test_rows, test_info = read_test_rows(cfg, registries, task, test_data)
    if pair is not None:
        test_rows = [r for r in test_rows if str((r.get("tags") or {}).get(pair[0])) == pair[1]]
        if not test_rows:
            raise DataError(f"no test row has the tag {pair[0]}={pair[1]}; see the tag values with "
                            "`verifily dataset show`")
    target = f"{pair[0]}={pair[1]}" if pair else "the test split"
    train_rows = resolve_dataset(cfg, registries).read_rows("train")
    quiet_libraries()
    dev = resolve_device(device)
    options = task.trained_options(task.parse_options(cfg.task_options), run.path)
    built = load_run_model(run, cfg, registries, dev, hf_token, options)
    model, tok, kind = built.model, built.tokenizer, built.kind
    train_feats, _ = task.prepare_features(train_rows, tok, kind, cfg, options)
    test_feats, _ = task.prepare_features(test_rows, tok, kind, cfg, options)
    if not train_feats or "labels" not in train_feats[0]:
        raise ConfigError(f"task '{cfg.task}' trains on features without labels that a loss can be computed "
                          "from row by row; attribution is not available for it")
    collate = task.data_collator(tok, kind, model)
    # without --batch-size: batches of as many padded tokens as a training batch may hold
    budget = None if batch_size else cfg.training.batch_size * cfg.training.max_seq_length

    def features() -> tuple[Any, Any]:
        return (gradient_features(model, train_feats, collate, batch_size or 1, dev, projection, cfg.seed,
                                  max_tokens=budget),
                gradient_features(model, test_feats, collate, batch_size or 1, dev, projection, cfg.seed,
                                  objective=objective, max_tokens=budget))

    def unit_influence(phi: Any, psi: Any) -> Any:
        return influence(unit_rows(phi), unit_rows(psi), damping)

    if method == AUTO:
        method = "ensemble" if read_snapshots(run.path) else "final"
    snaps = read_snapshots(run.path) if method != "final" else []
    if method != "final" and not snaps:
        raise ConfigError(f"{run.path}: kept no snapshots for --method {method}; train with "
                          "training.attribution_checkpoints: N (e.g. 5), or use --method final")
    if not snaps:
        phi, psi = features()
        scores = unit_influence(phi, psi).tolist()
    else:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        steps = int((run.metrics or {}).get("train_steps") or 0)
        parts = []
        if method == "ensemble" and snaps[-1]["step"] != steps:  # the final model is a member too
            parts.append(_unit(unit_influence(*features())))
        for snap in snaps:
            set_peft_model_state_dict(model, load_file(str(snap["path"])))
            phi, psi = features()
            if method == "tracin":  # lr * <row gradient, slice gradient> at each snapshot
                parts.append(snap["lr"] * (phi.double() @ psi.double().mean(0)))
            else:  # influence at each snapshot, on one scale
                parts.append(_unit(unit_influence(phi, psi)))
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        scores = (total / (len(parts) if method == "ensemble" else 1)).float().tolist()
    rows = [{"index": i, "row_id": row_id(r), "score": s, "tags": dict(r.get("tags") or {}),
             "reference": _excerpt(task.reference(r))}
            for i, (r, s) in enumerate(zip(train_rows, scores))]
    aggregate = by_tag(scores, [r["tags"] for r in rows], seed=cfg.seed)
    summary = summary_lines(aggregate, target)
    settings = {"method": METHODS[method], "objective": objective, "snapshots": [s["step"] for s in snaps],
                "target": target, "test_rows": len(test_rows), "test_data": test_info["path"],
                "train_rows": len(train_rows), "projection": projection, "features": int(phi.shape[1]),
                "gradients": "raw" if method == "tracin" else "unit", "damping": damping, "seed": cfg.seed,
                "run_id": run.run_id,
                "seconds": round(time.monotonic() - started, 3)}
    folder = run.path / "eval" / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / ROWS_FILE, rows)
    write_json(folder / TAGS_FILE, aggregate)
    write_json(folder / SUMMARY_FILE, {**settings, "summary": summary})
    seal_eval(run.path / "eval", run.path, run.run_id)
    return AttributionResult(folder, target, rows, aggregate, summary, settings)


def _unit(scores: Any) -> Any:
    """Scores divided by their standard deviation (left as they are when all are equal)."""
    spread = float(scores.double().std())
    return scores.double() / spread if spread > 0 else scores.double()


def _excerpt(value: Any, width: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[:width - 3] + "..."
