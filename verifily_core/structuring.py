"""Strict structuring of plain data into attrs classes, with path-precise errors.

Used for ``train.yaml`` and by plugins for their own options (``task_options``)::

    opts = structure(config.task_options, HeadOptions, root="$.task_options")

Unknown keys, wrong types and values outside a ``Literal`` fail with one
:class:`~verifily_core.errors.ConfigError` line such as
``$.training.learning_rate: expected float, got string 'fast'``. Unlike cattrs' defaults,
nothing is coerced silently: ``2.5`` is not an int, ``"yes"`` is not a bool.
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any, Literal, Mapping, TypeVar, Union

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from verifily_core.errors import ConfigError

T = TypeVar("T")
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists in free-form options (``task_options``, ``metric_options``)."""


def type_name(value: Any) -> str:
    """A reader's name for the type of a YAML value (``mapping``, ``string``, ...)."""
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters for a one-line message."""
    try:
        text = repr(value)
    except ValueError:  # an int longer than Python prints
        return f"<{type_name(value)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _TypeMismatch(ValueError):
    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(f"expected {expected}, got {type_name(value)} {brief(value)}")


def _int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _TypeMismatch("int", value)
    return value


def _float(value: Any, _: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 as a string
        except ValueError:
            pass
    raise _TypeMismatch("float", value)


def _bool(value: Any, _: Any) -> bool:
    if not isinstance(value, bool):
        raise _TypeMismatch("boolean (true/false)", value)
    return value


def _str(value: Any, _: Any) -> str:
    if not isinstance(value, str):
        raise _TypeMismatch("string", value)
    return value


def _is_str_list(t: Any) -> bool:
    return t == list[str]


def _list_of_str(value: Any, _: Any) -> list[str]:
    if not isinstance(value, list):
        raise _TypeMismatch("list of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"[{i}]: expected string, got {type_name(item)} {brief(item)}")
    return list(value)


def _str_or_list(value: Any, _: Any) -> Union[str, list[str]]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _TypeMismatch("string or list of strings", value)


def _dict(value: Any, _: Any) -> dict:
    if not isinstance(value, dict):
        raise _TypeMismatch("mapping", value)
    problem = plain_data_problem(value)
    if problem:
        raise ValueError(problem[2:] if problem.startswith(": ") else problem)
    return dict(value)


def plain_data_problem(value: Any) -> str | None:
    """The first part of ``value`` that JSON cannot hold as written (a date, a set, a non-string
    key, nesting deeper than :data:`MAX_DEPTH`), as ``.path: problem`` (``: problem`` at the
    top); ``None`` if there is none.

    Free-form options go into ``config.yaml`` and the config hash, which are JSON-like data."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{path}: nested more than {MAX_DEPTH} levels deep; flatten it"
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return f"{path}: key {brief(key)} ({type_name(key)}) must be a string; quote it"
                stack.append((f"{path}.{_shown(key)}", sub, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}[{i}]", sub, depth + 1) for i, sub in enumerate(item))
        elif item is not None and not isinstance(item, (str, int, float)):
            return (f"{path}: expected a string, number, boolean, null, list or mapping, got {type_name(item)}"
                    f" {brief(item)}; quote it to keep it as text")
    return None


def _shown(key: Any) -> str:
    """A mapping key as a path in a message shows it: plain when a name (``[\\w-]+``), else its repr."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w-]+", key) else repr(key)


def _literal(value: Any, typ: Any) -> Any:
    allowed = typing.get_args(typ)
    if isinstance(value, bool) and ("off" if value is False else "on") in allowed:
        value = "off" if value is False else "on"  # YAML 1.1 reads a bare off/on as a boolean
    if value not in allowed:
        raise ValueError(f"expected one of {', '.join(map(str, allowed))}, got {brief(value)}")
    return value


def make_strict_converter() -> cattrs.Converter:
    """A cattrs converter that forbids extra keys and never coerces types silently."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _int)
    conv.register_structure_hook(float, _float)
    conv.register_structure_hook(bool, _bool)
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook_func(lambda t: typing.get_origin(t) is Literal, _literal)
    conv.register_structure_hook_func(_is_str_list, _list_of_str)
    conv.register_structure_hook_func(lambda t: t == Union[str, list[str]], _str_or_list)
    conv.register_structure_hook_func(lambda t: t in (dict, dict[str, Any]), _dict)

    def _attrs_factory(cls: type) -> Any:
        inner = cattrs.gen.make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)

        def structure_section(value: Any, _: Any) -> Any:
            if not isinstance(value, dict):
                raise _TypeMismatch("mapping", value)
            return inner(value, cls)

        return structure_section

    conv.register_structure_hook_factory(attrs.has, _attrs_factory)
    return conv


_CONVERTER = make_strict_converter()


def structure(data: Any, cls: type[T], root: str = "$", source: str | None = None) -> T:
    """Structure ``data`` into ``cls`` strictly.

    :param root: the path of ``data`` in the user's file, used in messages (``$.task_options``).
    :param source: a file name to prefix the message with.
    :raises ConfigError: one line naming the first problem and how many more there are.
    """
    try:
        return _CONVERTER.structure(data, cls)
    except (ClassValidationError, IterableValidationError, ForbiddenExtraKeysError, ValueError) as exc:
        lines = _walk(exc, root) or [f"{root}: {exc}"]
        more = f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
        prefix = f"{source}: " if source else ""
        raise ConfigError(prefix + lines[0] + more) from None


def unstructure(obj: Any) -> Any:
    """attrs instance -> plain data."""
    return _CONVERTER.unstructure(obj)


def _walk(exc: BaseException, path: str) -> list[str]:
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        out = []
        for key in sorted(exc.extra_fields, key=repr):
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; known keys: {', '.join(known)}"
            out.append(f"{path}.{_shown(key)}: unknown key{hint}")
        return out
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        out = []
        for sub in exc.exceptions:
            note = next((n for n in getattr(sub, "__notes__", []) if hasattr(n, "name") or hasattr(n, "index")), None)
            if note is not None and hasattr(note, "name"):
                sub_path = f"{path}.{note.name}"
            elif note is not None and hasattr(note, "index"):
                sub_path = f"{path}[{note.index}]"
            else:
                sub_path = path
            out.extend(_walk(sub, sub_path))
        return out
    if isinstance(exc, KeyError):
        return [f"{path}: required field is missing"]
    msg = str(exc)
    if msg.startswith(("[", ".")):  # a list item (_list_of_str) or a part of free-form data (_dict)
        idx, _, rest = msg.partition(": ")
        return [f"{path}{idx}: {rest}"]
    if isinstance(exc, TypeError) and "missing" in msg and "required" in msg:
        m = re.search(r"'(\w+)'", msg)
        return [f"{path}.{m.group(1) if m else '?'}: required field is missing"]
    return [f"{path}: {msg}"]


def check_mapping(data: Any, path: str) -> Mapping[str, Any]:
    """Return ``data`` if it is a mapping, else raise a ConfigError naming ``path``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {type_name(data)}")
    return data
