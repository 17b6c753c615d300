"""Helpers for tests and examples: tiny offline models and synthetic tagged data.

Nothing here downloads anything; heavy libraries are imported inside functions. The pytest
fixtures built on these (tiny models, tagged datasets, command-line runners) are in
:mod:`verifily_core.testing.pytest_plugin`, which pytest loads by itself. Nothing in
``verifily_core`` outside this package imports it.
"""

from verifily_core.testing.data import (
    SOURCES,
    corpus,
    make_chat_rows,
    make_classification_rows,
    make_multilabel_rows,
    make_planted_keyword_rows,
    make_sft_rows,
    write_jsonl,
)
from verifily_core.testing.runs import seal_run, train_run

__all__ = ["SOURCES", "corpus", "make_chat_rows", "make_classification_rows", "make_multilabel_rows",
           "make_planted_keyword_rows", "make_sft_rows", "seal_run", "train_run", "write_jsonl"]
