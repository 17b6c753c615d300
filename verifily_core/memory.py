"""Memory sizes as people write them (``50MB``, ``2GiB``, ``512M``) and as we print them."""

from __future__ import annotations

import re

from verifily_core.errors import ConfigError

MEMORY_LIMIT_ENV = "VERIFILY_MEMORY_LIMIT"
"""Environment variable of ``verifily train --dry-run --check-batch --memory-limit``."""

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str, source: str = "--memory-limit") -> int:
    """Bytes of ``text``: a number with an optional unit (``B``, ``KB``/``MB``/``GB``/``TB`` in
    powers of 1000, ``K``/``M``/``G``/``T`` and ``KiB``/``MiB``/``GiB``/``TiB`` in powers of 1024).

    :raises ConfigError: naming ``source`` when ``text`` is no size.
    """
    m = _SIZE_RE.match(str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise ConfigError(f"{source}: expected a size such as 512MB, 2GiB or 8G, got {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def fmt_bytes(n: float) -> str:
    """``1.5 GiB``-style sizes."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
