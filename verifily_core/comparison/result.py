"""``CompareResult``: what ``compare()`` returns (python-api.md fields plus intervals and data changes)."""

from __future__ import annotations

from typing import Any

import attrs

NOTE = "Note: Correlation, not causation."
OVERALL = "overall"


@attrs.define
class CompareResult:
    """A metric across runs: values, deltas against the first run, per slice, with significance.

    ``overall[run_id]`` / ``slices[slice][run_id]``: the metric's value (``None`` when the run
    has no such slice); ``deltas`` / ``slice_deltas``: value minus the first run's value.
    ``intervals[run_id][slice or "overall"]``: the paired bootstrap of the delta
    (``delta``, ``ci_low``, ``ci_high``, ``significant``, ``n`` matched rows, ...), present
    when both runs have per-example predictions of shared test rows.
    ``data_changes[run_id]``: training rows added/removed/changed/retagged from the first
    run's dataset version (``train``: totals, ``by_tag``: per ``key=value``).
    ``slice_groups[spec]``: the slices each spec of ``slice_by`` selected, in table order.
    """

    runs: list[str]
    metric: str
    overall: dict[str, float | None]
    deltas: dict[str, float | None]
    slices: dict[str, dict[str, float | None]] | None = None
    slice_deltas: dict[str, dict[str, float | None]] = attrs.field(factory=dict)
    slice_sizes: dict[str, dict[str, int | None]] = attrs.field(factory=dict)
    requested_metric: str = ""
    slice_by: str | None = None
    slice_groups: dict[str, list[str]] = attrs.field(factory=dict)
    task: str = ""
    labels: dict[str, str] = attrs.field(factory=dict)
    datasets: dict[str, str] = attrs.field(factory=dict)
    test_sets: dict[str, str | None] = attrs.field(factory=dict)
    same_test_set: bool = True
    higher_is_better: bool = True
    confidence: dict[str, Any] = attrs.field(factory=dict)
    intervals: dict[str, dict[str, dict[str, Any]]] = attrs.field(factory=dict)
    data_changes: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    interpretation: list[str] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)

    @property
    def baseline(self) -> str:
        """The first run's id (every delta is against it)."""
        return self.runs[0]

    @property
    def slice_names(self) -> list[str]:
        """The compared slices, in table order."""
        return list(self.slices or {})

    def value(self, run_id: str, slice_name: str = OVERALL) -> float | None:
        """A run's value overall or on a slice."""
        return self.overall[run_id] if slice_name == OVERALL else (self.slices or {})[slice_name][run_id]

    def delta(self, run_id: str, slice_name: str = OVERALL) -> float | None:
        """A run's delta against the first run, overall or on a slice."""
        return self.deltas[run_id] if slice_name == OVERALL else self.slice_deltas[slice_name][run_id]

    def interval(self, run_id: str, slice_name: str = OVERALL) -> dict[str, Any] | None:
        """The paired bootstrap of a delta, or ``None``."""
        return self.intervals.get(run_id, {}).get(slice_name)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain data (``--format json``); ``note`` carries the correlation caveat."""
        doc = attrs.asdict(self)
        doc["baseline"] = self.baseline
        doc["note"] = NOTE
        return doc

    def to_table(self) -> str:
        """The terminal table (see :mod:`verifily_core.comparison.render`)."""
        from verifily_core.comparison.render import to_table

        return to_table(self)

    def to_csv(self) -> str:
        """One CSV row per run and slice (see :mod:`verifily_core.comparison.render`)."""
        from verifily_core.comparison.render import to_csv

        return to_csv(self)
