"""Verifily Train core: plugin contracts, configuration, datasets, runs and the CLI.

The public Python API (``train``, ``evaluate``, ``compare``, ``reproduce``) is imported
lazily so that ``import verifily_core`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from verifily_core.errors import (
    ConfigError,
    DataError,
    EvalError,
    ManagedModeUnavailable,
    PushError,
    ReproduceError,
    TrainingError,
    VerifilyTrainError,
)
from verifily_core.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

_LAZY = {
    "train": "verifily_core.api",
    "evaluate": "verifily_core.api",
    "compare": "verifily_core.api",
    "reproduce": "verifily_core.api",
    "predict": "verifily_core.api",
    "TrainConfig": "verifily_core.config",
    "make_plugin_manager": "verifily_core.plugins",
    "load_registries": "verifily_core.plugins",
}

__all__ = [
    "ConfigError",
    "DataError",
    "EvalError",
    "ManagedModeUnavailable",
    "PushError",
    "ReproduceError",
    "TrainingError",
    "VerifilyTrainError",
    "hookimpl",
    "hookspec",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verifily_core' has no attribute {name!r}")
