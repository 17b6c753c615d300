"""Run the ``verifily`` command line from tests: in-process (fast) or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

# ``python -m verifily_core.cli`` has no ``__main__`` guard; this runs the console-script entry.
_ENTRY = "from verifily_core.cli import main; main()"


def invoke_verifily(*args: Any, input: str | None = None, env: Mapping[str, str] | None = None,
                    catch_exceptions: bool = True):
    """Run ``verifily ARGS`` in this process with click's ``CliRunner``.

    Returns click's ``Result``: ``exit_code``, ``stdout`` and ``stderr`` (separate), ``output``
    (both, interleaved) and ``exception``. Arguments are converted with ``str``.
    """
    from click.testing import CliRunner

    from verifily_core.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env=dict(env or {}),
                              catch_exceptions=catch_exceptions, prog_name="verifily")


def run_verifily(*args: Any, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
                 timeout: float | None = 600, input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``verifily ARGS`` in a fresh Python process (the real entry point, real exit code).

    ``env`` is added to a copy of ``os.environ``. Returns the ``CompletedProcess`` with text
    ``stdout`` and ``stderr``.
    """
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", _ENTRY, *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, input=input)
