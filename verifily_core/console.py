"""Small helpers for human output: stdout for results, stderr for notes and progress.

Progress bars (tqdm) are drawn on stderr only when it is a terminal and ``--quiet`` was not
given, so piped output and ``--format json`` stay clean.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator, TypeVar

import click

T = TypeVar("T")


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


_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Turn progress output off (``verifily --quiet``) or back on."""
    global _quiet
    _quiet = quiet


def progress_enabled() -> bool:
    """Whether progress bars are shown: stderr is a terminal, ``--quiet`` was not given and
    ``VERIFILY_PROGRESS`` is not ``0`` (``1`` forces them on, e.g. for a terminal recorder)."""
    import os

    forced = os.environ.get("VERIFILY_PROGRESS")
    if _quiet or forced == "0":
        return False
    if forced == "1":
        return True
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def is_quiet() -> bool:
    """Whether ``--quiet`` was given: progress lines are left out too."""
    return _quiet


def progress(iterable: Iterable[T], total: int | None = None, label: str = "", unit: str = "rows") -> Iterator[T]:
    """``iterable`` with a progress bar on stderr (done, rate, ETA) when :func:`progress_enabled`;
    otherwise ``iterable`` itself. A ``range`` with a step counts its covered numbers, so
    ``progress(range(0, len(rows), batch_size))`` advances by the rows of each batch."""
    if not progress_enabled():
        yield from iterable
        return
    bar = progress_bar(total if total is not None else _length(iterable), label, unit)
    try:
        if isinstance(iterable, range):
            for start in iterable:
                yield start  # type: ignore[misc]
                bar.update(min(iterable.step, iterable.stop - start) if iterable.step > 0 else 1)
        else:
            for item in iterable:
                yield item
                bar.update(1)
    finally:
        bar.close()


def progress_bar(total: int | None, label: str = "", unit: str = "rows") -> Any:
    """A tqdm bar on stderr with ``update(n)`` and ``close()``; a no-op object when
    :func:`progress_enabled` is false. ``unit="B"`` shows bytes (KiB, MiB, ...)."""
    if not progress_enabled():
        return _NoBar()
    from tqdm import tqdm

    binary = unit == "B"
    return tqdm(total=total, desc=label or None, unit=unit, unit_scale=binary, unit_divisor=1024 if binary else 1000,
                file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5)


def _length(iterable: Iterable[Any]) -> int | None:
    if isinstance(iterable, range):
        return len(range(iterable.start, iterable.stop)) if iterable.step > 0 else len(iterable)
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class _NoBar:
    def update(self, n: int = 1) -> None:
        """Nothing to advance."""

    def close(self) -> None:
        """Nothing to close."""
