"""Small helpers for human output: stdout for results, stderr for notes and progress."""

from __future__ import annotations

import click


def out(text: str = "") -> None:
    """Print a line of results to stdout."""
    click.echo(text)


def note(text: str) -> None:
    """Print a note or warning for people to stderr."""
    click.echo(text, err=True)


def style(text: str, **kwargs: object) -> str:
    """``click.style`` (colour is dropped automatically when disabled or not a terminal)."""
    return click.style(text, **kwargs)  # type: ignore[arg-type]


def fmt_duration(seconds: float) -> str:
    """``42m 18s`` style durations."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m}m {s}s"
    if m:
        return f"{m}m {s}s"
    return f"{s}s"
