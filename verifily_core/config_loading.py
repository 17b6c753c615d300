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
from verifily_core.structuring import MAX_DEPTH, type_name


MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this (1 MiB) is refused: no real train.yaml comes near it."""
MAX_CONFIG_VALUES = 100_000
"""Values a config may hold once YAML aliases are expanded (an alias bomb stops here)."""
MAX_CONFIG_DEPTH = MAX_DEPTH
"""Deepest nesting of mappings and lists, in the text and once aliases are expanded."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (YAML says keys are
    unique; PyYAML would silently keep the last), nesting deeper than :data:`MAX_CONFIG_DEPTH`,
    lone surrogates, and scalars PyYAML cannot build (``2001-02-30``, ``!!int abc``), each as a
    YAML error with its line."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_CONFIG_DEPTH} levels deep; "
                                                  "flatten it", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, ArithmeticError, LookupError) as exc:  # e.g. an empty !!int
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value ({str(exc).split(';')[0]}); quote it to keep it as text",
                node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        value = super().construct_yaml_int(node)
        str(value)  # a ValueError past the digits Python prints (a 0x... literal has no limit)
        return value

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value = super().construct_yaml_str(node)
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a string holds a lone surrogate escape (\\ud800-\\udfff); fix the text",
                    node.start_mark) from None
        return value

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then an own key is an intended override
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                "keep one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str)


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML strictly (unique keys, bounded size and depth after alias expansion).

    :raises ConfigError: ``<source>: line N invalid YAML: ...`` or a size bound, in one line.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few kilobytes")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
            line = text.count("\n", 0, exc.position) + 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" line {line}" if line else ""
        raise ConfigError(f"{source}:{where} invalid YAML: {' '.join(str(problem).splitlines())}") from None
    problem = _size_problem(data)
    if problem:
        raise ConfigError(f"{source}: {problem}")
    return data


def _size_problem(data: Any) -> str | None:
    """Why ``data`` is too large (more than :data:`MAX_CONFIG_VALUES` values or :data:`MAX_CONFIG_DEPTH`
    levels, counting a shared (aliased) value at each use), or ``None``."""
    stack, count = [(data, 0)], 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            return (f"more than {MAX_CONFIG_VALUES} values once YAML aliases are expanded (an alias bomb?); "
                    "write the values out")
        if depth > MAX_CONFIG_DEPTH:
            return f"nested more than {MAX_CONFIG_DEPTH} levels deep once YAML aliases are expanded; flatten it"
        if isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors for missing or bad files."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found; pass --config PATH")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the config ({exc})") from None
    data = load_yaml(text, str(p))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type_name(data)}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value``; the value is read as YAML (``[512,256]``, ``true``, ``1e-4``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", key):
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. training.num_epochs=5")
    try:
        value = load_yaml(raw, f"override {text!r}") if raw.strip() else None
    except ConfigError:
        value = raw
    if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value):
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
            raise ConfigError(f"override {key!r}: $.{'.'.join(parts[: i + 1])} is not a section")
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
