"""The slice grammar, the one contract between ``--slice-by``, slicer plugins and readers of results.

Slice specs (a comma-separated list makes ``--slice-by``; the same strings go in
``eval.slice_by_tags``):

* ``KEY`` or ``KEY1&KEY2`` (``+`` works too and needs no shell quoting): a *plain* spec. Its
  keys are tag keys; one slice per observed combination of their values. The installed slicer
  that declares ``plain_specs = True`` computes it.
* ``SLICER:ARG``: any installed slicer by name (``length:reference``, ``length:input:tertiles``);
  ``ARG`` is split on ``&``/``+`` into the keys that slicer receives.

Slice names are ``key=value`` pairs joined by ``&`` (``source=human&difficulty=hard``); a value
may itself contain ``=`` but not ``&``. A tag value is written as :func:`tag_value_texts` says:
strings as they are, other JSON values as JSON (``true``, ``3``), each element of a list on its
own, ``<missing>`` for an absent key or ``null``. Slicers build names with :func:`slice_name`;
readers take names apart with :func:`slice_keys`; dataset diffs label tag values the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Mapping, Sequence

import attrs

from verifily_core.errors import ConfigError

PAIR_SEPARATOR = "&"
"""Joins the ``key=value`` pairs of a crossed slice's name."""
MISSING = "<missing>"
"""The value in a slice name for rows that lack the key (or hold ``null``)."""

_SLICER_NAME = re.compile(r"^[A-Za-z_][\w-]*$")
_KEY_SEPARATORS = re.compile(r"[&+]")


@attrs.frozen
class SliceSpec:
    """One parsed spec: the text as given, the slicer it names (``None`` for a plain spec of tag
    keys) and the keys the slicer receives."""

    text: str
    slicer: str | None
    keys: tuple[str, ...]

    @property
    def plain(self) -> bool:
        """A spec of tag keys with no slicer named (``source``, ``source&difficulty``)."""
        return self.slicer is None

    def same_slices(self, other: "SliceSpec") -> bool:
        """Whether two specs produce the same slices (``a+b`` and ``a&b`` do)."""
        return self.text == other.text or (self.plain and other.plain and self.keys == other.keys)


def parse_slice_spec(text: str) -> SliceSpec:
    """Parse one spec (see the module docstring).

    :raises ConfigError: on an empty spec or an empty key.
    """
    spec = text.strip()
    if not spec:
        raise ConfigError("--slice-by: empty slice spec")
    head, sep, arg = spec.partition(":")
    if sep and _SLICER_NAME.match(head):
        slicer: str | None = head
        keys = tuple(k.strip() for k in _KEY_SEPARATORS.split(arg)) if arg.strip() else ()
    else:
        slicer, keys = None, tuple(k.strip() for k in _KEY_SEPARATORS.split(spec))
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


def slice_name(pairs: Sequence[tuple[str, str]]) -> str:
    """``[("source", "human"), ("difficulty", "hard")]`` -> ``source=human&difficulty=hard``."""
    return PAIR_SEPARATOR.join(f"{key}={value}" for key, value in pairs)


def tag_value_texts(value: Any) -> list[str]:
    """The texts of one tag value in slice names (see the module docstring)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out = [v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
           for v in items if v is not None]
    return list(dict.fromkeys(out)) or [MISSING]


def tag_labels(tags: Mapping[str, Any] | None) -> list[str]:
    """``key=value`` for every value of every tag of a row, keys sorted (``source=human``, ...)."""
    return [slice_name([(k, text)]) for k, v in sorted((tags or {}).items()) for text in tag_value_texts(v)]


def slice_keys(name: str) -> tuple[str, ...]:
    """The keys in a slice name: ``source=human&difficulty=hard`` -> ``("source", "difficulty")``."""
    return tuple(part.split("=", 1)[0] for part in name.split(PAIR_SEPARATOR))


def tag_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rows per ``key=value`` tag label (see :func:`tag_labels`)."""
    from collections import Counter

    counts: Counter[str] = Counter()
    for row in rows:
        counts.update(tag_labels(row.get("tags")))
    return dict(counts)

