"""Built-in compute backend ``managed``: Verifily-hosted GPU runners (v1 stub).

v1 accepts ``--mode managed`` and exits with code 10; no data leaves the machine.
"""

from __future__ import annotations

from typing import Any

from verifily_core import hookimpl
from verifily_core.errors import ManagedModeUnavailable
from verifily_core.interfaces import ComputeBackend

MESSAGE = "Managed mode is not yet available. Coming soon."


class ManagedBackend(ComputeBackend):
    """The managed-mode stub: always raises :class:`ManagedModeUnavailable` (exit 10)."""

    name = "managed"
    reads_data = False  # no data leaves the machine: the stub never reads it

    def run(self, job: Any) -> Any:
        """Refuse: managed mode is not available in v1."""
        raise ManagedModeUnavailable(MESSAGE)


@hookimpl
def verifily_register_backends(registry: Any) -> None:
    """Register the ``managed`` backend."""
    registry.add(ManagedBackend())
