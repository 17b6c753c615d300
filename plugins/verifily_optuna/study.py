"""``verifily hpo``: an Optuna study whose every trial is a real, sealed verifily run.

Seeded TPE (or random) sampling; a median pruner fed the validation metric at every evaluation
during training; the study in SQLite storage so an interrupted search resumes where it stopped
(finished trials are kept, a trial cut short is marked failed and not counted); nested MLflow runs
under a parent when the config tracks with MLflow. Outputs in the study folder:
``best_trial_config.yaml``, ``optimization_history.png``, ``param_importances.png``, ``trials.csv``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

import attrs

from verifily_core import hookimpl
from verifily_core.errors import ConfigError, TrainingError
from verifily_core.files import write_text
from verifily_optuna.search import HpoOptions, apply, check_paths, decoded, suggest

log = logging.getLogger("verifily.hpo")
BEST_CONFIG = "best_trial_config.yaml"
HISTORY_PNG = "optimization_history.png"
IMPORTANCE_PNG = "param_importances.png"
TRIALS_CSV = "trials.csv"
TRACKER = "mlflow"


@attrs.define
class StudyResult:
    """What a search found (``verifily hpo --format json`` prints :meth:`to_json`)."""

    study_name: str
    study_dir: str
    metric: str
    direction: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    files: dict[str, str]
    parent_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def resolve_metric(opts: HpoOptions, cfg: Any, registries: Any) -> tuple[str, str]:
    """``(eval_<metric>, direction)``: ``hpo.metric``, default the task's main metric when the task
    computes it during training, else ``eval_loss``; the direction from the metric plugin."""
    task = registries.tasks.get(cfg.task)
    if opts.metric:
        name = opts.metric.removeprefix("eval_")
    else:
        chosen = cfg.training.validation_metrics if cfg.training.validation_metrics is not None else task.validation_metrics
        name = next((m for m in task.main_metrics if m in chosen), "loss")
    if name == "loss":
        higher = False
    elif name in registries.metrics:
        higher = registries.metrics.get(name).higher_is_better
    else:
        raise ConfigError(f"$.hpo.metric: {registries.metrics.unknown_message(name)}")
    return f"eval_{name}", opts.direction or ("maximize" if higher else "minimize")


class TrialPlugin:
    """Registered for one trial: reports the metric at each evaluation, prunes, and records the
    trial in the run's ``run_meta.json`` ``tracking.hpo``."""

    def __init__(self, trial: Any, metric: str, study_name: str) -> None:
        self.trial, self.metric, self.study_name = trial, metric, study_name
        self.pruned_at: int | None = None
        self.reported: list[tuple[int, float]] = []

    @hookimpl
    def verifily_trainer_callbacks(self, config: Any, run_dir: Path) -> list[Any]:
        from transformers import TrainerCallback

        plugin = self

        class PruningCallback(TrainerCallback):
            def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:
                value = (metrics or {}).get(plugin.metric)
                if value is None or not math.isfinite(float(value)):
                    return
                plugin.reported.append((state.global_step, float(value)))
                plugin.trial.report(float(value), state.global_step)
                if plugin.trial.should_prune():
                    plugin.pruned_at = state.global_step
                    control.should_training_stop = True

        return [PruningCallback()]

    @hookimpl
    def verifily_tracking_records(self, run_dir: Path) -> dict[str, Any]:
        state = "pruned" if self.pruned_at is not None else "completed"
        return {"hpo": {"study": self.study_name, "trial": self.trial.number, "state": state,
                        "pruned_at_step": self.pruned_at}}


