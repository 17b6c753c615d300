"""``reproduce()``: prove a run is intact (``verify_only``) or re-create it and compare metrics.

Verdicts and exit codes: ``MATCH`` 0, ``PARTIAL MATCH`` 6 (only the environment differs),
``MISMATCH`` 5; full reproduction: ``REPRODUCIBLE`` 0, ``NOT REPRODUCIBLE`` 5. See
``docs/compare-reproduce.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from verifily_core.reproduction.rerun import reproduce_run
from verifily_core.reproduction.result import (
    EXIT_CODES, MATCH, MISMATCH, NOT_REPRODUCIBLE, PARTIAL, REPRODUCIBLE, Check, MetricRow, ReproduceResult,
)
from verifily_core.reproduction.verify import verify_run

__all__ = [
    "EXIT_CODES", "MATCH", "MISMATCH", "NOT_REPRODUCIBLE", "PARTIAL", "REPRODUCIBLE", "Check", "MetricRow",
    "ReproduceResult", "reproduce", "reproduce_run", "verify_run",
]


def reproduce(run_path: str | Path, verify_only: bool = False, output_dir: str | Path | None = None,
              device: str = "auto", tolerance: float = 0.005, mode: str = "train",
              runs_dir: str | Path = "runs", hf_token: str | None = None, registries: Any = None) -> ReproduceResult:
    """Verify a run's hashes (``verify_only``) or re-create it (``mode`` ``train`` or ``eval``)
    and compare its metrics within ``tolerance``; see :func:`verify_run` and :func:`reproduce_run`."""
    if verify_only:
        return verify_run(run_path, runs_dir)
    return reproduce_run(run_path, mode=mode, output_dir=output_dir, tolerance=tolerance, device=device,
                         runs_dir=runs_dir, hf_token=hf_token, registries=registries)
