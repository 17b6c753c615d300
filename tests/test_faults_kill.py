"""A seeded sample of the randomized kill test (``scripts/kill_test.py``): ten SIGKILLs over
`train`, `train --resume` and `dataset create`; afterwards every version and run in the store
verifies or is reported as incomplete, and the killed runs and creates, finished, equal an
uninterrupted run exactly. The full test is ``python scripts/kill_test.py --kills 50``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "kill_test.py"


def test_ten_random_kills_leave_nothing_that_lies(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--kills", "10", "--seed", "1", "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert "violations: 0" in res.stdout, res.stdout
    total = re.search(r"^total\s+(\d+)\s+(\d+)", res.stdout, re.M)
    assert total and int(total.group(2)) >= 10, res.stdout
    assert re.search(r"sealed runs compared [1-9]", res.stdout), res.stdout