def run_study(base: Mapping[str, Any], opts: HpoOptions, registries: Any, hf_token: str | None = None,
              on_trial: Any = None, verbose: bool = False) -> StudyResult:
    """Run (or resume) the study over the training config data ``base``; return its result.

    A failing trial stops the study with its error (the command's one line); Optuna's own report
    of it, with the traceback, is shown only when ``verbose``.

    :raises ConfigError: ``base`` trains in several processes (trials train in this one).
    """
    import optuna
    from optuna.trial import TrialState

    from verifily_core.config import TrainConfig

    cfg = TrainConfig.from_dict(base)
    if cfg.compute.num_processes * cfg.compute.num_nodes > 1:
        raise ConfigError("$.compute.num_processes: hpo trains its trials one at a time, in this process; set "
                          "compute.num_processes=1 (and compute.num_nodes=1) for the search, then train the best "
                          "trial's config with `verifily train --nproc N`")
    check_paths(base, opts)
    metric, direction = resolve_metric(opts, cfg, registries)
    study_dir = opts.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING if verbose else optuna.logging.ERROR)
    sampler = (optuna.samplers.TPESampler(seed=opts.sampler.seed) if opts.sampler.type == "tpe"
               else optuna.samplers.RandomSampler(seed=opts.sampler.seed))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=opts.pruner.n_startup_trials,
                                          n_warmup_steps=opts.pruner.n_warmup_steps)
              if opts.pruner.type == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=opts.study_name, storage=opts.storage_url, sampler=sampler, pruner=pruner,
                                direction=direction, load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(f"$.hpo.direction: study {opts.study_name!r} in {opts.storage_url} was created to "
                          f"{study.direction.name.lower()}; use another hpo.study_name")
    recorded = study.user_attrs.get("metric")
    if recorded and recorded != metric:
        raise ConfigError(f"$.hpo.metric: study {opts.study_name!r} optimises {recorded}, not {metric}; "
                          "use another hpo.study_name")
    study.set_user_attr("metric", metric)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_state_values(stale._trial_id, state=TrialState.FAIL)  # cut short by a kill
        log.warning("trial %d was interrupted; it is marked failed and not counted", stale.number)
    parent = _parent_run(cfg, opts, metric, direction, pruner)
    uri = _client(cfg)[1][1] if parent else None
    done = _finished(study)
    remaining = max(opts.n_trials - len(done), 0)
    if done:
        print(f"Study {opts.study_name}: {len(done)} trial(s) already finished, {remaining} to run", file=sys.stderr)

    def objective(trial: Any) -> float:
        values = suggest(trial, opts)
        plugin = TrialPlugin(trial, metric, opts.study_name)
        data = _trial_config(base, values, opts, trial.number, parent, uri)
        print(f"Trial {trial.number}: " + ", ".join(f"{k}={v}" for k, v in values.items()), file=sys.stderr)
        registries.pm.register(plugin, name=f"hpo-trial-{opts.study_name}-{trial.number}")
        try:
            from verifily_core.api import train

            run = train(data, registries=registries, hf_token=hf_token)
        finally:
            registries.pm.unregister(plugin)
        trial.set_user_attr("run_dir", str(run.path))
        trial.set_user_attr("run_id", run.run_id)
        value = run.metrics.get(metric)
        if value is None and plugin.reported:
            value = plugin.reported[-1][1]
        tracked = (run.tracking or {}).get(TRACKER, {}).get("run_id")
        if tracked:
            trial.set_user_attr("mlflow_run_id", tracked)
        state = "pruned" if plugin.pruned_at is not None else "completed"
        _tag_trial(cfg, parent, tracked, trial.number, state, values, metric, direction, plugin.reported)
        if plugin.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at step {plugin.pruned_at}")
        if value is None:
            raise TrainingError(f"trial {trial.number}: the run has no {metric} (does the dataset have a val split?)")
        return float(value)

    if remaining:
        study.optimize(objective, n_trials=remaining, catch=(), callbacks=[on_trial] if on_trial else [])
    return _outputs(study, base, opts, metric, direction, parent, cfg)


