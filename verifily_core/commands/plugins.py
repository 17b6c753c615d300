"""``verifily plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import json

import click

from verifily_core.cli import GlobalState
from verifily_core.commands import format_option
from verifily_core.console import out, style


@click.command()
@format_option()
@click.pass_obj
def plugins(state: GlobalState, fmt: str) -> None:
    """List installed plugins: distribution, version, what each registers and the commands it adds."""
    from verifily_core.api import list_plugins

    records = list_plugins(state.registries)
    added = state.commands()
    for rec in records:
        rec["commands"] = sorted(name for name, (plugin, _) in added.items() if plugin == rec["name"])
    if fmt == "json":
        out(json.dumps(records, indent=2))
        return
    for rec in records:
        dist = f"{rec['distribution']} {rec['version']}" if rec["distribution"] else "(registered directly)"
        out(f"{style(rec['name'], bold=True)}  [{dist}]")
        for kind, names in rec["registers"].items():
            out(f"    {kind}: {', '.join(names)}")
        if rec["commands"]:
            out(f"    commands: {', '.join(rec['commands'])}")
        if rec["hooks"]:
            out(f"    hooks: {', '.join(rec['hooks'])}")
