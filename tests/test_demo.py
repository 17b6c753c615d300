"""README's main job: ./demo.sh runs end to end offline and tells the true story."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_demo_runs_and_the_contaminated_slice_improves_from_v1_to_v2():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    res = subprocess.run(["bash", str(ROOT / "demo.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    for expected in ("Sliced by [source]", "Comparison: token_f1", "Verdict: MATCH",
                     "Note: Slice metrics show correlation, not causation."):
        assert expected in out
    cmp = json.loads((ROOT / ".verifily" / "demo" / "compare.json").read_text())
    v1, v2 = cmp["runs"]
    assert cmp["datasets"][v1] == "ds_demo@v1" and cmp["datasets"][v2] == "ds_demo@v2"
    slice_name = "source=ai_contaminated"
    assert cmp["slices"][slice_name][v1] < min(cmp["slices"]["source=human"][v1], cmp["slices"]["source=synthetic"][v1])
    assert cmp["slice_deltas"][slice_name][v2] > 0
    ci = cmp["intervals"][v2][slice_name]
    assert ci["ci_low"] <= ci["delta"] <= ci["ci_high"]
    assert "of hard examples are source=ai_contaminated" in out