def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def _trial_config(base: Mapping[str, Any], values: Mapping[str, Any], opts: HpoOptions, number: int,
                  parent: str | None, uri: str | None = None) -> dict[str, Any]:
    """A trial's config: the base with the suggested values, its run in ``<study>/runs`` named
    ``<study>-trial-<n>``, the test split left alone unless ``hpo.evaluate_trials``, nested under the
    study's MLflow run (in the study's tracking store, ``uri``) when tracked."""
    data = apply(base, values)
    data["output"] = {**(data.get("output") or {}), "dir": str(opts.study_dir / "runs"),
                      "name": f"{opts.study_name}-trial-{number}", "push_to_hub": False}
    data["eval"] = {**(data.get("eval") or {}), "enabled": opts.evaluate_trials}
    if parent:
        tracking = dict(data.get("tracking") or {})
        section = dict(tracking.get(TRACKER) or {})
        section["parent_run_id"] = parent
        section["tracking_uri"] = uri
        section["tags"] = {**(section.get("tags") or {}), "trial_number": number, "hpo.study": opts.study_name}
        tracking[TRACKER] = section
        data["tracking"] = tracking
    return data


def _tracked(cfg: Any) -> bool:
    section = cfg.tracking.get(TRACKER)
    return isinstance(section, dict) and bool(section.get("enabled"))


def _client(cfg: Any) -> tuple[Any, Any]:
    from verifily_mlflow.options import options_of, resolved_uri
    from verifily_mlflow.tracker import client_for

    opts = options_of(cfg)
    uri = resolved_uri(opts, cfg.output.dir)
    return client_for(uri), (opts, uri)


def _parent_run(cfg: Any, opts: HpoOptions, metric: str, direction: str, pruner: Any) -> str | None:
    """The study's parent MLflow run (reused when the study resumes), or ``None`` when not tracked."""
    if not _tracked(cfg):
        return None
    from verifily_mlflow.tracker import experiment_id, log_batch, warn

    try:
        client, (mopts, uri) = _client(cfg)
    except Exception as exc:
        log.warning("MLflow tracking of the study failed (%s: %s); trials are still tracked if they can be",
                    type(exc).__name__, exc)
        return None
    try:
        exp = experiment_id(client, mopts.experiment_name, uri, mopts.artifact_location)
        found = client.search_runs([exp], filter_string=f"tags.`hpo.study` = '{opts.study_name}' and tags.stage = 'hpo'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        from verifily_mlflow.lineage import git_tags

        run = client.create_run(exp, run_name=opts.study_name,
                                tags={"stage": "hpo", "hpo.study": opts.study_name, **git_tags()})
        log_batch(client, run.info.run_id, params={
            "study_name": opts.study_name, "n_trials": opts.n_trials, "metric": metric, "direction": direction,
            "sampler": f"{opts.sampler.type} (seed {opts.sampler.seed})",
            "pruner": (f"MedianPruner(n_startup_trials={opts.pruner.n_startup_trials}, "
                       f"n_warmup_steps={opts.pruner.n_warmup_steps})" if opts.pruner.type == "median" else "none"),
            "search_space": ", ".join(opts.search_space)})
        return run.info.run_id
    except Exception as exc:
        warn(uri, "creating the study's parent run", exc)
        return None


def _tag_trial(cfg: Any, parent: str | None, run_id: str | None, number: int, state: str, values: Mapping[str, Any],
               metric: str, direction: str, reported: list[tuple[int, float]]) -> None:
    """A trial's MLflow run: its number, status (completed/pruned), suggested values and best value."""
    if not (parent and run_id):
        return
    from verifily_mlflow.lineage import flatten
    from verifily_mlflow.tracker import log_batch, warn

    client, (_, uri) = _client(cfg)
    best = (max if direction == "maximize" else min)((v for _, v in reported), default=None)
    metrics = {f"best_{metric.replace('eval_', 'val_', 1)}": best} if best is not None else {}
    try:
        log_batch(client, run_id, metrics=metrics,
                  tags={"trial_number": str(number), "trial_status": state,
                        **{f"hpo.param.{k}": v for k, v in flatten(dict(values)).items()}})
    except Exception as exc:
        warn(uri, f"tagging trial {number}", exc)


def _outputs(study: Any, base: Mapping[str, Any], opts: HpoOptions, metric: str, direction: str, parent: str | None,
             cfg: Any) -> StudyResult:
    from optuna.trial import TrialState

    from verifily_core.config import TrainConfig

    folder = opts.study_dir
    trials = [_trial_row(t, opts) for t in study.get_trials(deepcopy=False)]
    files = {TRIALS_CSV: str(_write_csv(folder / TRIALS_CSV, trials))}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = None
    if complete:
        bt = study.best_trial
        values = decoded(opts, bt.params)
        best_cfg = TrainConfig.from_dict(apply(base, values))
        write_text(folder / BEST_CONFIG, f"# best trial {bt.number} of study {opts.study_name}: {metric} = {bt.value}\n"
                   + best_cfg.to_yaml())
        files[BEST_CONFIG] = str(folder / BEST_CONFIG)
        best = {"number": bt.number, "value": bt.value, "params": values, "run_dir": bt.user_attrs.get("run_dir")}
    files.update(_plots(study, folder, metric))
    if parent:
        _log_parent(cfg, parent, best, files)
    return StudyResult(opts.study_name, str(folder), metric, direction, trials, best, files, parent)


def _trial_row(t: Any, opts: HpoOptions) -> dict[str, Any]:
    duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    return {"number": t.number, "state": t.state.name.lower(), "value": t.value,
            "params": decoded(opts, t.params), "duration_s": None if duration is None else round(duration, 3),
            "run_id": t.user_attrs.get("run_id"), "run_dir": t.user_attrs.get("run_dir"),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "last_step": max(t.intermediate_values) if t.intermediate_values else None}


def _write_csv(path: Path, trials: list[dict[str, Any]]) -> Path:
    names = sorted({k for t in trials for k in t["params"]})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", *[f"params.{n}" for n in names], "duration_s", "last_step",
                     "run_id", "run_dir", "mlflow_run_id"])
    for t in trials:
        params = [t["params"].get(n, "") for n in names]
        writer.writerow([t["number"], t["state"], "" if t["value"] is None else t["value"], *params,
                         "" if t["duration_s"] is None else t["duration_s"], "" if t["last_step"] is None else t["last_step"],
                         t["run_id"] or "", t["run_dir"] or "", t["mlflow_run_id"] or ""])
    return write_text(path, buf.getvalue())


