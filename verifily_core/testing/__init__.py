"""Helpers for tests, examples and the demo: tiny offline models and synthetic tagged data.

Nothing here downloads anything; heavy libraries are imported inside functions.
"""

from verifily_core.testing.cli import invoke_verifily, run_verifily
from verifily_core.testing.data import (
    SOURCES,
    corpus,
    make_classification_rows,
    make_sft_rows,
    write_jsonl,
)

__all__ = [
    "SOURCES", "corpus", "invoke_verifily", "make_classification_rows", "make_sft_rows", "run_verifily",
    "write_jsonl",
]
