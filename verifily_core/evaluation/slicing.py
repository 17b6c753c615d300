"""``--slice-by`` specs and the slices they produce.

Syntax of one spec (a comma-separated list of them makes ``--slice-by``; the same strings go
in ``eval.slice_by_tags``):

* ``KEY``: one slice per value of a tag key (slicer ``tag``): ``source=human``, ...
* ``KEY1&KEY2`` or ``KEY1+KEY2``: crossed keys (slicer ``cross``): ``source=human&difficulty=hard``;
  ``+`` needs no shell quoting.
* ``SLICER:ARG``: any installed slicer by name, e.g. ``length:reference``,
  ``length:input:tertiles``, ``tag:source``; ``ARG`` is split on ``&``/``+`` into the keys
  the slicer receives.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Mapping, Sequence

import attrs

from verifily_core.errors import ConfigError, EvalError
from verifily_core.interfaces import Slicer

_SLICER_NAME = re.compile(r"^[A-Za-z_][\w-]*$")


@attrs.frozen
class SliceSpec:
    """One parsed spec: the text as given, the slicer's name and the keys it receives."""

    text: str
    slicer: str
    keys: tuple[str, ...]


@attrs.frozen
class SliceDef:
    """One slice: its name, the tag keys in its name, the spec that made it and its record indices."""

    name: str
    keys: tuple[str, ...]
    spec: str
    indices: tuple[int, ...]


def parse_slice_spec(text: str) -> SliceSpec:
    """Parse one spec (see the module docstring).

    :raises ConfigError: on an empty spec or an empty key.
    """
    spec = text.strip()
    if not spec:
        raise ConfigError("--slice-by: empty slice spec")
    head, sep, arg = spec.partition(":")
    if sep and _SLICER_NAME.match(head):
        slicer = head
        keys = tuple(k.strip() for k in re.split(r"[&+]", arg)) if arg.strip() else ()
    else:
        keys = tuple(k.strip() for k in re.split(r"[&+]", spec))
        slicer = "cross" if len(keys) > 1 else "tag"
    if any(not k for k in keys):
        raise ConfigError(f"--slice-by: slice spec '{spec}' has an empty key")
    return SliceSpec(spec, slicer, keys)


def parse_slice_by(items: str | Sequence[str] | None) -> list[SliceSpec]:
    """Parse a comma-separated string or a list of specs; repeated specs are kept once."""
    if not items:
        return []
    texts = items.split(",") if isinstance(items, str) else list(items)
    specs = [parse_slice_spec(t) for t in texts if t.strip()]
    return list({s.text: s for s in specs}.values())


def tag_keys(items: str | Sequence[str] | None, slicers: Any = None) -> list[str]:
    """The tag keys the specs read (for checking them against a dataset's tags).

    Without ``slicers`` every key of ``tag``/``cross`` specs counts and other slicers read none.
    """
    out: list[str] = []
    for spec in parse_slice_by(items):
        if slicers is not None:
            out += get_slicer(slicers, spec.slicer).tag_keys(spec.keys)
        elif spec.slicer in ("tag", "cross"):
            out += spec.keys
    return list(dict.fromkeys(out))


def get_slicer(slicers: Any, name: str) -> Slicer:
    """A slicer by name from a registry or a ``{name: slicer}`` mapping (ConfigError if unknown)."""
    if hasattr(slicers, "unknown_message"):
        return slicers.get(name)
    found = (slicers or {}).get(name)
    if found is None:
        available = ", ".join(sorted(slicers or {})) or "(none installed)"
        raise ConfigError(f"unknown slicer '{name}'; available: {available}")
    return found


def slice_keys(name: str) -> tuple[str, ...]:
    """The keys in a slice name: ``source=human&difficulty=hard`` -> ``("source", "difficulty")``."""
    return tuple(part.split("=", 1)[0] for part in name.split("&"))


def compute_slices(rows: Sequence[Mapping[str, Any]], specs: Sequence[SliceSpec], slicers: Any) -> list[SliceDef]:
    """Run each spec's slicer over ``rows`` (evaluation records) and collect the slices in order.

    :raises ConfigError: when two specs produce the same slice name.
    :raises EvalError: when a slicer returns indices that are not row positions.
    """
    out: dict[str, SliceDef] = {}
    for spec in specs:
        slicer = get_slicer(slicers, spec.slicer)
        produced = slicer.slices(list(rows), list(spec.keys))
        for name, members in produced.items():
            if name in out:
                raise ConfigError(f"--slice-by: slice '{name}' is produced by both '{out[name].spec}' "
                                  f"and '{spec.text}'")
            try:
                indices = sorted({operator.index(i) for i in members})
            except TypeError:
                indices = [-1]
            if any(not 0 <= i < len(rows) for i in indices):
                raise EvalError(f"slicer '{spec.slicer}' returned an index outside the {len(rows)} rows for '{name}'")
            out[name] = SliceDef(name, slice_keys(name), spec.text, tuple(indices))
    return list(out.values())
