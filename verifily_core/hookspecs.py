"""Hook specifications: the whole contract between the core and its plugins.

Conventions (see ``docs/plugins.md``):

* hooks are always called with keyword arguments; an implementation may accept
  fewer arguments than the spec lists, so specs can grow without breaking plugins;
* the ``verifily_register_*`` hooks are called once per plugin, so what each adds is
  attributed to it: a plugin kind's hook gets a typed registry, and a name registered
  twice is an error naming both plugins;
* ``firstresult`` hooks answer a one-answer question; built-ins implement them with
  ``trylast=True`` so a third-party plugin's answer wins.

Argument types are imported for type checkers only: importing this module stays cheap
(no torch or transformers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click
    from transformers import PretrainedConfig, PreTrainedModel, TrainerCallback

    from verifily_core.config import TrainConfig
    from verifily_core.evaluation.result import EvalResult
    from verifily_core.interfaces import ComputeBackend, Metric, ModelLoader, Slicer, Task
    from verifily_core.plugins import Registry
    from verifily_core.runs import Run

PROJECT = "verifily"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration ---------------------------------------------------------------------------


@hookspec
def verifily_register_tasks(registry: Registry[Task]) -> None:
    """Register task objects (:class:`verifily_core.interfaces.Task`).

    :param registry: call ``registry.add(TaskInstance())``; the name comes from ``.name``.
    """


@hookspec
def verifily_register_model_loaders(registry: Registry[ModelLoader]) -> None:
    """Register model loaders (:class:`verifily_core.interfaces.ModelLoader`).

    :param registry: call ``registry.add(LoaderInstance())``.
    """


@hookspec
def verifily_register_metrics(registry: Registry[Metric]) -> None:
    """Register metrics (:class:`verifily_core.interfaces.Metric`), selectable by name in
    ``eval.metrics`` and ``verifily eval --metrics``.

    :param registry: call ``registry.add(MetricInstance())``.
    """


@hookspec
def verifily_register_slicers(registry: Registry[Slicer]) -> None:
    """Register slicers (:class:`verifily_core.interfaces.Slicer`).

    :param registry: call ``registry.add(SlicerInstance())``.
    """


@hookspec
def verifily_register_backends(registry: Registry[ComputeBackend]) -> None:
    """Register compute backends (:class:`verifily_core.interfaces.ComputeBackend`),
    selected by ``compute.mode``.

    :param registry: call ``registry.add(BackendInstance())``.
    """


# -- decisions (firstresult) ----------------------------------------------------------------


@hookspec(firstresult=True)
def verifily_select_model_loader(task: str, model_config: PretrainedConfig, config: TrainConfig) -> str | None:
    """Name the model loader for a base model, or return ``None`` to pass.

    Called only when ``model.loader`` is ``auto``. The first non-``None`` answer wins;
    built-in answers are ``trylast``.

    :param task: the task name (``sft``, ``classification``, ...).
    :param model_config: the ``transformers.PretrainedConfig`` of the base model.
    :param config: the resolved :class:`verifily_core.config.TrainConfig`.
    :returns: a registered model-loader name, or ``None``.
    """


# -- validation and model preparation -------------------------------------------------------


@hookspec
def verifily_validate_config(config: TrainConfig) -> list[str] | None:
    """Check a resolved config beyond its schema, without importing heavy libraries.

    :param config: the resolved :class:`verifily_core.config.TrainConfig`.
    :returns: problems as ``"$.path.to.field: what is wrong and what to do"`` lines,
        or ``None``/``[]`` when the config is fine. Any problem fails with exit code 1.
    """


@hookspec
def verifily_tracking_sections() -> list[str] | None:
    """Name the sections of ``tracking`` in ``train.yaml`` this plugin reads (e.g. ``["mlflow"]``
    for ``tracking.mlflow``). A section no installed plugin names is a config error, so a typo
    cannot silently turn tracking off; the plugin checks its section's fields itself
    (``verifily_validate_config``, errors naming ``$.tracking.<name>.<field>``).

    :returns: section names, or ``None``/``[]``.
    """


@hookspec
def verifily_model_init_kwargs(config: TrainConfig, device: str) -> dict[str, Any] | None:
    """Contribute keyword arguments to ``from_pretrained`` of the base model
    (e.g. ``quantization_config``). Results of all plugins are merged; a key given by
    two plugins is an error.

    :param config: the resolved :class:`verifily_core.config.TrainConfig`.
    :param device: the resolved device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
    """


@hookspec
def verifily_prepare_model(model: PreTrainedModel, config: TrainConfig) -> None:
    """Prepare a freshly loaded base model before LoRA is applied (e.g.
    ``prepare_model_for_kbit_training``). Called on every plugin, in place.

    :param model: the loaded ``transformers.PreTrainedModel``.
    :param config: the resolved :class:`verifily_core.config.TrainConfig`.
    """


# -- command line ---------------------------------------------------------------------------


@hookspec
def verifily_register_commands(cli: click.Group) -> None:
    """Add commands to the ``verifily`` command line (e.g. ``verifily hpo`` of a search plugin).

    Called only when a command that is not built in is looked up, or when ``verifily --help``
    lists the commands, so plugins cost nothing on other commands. Define commands with
    ``@cli.command()`` (or ``cli.add_command(...)``); a name that is already taken (a
    built-in command or another plugin's) is an error naming the plugin. Inside a command,
    ``click.get_current_context().obj.registries`` holds the loaded plugins.

    :param cli: a ``click.Group`` collecting this plugin's commands.
    """


@hookspec
def verifily_extend_command(name: str, command: click.Command) -> None:
    """Extend a built-in command that accepts extensions (``reproduce``): add options to
    ``command.params`` and wrap ``command.callback`` to act on them (e.g. ``verifily reproduce
    --mlflow-run ID`` of a tracking plugin). Called once per process when the command is looked
    up, for running or for its help; keep it import-light. When none of your options is given,
    call the original callback unchanged.

    :param name: the command's name.
    :param command: the ``click.Command`` to extend in place.
    """


# -- lifecycle ------------------------------------------------------------------------------


@hookspec
def verifily_environment_packages(config: TrainConfig) -> list[str] | None:
    """Name the distributions whose installed versions can change this run's results, beyond
    the core's (``torch``, ``transformers``, ``peft``, ``accelerate``, ``verifily-train``), e.g.
    ``bitsandbytes`` for a quantized run or ``trl`` for preference tuning. Their versions are
    recorded in ``environment.json`` and enter the ``env_hash``; ``reproduce --verify-only``
    compares the same distributions. Results of all plugins are merged.

    :param config: the resolved :class:`verifily_core.config.TrainConfig`.
    :returns: distribution names, or ``None``/``[]``.
    """


@hookspec
def verifily_trainer_callbacks(config: TrainConfig, run_dir: Path) -> list[TrainerCallback] | None:
    """Return extra ``transformers.TrainerCallback`` objects (trackers, custom logging).

    :param config: the resolved :class:`verifily_core.config.TrainConfig`.
    :param run_dir: the directory the run is being written to (a ``pathlib.Path``).
    """


@hookspec
def verifily_tracking_records(run_dir: Path, config: TrainConfig) -> dict[str, Any] | None:
    """Name the records external trackers keep of the run being sealed (e.g. a tracking
    server's run id), so the run points at them. Called once when the run completes, before
    ``run_meta.json`` and ``hashes.json`` are written; the answers are merged into
    ``run_meta.json`` ``tracking`` (sealed with the run). Must be cheap and must not fail the run.

    :param run_dir: the directory being sealed (``<run_id>.partial``).
    :param config: the resolved :class:`verifily_core.config.TrainConfig`.
    :returns: ``{tracker name: JSON-able record}``, or ``None``.
    """


@hookspec
def verifily_run_written(run: Run) -> None:
    """Called after a completed run directory is written and sealed, e.g. to upload or
    index it. Must not modify the directory.

    :param run: the finished :class:`verifily_core.runs.Run`.
    """


@hookspec
def verifily_eval_written(run: Run, result: EvalResult, eval_dir: Path) -> None:
    """Called after an evaluation of a completed run is written and sealed (at the end of
    ``verifily train`` and by ``verifily eval``), e.g. to send its metrics and files to a
    tracker. Must not modify ``eval_dir``.

    :param run: the evaluated :class:`verifily_core.runs.Run`.
    :param result: the :class:`verifily_core.evaluation.result.EvalResult`.
    :param eval_dir: the folder the evaluation was written to (``<run>/eval`` unless ``--output``).
    """
