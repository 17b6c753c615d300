"""One module per ``verifily`` subcommand, plus the options they share."""

from __future__ import annotations

from typing import Any, Callable

import click


def format_option(*choices: str, help: str = "table for people, json for programs.") -> Callable[[Any], Any]:
    """The ``--format`` option (parameter ``fmt``), ``table`` by default; ``choices`` default to table and json."""
    return click.option("--format", "fmt", type=click.Choice(list(choices or ("table", "json"))), default="table",
                        show_default=True, help=help)
