"""Computing slices: each ``--slice-by`` spec goes to its slicer plugin, whose slices are checked
and collected. The grammar of specs and slice names is :mod:`verifily_core.slices`."""

from __future__ import annotations

import operator
from typing import Any, Mapping, Sequence

import attrs

from verifily_core.errors import ConfigError, EvalError
from verifily_core.interfaces import Slicer
from verifily_core.slices import SliceSpec, parse_slice_by, slice_keys


@attrs.frozen
class SliceDef:
    """One slice: its name, the tag keys in its name, the spec that made it and its record indices."""

    name: str
    keys: tuple[str, ...]
    spec: str
    indices: tuple[int, ...]


def tag_keys(items: str | Sequence[str] | None, slicers: Any = None) -> list[str]:
    """The tag keys the specs read (for checking them against a dataset's tags).

    Plain specs read their keys; without ``slicers``, specs that name a slicer read none.
    """
    out: list[str] = []
    for spec in parse_slice_by(items):
        if spec.plain:
            out += spec.keys
        elif slicers is not None:
            out += get_slicer(slicers, spec.slicer).tag_keys(spec.keys)
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


def plain_slicer(slicers: Any) -> tuple[str, Slicer]:
    """``(name, slicer)`` of the one installed slicer that declares ``plain_specs``.

    :raises ConfigError: when none or several do.
    """
    names = list(slicers) if slicers is not None else []
    found = [(n, get_slicer(slicers, n)) for n in names if get_slicer(slicers, n).plain_specs]
    if len(found) != 1:
        which = ", ".join(n for n, _ in found) or "none"
        raise ConfigError(f"--slice-by: plain tag specs need exactly one installed slicer with plain_specs "
                          f"(found: {which}); name a slicer instead (NAME:KEYS)")
    return found[0]


def slicer_for(spec: SliceSpec, slicers: Any) -> tuple[str, Slicer]:
    """``(name, slicer)`` that computes ``spec``: the one it names, or the plain-spec slicer."""
    if spec.plain:
        return plain_slicer(slicers)
    return spec.slicer, get_slicer(slicers, spec.slicer)


def compute_slices(rows: Sequence[Mapping[str, Any]], specs: Sequence[SliceSpec], slicers: Any) -> list[SliceDef]:
    """Run each spec's slicer over ``rows`` (evaluation records) and collect the slices in order.

    :raises ConfigError: when two specs produce the same slice name.
    :raises EvalError: when a slicer returns indices that are not row positions.
    """
    out: dict[str, SliceDef] = {}
    for spec in specs:
        slicer_name, slicer = slicer_for(spec, slicers)
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
                raise EvalError(f"slicer '{slicer_name}' returned an index outside the {len(rows)} rows for '{name}'")
            out[name] = SliceDef(name, slice_keys(name), spec.text, tuple(indices))
    return list(out.values())
