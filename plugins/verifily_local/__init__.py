"""Built-in compute backend ``local``: HF Trainer + PEFT on this machine (CUDA > MPS > CPU)."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.interfaces import ComputeBackend


class LocalBackend(ComputeBackend):
    """Trains on this machine and writes the run directory."""

    name = "local"

    def run(self, job: Any) -> Any:
        """Train ``job`` (continuing ``job.resume_from`` when set) and return the sealed run."""
        from pathlib import Path

        from verifily_local.backend import run_local

        return run_local(job, resume_dir=Path(job.resume_from) if job.resume_from else None)


@hookimpl
def verifily_register_backends(registry: Any) -> None:
    """Register the ``local`` backend."""
    registry.add(LocalBackend())
