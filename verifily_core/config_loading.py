"""Building a :class:`~verifily_core.config.TrainConfig` from its sources.

Precedence, highest first: CLI flags > ``section.key=value`` overrides > the config
file > the schema's defaults. Every failure is one
:class:`~verifily_core.errors.ConfigError` line naming the file, override or field.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from verifily_core.config import TrainConfig
from verifily_core.errors import ConfigError
from verifily_core.structuring import type_name


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors for missing or bad files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; pass --config PATH")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type_name(data)}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value``; the value is read as YAML (``[512,256]``, ``true``, ``1e-4``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.match(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$", key):
        raise ConfigError(f"override '{text}': expected section.key=value, e.g. training.num_epochs=5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and re.match(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$", value):
        value = float(value)  # YAML 1.1 reads 1e-4 as a string
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for key ``a.b``, creating sections as needed."""
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{key}': $.{'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def resolve_config(
    path: str | Path | None = None,
    data: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Build the resolved config: defaults < file (or ``data``) < overrides < CLI flags.

    :param path: YAML file to read (ignored when ``data`` is given).
    :param overrides: ``section.key=value`` strings.
    :param flags: dotted paths to values from CLI flags; ``None`` values are ignored.
    """
    raw: dict[str, Any] = copy.deepcopy(dict(data)) if data is not None else (read_config_file(path) if path else {})
    source = str(path) if path and data is None else "config"
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key == "dataset_version":
            raw.pop("data_paths", None)  # an explicit --dataset wins over files in the config
        set_dotted(raw, key, value)
    for required in ("task", "base_model"):
        if required not in raw:
            raise ConfigError(f"{source}: $.{required}: required field is missing")
    return TrainConfig.from_dict(raw, source=source)
