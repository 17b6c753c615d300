"""Built-in compute backend ``local``: HF Trainer + PEFT on this machine."""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.errors import TrainingError
from verifily_core.interfaces import ComputeBackend


class LocalBackend(ComputeBackend):
    """Trains on this machine (CUDA > MPS > CPU)."""

    name = "local"

    def run(self, job: Any) -> Any:
        """Not implemented yet: local training lands with the training issue."""
        raise TrainingError("local training is not implemented yet in this build")


@hookimpl
def verifily_register_backends(registry: Any) -> None:
    """Register the ``local`` backend."""
    registry.add(LocalBackend())
