"""Deterministic tagged preference rows that a tiny causal LM learns in a few DPO steps.

Two instructions over one vocabulary: "Repeat the word." prefers the word as written over its
uppercase form, "Write the word in uppercase." the other way round, so the preference depends
on the prompt. Rows carry ``tags: {source, difficulty}`` like ``verifily_core.testing``'s rows;
``flip_source`` swaps chosen and rejected in that source's rows (a bad annotator).
"""

from __future__ import annotations

import random
from typing import Any

from verifily_core.testing.data import DIFFICULTIES, SOURCES, WORDS

INSTRUCTIONS = ("Repeat the word.", "Write the word in uppercase.")


def make_preference_rows(n: int, seed: int = 0, flip_source: str | None = None,
                         chat: bool = False) -> list[dict[str, Any]]:
    """``n`` preference rows; with ``chat`` the prompt is one user message and the responses
    are assistant messages."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word, upper = rng.choice(WORDS), rng.random() < 0.5
        tags = {"source": SOURCES[i % len(SOURCES)], "difficulty": rng.choice(DIFFICULTIES)}
        instruction = INSTRUCTIONS[upper]
        chosen, rejected = (word.upper(), word) if upper else (word, word.upper())
        if tags["source"] == flip_source:
            chosen, rejected = rejected, chosen
        if chat:
            row: dict[str, Any] = {"prompt": [{"role": "user", "content": f"{instruction}\n{word}"}],
                                   "chosen": {"role": "assistant", "content": chosen},
                                   "rejected": {"role": "assistant", "content": rejected}}
        else:
            row = {"prompt": f"### Instruction:\n{instruction}\n\n### Input:\n{word}\n\n### Response:\n",
                   "chosen": chosen, "rejected": rejected}
        rows.append({**row, "tags": tags})
    return rows