def _plots(study: Any, folder: Path, metric: str) -> dict[str, str]:
    """``optimization_history.png`` and ``param_importances.png`` (Optuna's matplotlib plots; the
    importances need two completed trials and more than one searched value, else the image says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm
    except ImportError:
        log.warning("matplotlib is not installed: no plots (pip install 'verifily-train[hpo]')")
        return {}
    out = {}
    for name, draw in ((HISTORY_PNG, ovm.plot_optimization_history), (IMPORTANCE_PNG, ovm.plot_param_importances)):
        plt.close("all")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = draw(study, target_name=metric)
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            except Exception as exc:  # too few completed trials for importances
                fig, axis = plt.subplots(figsize=(6, 2))
                axis.axis("off")
                axis.text(0.5, 0.5, f"{name.removesuffix('.png').replace('_', ' ')}: not available\n({exc})",
                          ha="center", va="center", wrap=True)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        out[name] = str(folder / name)
    return out


def _log_parent(cfg: Any, parent: str, best: dict[str, Any] | None, files: Mapping[str, str]) -> None:
    from verifily_mlflow.tracker import log_batch, warn

    client, (_, uri) = _client(cfg)
    try:
        if best is not None:
            log_batch(client, parent, metrics={"best_trial_number": best["number"], "best_trial_value": best["value"]})
        for path in files.values():
            client.log_artifact(parent, path)
        client.set_terminated(parent, "FINISHED")
    except Exception as exc:
        warn(uri, "logging the study's results", exc)
