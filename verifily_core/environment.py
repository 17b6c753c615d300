"""The environment record of a run (``environment.json``) and its hash.

Only the ``hashed`` part (versions that can change numerical results) enters the
``env_hash``; the ``info`` part is for people (CPU count, CUDA device name, plugins).
Versions are read from package metadata, so collecting them imports no heavy library.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any, Iterable

from verifily_core.hashing import sha256_json

CORE_PACKAGES = ("torch", "transformers", "peft", "accelerate", "verifily-train")
"""Distributions every run records; plugins add theirs through ``verifily_environment_packages``."""


def package_version(dist: str) -> str | None:
    """The installed version of a distribution, or ``None``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect_environment(device: str = "cpu", extra_info: dict[str, Any] | None = None,
                        packages: Iterable[str] = ()) -> dict[str, Any]:
    """The ``environment.json`` document for a run on ``device`` (``cpu``, ``cuda:0``, ``mps``).

    :param packages: distributions to record besides :data:`CORE_PACKAGES`.
    """
    names = sorted({*CORE_PACKAGES, *packages})
    hashed = {
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "device_type": device.split(":")[0],
        "packages": {name: package_version(name) for name in names},
    }
    info: dict[str, Any] = {
        "python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "executable_version": sys.version.split()[0],
    }
    info.update(extra_info or {})
    return {"format_version": 1, "hashed": hashed, "info": info}


def plugin_packages(registries: Any, config: Any) -> list[str]:
    """The distributions plugins name for ``config`` (``verifily_environment_packages``), merged."""
    answers = registries.hook.verifily_environment_packages(config=config)
    return sorted({name for answer in answers for name in (answer or [])})


def env_hash(environment: dict[str, Any]) -> str:
    """``sha256:`` of the canonical JSON of the ``hashed`` part of an environment record."""
    return sha256_json(environment["hashed"])


def diff_environments(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable differences of the hashed parts, e.g. ``torch 2.2.0 vs 2.3.1``."""
    a, b = recorded.get("hashed", {}), current.get("hashed", {})
    out = []
    for key in sorted(set(a) | set(b)):
        if key == "packages":
            pa, pb = a.get(key, {}), b.get(key, {})
            out += [f"{n} {pa.get(n)} vs {pb.get(n)}" for n in sorted(set(pa) | set(pb)) if pa.get(n) != pb.get(n)]
        elif a.get(key) != b.get(key):
            out.append(f"{key} {a.get(key)} vs {b.get(key)}")
    return out
