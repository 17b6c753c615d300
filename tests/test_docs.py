"""Documentation cannot drift: every hook and every config field (with its default) is documented."""

from __future__ import annotations

import inspect
import typing
import re
from pathlib import Path

import attrs
import pytest

from verifily_core import hookspecs
from verifily_core.config import TrainConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hook_names():
    return [name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("verifily_")]


@pytest.mark.parametrize("hook", _hook_names())
def test_every_hook_is_documented(hook):
    text = (DOCS / "plugins.md").read_text()
    assert f"### `{hook}(" in text, f"{hook} has no section in docs/plugins.md"
    assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


def _config_fields(cls=TrainConfig, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in attrs.fields(cls):
        typ = hints[f.name]
        nested = next((t for t in (typ, *getattr(typ, "__args__", ())) if attrs.has(t)), None)
        if nested is not None:
            yield from _config_fields(nested, prefix + f.name + ".")
        else:
            yield prefix + f.name, f


def _documented_defaults():
    rows = {}
    for line in (DOCS / "config.md").read_text().splitlines():
        m = re.match(r"^\| `([\w.]+)` \| [^|]+(?:\\\|[^|]+)* \| (.+?) \| .+ \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def _render_default(f):
    if f.default is attrs.NOTHING:
        return "(required)"
    value = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (list, dict)):
        return f"`{value!r}`".replace("'", "")
    return f"`{value}`"


@pytest.mark.parametrize("path, field", list(_config_fields()), ids=lambda x: x if isinstance(x, str) else "")
def test_every_config_field_is_documented_with_its_default(path, field):
    documented = _documented_defaults()
    assert path in documented, f"{path} is missing from docs/config.md"
    assert documented[path] == _render_default(field), f"default of {path} differs from docs/config.md"


def test_docs_list_no_unknown_config_fields():
    known = {p for p, _ in _config_fields()} | {"data_paths"}
    assert set(_documented_defaults()) - known == set()
