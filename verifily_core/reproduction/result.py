"""``ReproduceResult``, verdicts and their exit codes.

=====================  ====  ==================================================
verdict                exit  meaning
=====================  ====  ==================================================
MATCH                  0     every hash recomputed from disk equals the record
PARTIAL MATCH          6     only the environment differs (versions named)
MISMATCH               5     config, data or an artifact differs (file named)
REPRODUCIBLE           0     every metric of the re-created run within tolerance
NOT REPRODUCIBLE       5     some metric outside the tolerance (or missing)
=====================  ====  ==================================================
"""

from __future__ import annotations

from typing import Any

import attrs

MATCH, PARTIAL, MISMATCH = "MATCH", "PARTIAL MATCH", "MISMATCH"
UNCHECKED = "NOT CHECKED"
"""A check's status when what it would check is not on this machine (it does not fail the verdict)."""
REPRODUCIBLE, NOT_REPRODUCIBLE = "REPRODUCIBLE", "NOT REPRODUCIBLE"
EXIT_CODES = {MATCH: 0, PARTIAL: 6, MISMATCH: 5, REPRODUCIBLE: 0, NOT_REPRODUCIBLE: 5}
CONFIG, DATA, ENV, ARTIFACTS, EVAL = "Config hash", "Data hash", "Env hash", "Artifacts", "Eval files"
BASE = "Base model"


@attrs.define
class Check:
    """One verified record: its name, the recorded value, MATCH/MISMATCH/NOT CHECKED and why."""

    name: str
    recorded: str
    status: str
    reason: str = ""
    actual: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the check did not fail (it matched, or could not be checked here)."""
        return self.status != MISMATCH


@attrs.define
class MetricRow:
    """One metric of a full reproduction."""

    metric: str
    original: float | None
    reproduced: float | None
    delta: float | None
    within_tolerance: bool


@attrs.define
class ReproduceResult:
    """Hash checks (always) and, for a full reproduction, the metric comparison."""

    run_id: str
    verdict: str
    mode: str = "verify"
    checks: list[Check] = attrs.field(factory=list)
    metrics: list[MetricRow] = attrs.field(factory=list)
    tolerance: float | None = None
    reproduced_run: str | None = None
    output_dir: str | None = None
    report_path: str | None = None
    notes: list[str] = attrs.field(factory=list)

    @property
    def exit_code(self) -> int:
        """0 only for MATCH / REPRODUCIBLE; 6 PARTIAL MATCH; 5 MISMATCH / NOT REPRODUCIBLE."""
        return EXIT_CODES[self.verdict]

    def check(self, name: str) -> Check | None:
        """A check by name (``Config hash``, ``Data hash``, ``Env hash``, ``Artifacts``, ``Eval files``, ``Base model``)."""
        return next((c for c in self.checks if c.name == name), None)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain data (``reproduce.json``, ``--format json``)."""
        doc = attrs.asdict(self)
        doc["format_version"] = 1
        doc["exit_code"] = self.exit_code
        return doc
