"""``verifily report``: one self-contained HTML page about evaluated runs.

:mod:`.gather` reads what the page shows (each run's ``eval/`` files and ``train_log.jsonl``,
and for several runs ``verifily compare``'s comparison); :mod:`.html` and :mod:`.svg` render
it (inline CSS and SVG, no script, every value escaped); :mod:`.plots` draws the PNGs of
``verifily eval --plot`` with matplotlib (the ``plots`` extra). See ``docs/report.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from verifily_core.report.gather import ReportData, RunReport, gather

__all__ = ["ReportData", "RunReport", "gather", "write_report"]


def write_report(run_refs: Sequence[str | Path], out: str | Path, *, registries: Any, **options: Any) -> Path:
    """Gather the runs (``options`` as for :func:`~verifily_core.report.gather.gather`), render the
    page and write it to ``out`` atomically; returns the path.

    :raises ConfigError: bad options, or ``out`` cannot be written (the line names it).
    :raises EvalError: a run that is not evaluated or does not verify.
    """
    from verifily_core.errors import ConfigError, os_errors_as
    from verifily_core.files import write_text
    from verifily_core.report.html import render_report

    page = render_report(gather(run_refs, registries=registries, **options))
    out = Path(out)
    with os_errors_as(ConfigError, "pass --out with a writable path"):
        return write_text(out, page)
