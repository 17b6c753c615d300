"""The ``verifily`` command line: the group, global flags and error handling.

Subcommands live in :mod:`verifily_core.commands` (one small module each) and are
imported only when invoked, so ``verifily --help`` imports no plugin and no heavy
library. Errors derived from :class:`~verifily_core.errors.VerifilyTrainError` become
one ``Error: ...`` line on stderr and their exit code; ``--verbose`` (or
``--log-level DEBUG``) adds the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from importlib import import_module
from typing import Any

import click

from verifily_core import __version__
from verifily_core.errors import ManagedModeUnavailable, VerifilyTrainError, describe_os_error

# command name -> (module, attribute, one-line help shown by `verifily --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("verifily_core.commands.train", "train", "Fine-tune a model on a dataset version (LoRA/QLoRA)."),
    "eval": ("verifily_core.commands.eval", "eval_cmd", "Evaluate a run with tag-sliced metrics and hard examples."),
    "compare": ("verifily_core.commands.compare", "compare", "Compare metrics across runs, per tag slice."),
    "report": ("verifily_core.commands.report", "report", "Write an HTML report of evaluated runs (charts, deltas, data)."),
    "reproduce": ("verifily_core.commands.reproduce", "reproduce", "Verify a run's hashes or re-create it."),
    "predict": ("verifily_core.commands.predict", "predict", "Predict rows with a trained run."),
    "generate": ("verifily_core.commands.predict", "generate", "Generate with a trained SFT run from a prompt."),
    "export": ("verifily_core.commands.export", "export", "Export a run's adapter, or the merged model."),
    "push": ("verifily_core.commands.push", "push", "Push a run to a Hugging Face Hub model repo (private by default)."),
    "attribute": ("verifily_core.commands.attribute", "attribute", "Score training rows by their influence on a test slice."),
    "runs": ("verifily_core.commands.runs", "runs", "List runs in an output directory."),
    "dataset": ("verifily_core.commands.dataset", "dataset", "Create, inspect, verify and diff dataset versions."),
    "plugins": ("verifily_core.commands.plugins", "plugins", "List installed plugins and what they register."),
}

EXTENSIBLE = ("reproduce",)
"""Built-in commands plugins may extend (``verifily_extend_command``); looking one up loads the plugins."""

EXIT_USAGE = 1
"""Exit code of a command-line usage error (unknown command or option, a bad flag value): like a
bad config value it is a configuration error (click's own default, 2, is our data-error code)."""

EXIT_BROKEN_PIPE = 141
"""Exit code when stdout's reader closed the pipe early (128 + SIGPIPE, as a shell reports it)."""


class LazyGroup(click.Group):
    """A click group whose built-in subcommands are imported on first use; commands of plugins
    (the ``verifily_register_commands`` hook) are collected when a name that is not built in is
    looked up. Listing them (``verifily --help``) reads the index of
    :mod:`verifily_core.command_index`, which loads the plugins only when what is installed changed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        builtin = [name for name, (module, _, _) in COMMANDS.items() if _module_exists(module)]
        return builtin + sorted(plugin_command_help(ctx))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return plugin_commands(ctx).get(name)
        if not _module_exists(COMMANDS[name][0]):
            return None
        module, attr, _ = COMMANDS[name]
        command = getattr(import_module(module), attr)
        if name in EXTENSIBLE and not getattr(command, "_verifily_extended", False):
            from verifily_core.plugins import make_plugin_manager

            state = _state(ctx)
            pm = state._registries.pm if state._registries is not None else make_plugin_manager()
            pm.hook.verifily_extend_command(name=name, command=command)
            command._verifily_extended = True  # type: ignore[attr-defined]
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        found = plugin_command_help(ctx)
        rows = [(name, COMMANDS[name][2] if name in COMMANDS else found[name]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # `verifily --bogus`
            exc.exit_code = EXIT_USAGE
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ManagedModeUnavailable as exc:
            click.echo(str(exc), err=True)
            ctx.exit(exc.exit_code)
        except VerifilyTrainError as exc:
            if not getattr(exc, "quiet", False):  # a worker whose error rank 0 or the launcher reports
                _report(ctx, f"Error: {exc}", exc)
            if "torch.distributed" in sys.modules:  # a distributed worker leaves its group with this code
                from verifily_core.distributed import exit_joined

                exit_joined(exc.exit_code)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # the reader went away (`verifily runs | head`): stop quietly, as SIGPIPE would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            ctx.exit(EXIT_BROKEN_PIPE)
        except click.UsageError as exc:  # `verifily train --epochs abc`, `verifily trian`
            exc.exit_code = EXIT_USAGE
            raise
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except OSError as exc:  # a file system error the command did not map: still one line naming the path
            _report(ctx, f"Error: {describe_os_error(exc)}", exc)
            ctx.exit(1)
        except Exception as exc:  # an unexpected bug: still one line unless --verbose
            _report(ctx, f"Error: unexpected {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)", exc)
            ctx.exit(1)


def plugin_commands(ctx: click.Context) -> dict[str, click.Command]:
    """The commands plugins add through ``verifily_register_commands``, by name (collected once
    per process).

    :raises ConfigError: a plugin's command takes a name already in use (both are named).
    """
    return {name: cmd for name, (_, cmd) in _state(ctx).commands().items()}


def plugin_command_help(ctx: click.Context) -> dict[str, str]:
    """``{name: one-line help}`` of plugin commands, for listings; a plugin whose command clashes
    is reported as a warning (running a command reports it as an error)."""
    state = _state(ctx)
    if state.command_help is None:
        from verifily_core.command_index import cached_command_help

        def build() -> dict[str, str]:
            return {name: cmd.get_short_help_str(60) for name, cmd in plugin_commands(ctx).items()}

        try:
            state.command_help = cached_command_help(build)
        except VerifilyTrainError as exc:
            click.echo(f"Warning: {exc}", err=True)
            state.command_help = {}
    return state.command_help


def _state(ctx: click.Context) -> "GlobalState":
    """The context's state; before the group's options are parsed (``verifily --help``), a
    default one kept in the root context's ``meta``."""
    state = ctx.find_object(GlobalState)
    if state is None:
        state = ctx.find_root().meta.setdefault("verifily.state", GlobalState(None, None, "INFO", True))
    return state


def _module_exists(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def _report(ctx: click.Context, line: str, exc: BaseException) -> None:
    rank = os.environ.get("RANK", "0")
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and rank != "0":  # a worker of a distributed run
        line = f"[rank {rank}] {line}"
    state = ctx.find_object(GlobalState)
    if state is not None and state.verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    click.echo(line, err=True)


class GlobalState:
    """Global flags shared with every subcommand through ``ctx.obj``, and the plugins, loaded
    once per process on first use (:attr:`registries`)."""

    def __init__(self, hf_token: str | None, verifily_token: str | None, log_level: str, color: bool) -> None:
        self.hf_token = hf_token
        self.verifily_token = verifily_token
        self.log_level = log_level
        self.color = color
        self.verbose = log_level == "DEBUG"
        self._registries: Any = None
        self._commands: dict[str, tuple[str, click.Command]] | None = None
        self.command_help: dict[str, str] | None = None

    @property
    def registries(self) -> Any:
        """The :class:`~verifily_core.plugins.Registries` of every installed plugin, loaded on first use."""
        if self._registries is None:
            from verifily_core.plugins import load_registries

            self._registries = load_registries()
        return self._registries

    def commands(self) -> dict[str, tuple[str, click.Command]]:
        """``{name: (plugin, command)}`` of plugin commands (see :func:`plugin_commands`)."""
        if self._commands is None:
            from verifily_core.plugins import collect_commands, make_plugin_manager

            pm = self._registries.pm if self._registries is not None else make_plugin_manager()
            self._commands = collect_commands(pm, reserved=COMMANDS)
        return self._commands

    def set_verbose(self) -> None:
        """Turn on DEBUG logging and tracebacks (the per-command ``--verbose``)."""
        self.verbose = True
        self.log_level = "DEBUG"
        logging.getLogger("verifily").setLevel(logging.DEBUG)


def _verbose_callback(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        state = ctx.find_object(GlobalState)
        if state is not None:
            state.set_verbose()


verbose_option = click.option(
    "--verbose", is_flag=True, expose_value=False, is_eager=True, callback=_verbose_callback,
    help="Enable DEBUG logging and show tracebacks.",
)
"""Decorator adding ``--verbose`` to a subcommand."""


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="verifily")
@click.option("--hf-token", envvar="HF_TOKEN", default=None, help="HuggingFace API token [env: HF_TOKEN].")
@click.option("--verifily-token", envvar="VERIFILY_TOKEN", default=None,
              help="Verifily API token, for managed mode [env: VERIFILY_TOKEN].")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              default="INFO", show_default=True, help="Logging verbosity (logs go to stderr).")
@click.option("--no-color", is_flag=True, help="Disable colored output (also honours NO_COLOR).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or progress lines (they are drawn only on a "
              "terminal anyway).")
@click.pass_context
def cli(ctx: click.Context, hf_token: str | None, verifily_token: str | None, log_level: str, no_color: bool,
        quiet: bool) -> None:
    """Verifily Train: fine-tune open models on versioned, tagged datasets and see which data helped.

    \b
    Typical flow:
      verifily train --config train.yaml
      verifily eval --run runs/<run_id>/ --slice-by source
      verifily compare --runs runs/<a>/,runs/<b>/ --slice-by source
      verifily reproduce --run runs/<run_id>/ --verify-only
    """
    from verifily_core.console import set_quiet

    set_quiet(quiet)
    color = not no_color and "NO_COLOR" not in os.environ
    ctx.obj = GlobalState(hf_token, verifily_token, log_level.upper(), color)
    ctx.color = color if not color else None
    logging.basicConfig(stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("verifily").setLevel(log_level.upper())


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="verifily")


if __name__ == "__main__":  # `python -m verifily_core.cli` (how the --nproc launcher starts its workers)
    main()
