"""``TrainJob``: a validated, hashed training request handed to a compute backend."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

import attrs

from verifily_core.config import TrainConfig


def utc_now() -> str:
    """The current UTC time as ISO 8601 with a ``Z`` suffix."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_run_id(now: datetime | None = None) -> str:
    """A run id like ``run_20260208_143022_a1b2c3`` (UTC time plus 6 random hex digits)."""
    now = now or datetime.now(timezone.utc)
    return f"run_{now:%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


@attrs.frozen
class TrainJob:
    """Everything a backend needs to train: the resolved config, the verified dataset,
    the hashes, and the plugin registries.

    ``hf_token`` and ``registries`` are never serialized or hashed.
    """

    job_id: str
    config: TrainConfig
    dataset: Any  # verifily_core.datasets.DatasetVersion
    config_hash: str
    data_hash: str
    created_at: str
    registries: Any = attrs.field(repr=False, eq=False)
    hf_token: str | None = attrs.field(default=None, repr=False)
    resume_from: str | None = None

    @property
    def task(self) -> str:
        """The task name."""
        return self.config.task

    @property
    def base_model(self) -> str:
        """The base model id or path."""
        return self.config.base_model
