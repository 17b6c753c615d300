"""``verifily plugins``: what is installed and what each plugin registers."""

from __future__ import annotations

import json

import click

from verifily_core.commands import format_option
from verifily_core.console import out, style


@click.command()
@format_option()
def plugins(fmt: str) -> None:
    """List installed plugins: distribution, version and what each registers."""
    from verifily_core.plugins import describe_plugins, load_registries

    records = describe_plugins(load_registries())
    if fmt == "json":
        out(json.dumps(records, indent=2))
        return
    for rec in records:
        dist = f"{rec['distribution']} {rec['version']}" if rec["distribution"] else "(registered directly)"
        out(f"{style(rec['name'], bold=True)}  [{dist}]")
        for kind, names in rec["registers"].items():
            out(f"    {kind}: {', '.join(names)}")
        if rec["hooks"]:
            out(f"    hooks: {', '.join(rec['hooks'])}")
