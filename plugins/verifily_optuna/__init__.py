"""Built-in plugin ``optuna``: ``verifily hpo``, hyperparameter search with Optuna (extra ``hpo``).

Every trial is a real, sealed verifily run; see ``docs/hpo.md``. This module imports neither
Optuna nor transformers: ``verifily hpo --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from verifily_core import hookimpl
from verifily_core.cli import verbose_option

HPO_HELP = "Search hyperparameters with Optuna; every trial is a sealed run."


@hookimpl
def verifily_register_commands(cli: click.Group) -> None:
    """``verifily hpo``."""
    cli.add_command(hpo)


@click.command(short_help=HPO_HELP)
@click.option("--config", "config_path", default="train.yaml", show_default=True,
              help="The training config every trial starts from.")
@click.option("--search", "search_path", default="hpo.yaml", show_default=True,
              help="The search file: an hpo section with the study settings and search_space.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table for people; json prints the trials and the best one.")
@verbose_option
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.pass_context
def hpo(ctx: click.Context, config_path: str, search_path: str, fmt: str, overrides: tuple[str, ...]) -> None:
    """Search hyperparameters with Optuna (seeded TPE, median pruning); every trial is a sealed run.

    \b
    hpo.* overrides change the search, the others every trial's config:
      verifily hpo --config train.yaml --search hpo.yaml hpo.n_trials=5
      verifily hpo --config train.yaml --search hpo.yaml \\
          hpo.search_space.training.learning_rate.low=1e-5 training.max_steps=200
    The study lives in <hpo.output_dir>/<hpo.study_name>/ (study.db, runs/, best_trial_config.yaml,
    optimization_history.png, param_importances.png, trials.csv); rerunning the same command
    resumes an interrupted study without repeating finished trials.

    \b
    Exit codes: 0 the study finished (best config written); 1 a config or search-file error,
    or Optuna is not installed; 2 data; 3 a trial's training failed.
    """
    import json
    from importlib.util import find_spec
    from pathlib import Path

    from verifily_core.config_loading import read_config_file, resolve_config
    from verifily_core.errors import ConfigError
    from verifily_optuna.search import load_search, split_overrides

    if find_spec("optuna") is None:
        raise ConfigError("verifily hpo needs Optuna: pip install 'verifily-train[hpo]'")
    if not Path(config_path).is_file():
        raise ConfigError(f"{config_path}: config file not found; pass --config PATH")
    search_overrides, train_overrides = split_overrides(overrides)
    opts = load_search(search_path if Path(search_path).is_file() or search_path != "hpo.yaml" else None,
                       search_overrides)
    base = resolve_config(data=read_config_file(config_path), overrides=train_overrides).to_dict()
    state = ctx.obj
    from verifily_optuna.study import run_study

    result = run_study(base, opts, state.registries, hf_token=state.hf_token, verbose=state.verbose)
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2, default=str))
        return
    _print(result)


def _print(result: Any) -> None:
    click.echo(f"Study {result.study_name} ({result.direction} {result.metric}): {result.study_dir}\n")
    click.echo(f"  {'trial':>5}  {'state':<9} {'value':>10}  params")
    for t in result.trials:
        value = "-" if t["value"] is None else f"{t['value']:.4f}"
        params = ", ".join(f"{k}={v}" for k, v in t["params"].items())
        click.echo(f"  {t['number']:>5}  {t['state']:<9} {value:>10}  {params}")
    if result.best:
        click.echo(f"\n  Best: trial {result.best['number']}, {result.metric} = {result.best['value']:.4f}")
        click.echo(f"  Train it: verifily train --config {result.files.get('best_trial_config.yaml')}")
    for name, path in result.files.items():
        click.echo(f"  {name}: {path}")
