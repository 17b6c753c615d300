"""Fixtures specific to this repository's tests.

The generic ones (offline environment with one torch thread, tiny models, tagged datasets,
``verifily`` runners) come from Verifily's pytest plugin, ``verifily_core.testing.pytest_plugin``,
which pytest loads through its entry point; ``verifily_offline = true`` in pyproject.toml turns
on its offline mode for this suite.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent

# Property-based tests (tests/test_properties_*.py) run under a bounded, deterministic budget:
# "default" locally, "ci" when CI=true; HYPOTHESIS_PROFILE picks one by name ("explore" searches
# harder with fresh random examples, for hunting bugs by hand, not for CI).
_BUDGET = dict(derandomize=True, deadline=None, database=None, print_blob=False)
settings.register_profile("default", max_examples=40, **_BUDGET)
settings.register_profile("ci", max_examples=80, **_BUDGET)
settings.register_profile("explore", max_examples=1000, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() == "true" else "default"))


@pytest.fixture(scope="session")
def documented_json():
    """``documented_json(doc, heading)``: the first JSON example after ``## heading`` in ``docs/<doc>``."""
    import json
    import re

    def find(doc: str, heading: str):
        text = (ROOT / "docs" / doc).read_text()
        start = text.index(f"\n## {heading}\n")
        block = re.search(r"```json\n(.*?)```", text[start:], re.S)
        return json.loads(block.group(1))

    return find


@pytest.fixture(scope="session")
def installed_example(tmp_path_factory) -> dict[str, str]:
    """``examples/verifily-example-plugin`` pip-installed into a private target directory, as a
    user's ``pip install`` would; returns an environment with that directory on ``PYTHONPATH``.
    The source is copied first so that the build leaves nothing in the repository."""
    import shutil
    import subprocess

    source = tmp_path_factory.mktemp("plugin-src") / "verifily-example-plugin"
    shutil.copytree(ROOT / "examples" / "verifily-example-plugin", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, text=True)
    return dict(os.environ, PYTHONPATH=str(target))
