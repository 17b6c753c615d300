"""Deterministic synthetic datasets with tags, learnable by tiny models in a few steps.

Rows carry ``tags: {source: human|synthetic|ai_contaminated, difficulty: easy|medium|hard}``.
``corrupt_source`` / ``flip_source`` damage one source's rows (wrong outputs, flipped
labels), so tests and the demo can show a bad slice.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable

from verifily_core import files

SOURCES = ("human", "synthetic", "ai_contaminated")
DIFFICULTIES = ("easy", "medium", "hard")
WORDS = (
    "apple", "river", "stone", "cloud", "green", "light", "music", "paper", "table", "water",
    "house", "bread", "chair", "dream", "field", "glass", "horse", "lemon", "night", "ocean",
)
POSITIVE = ("great", "good", "excellent", "happy", "love", "wonderful")
NEGATIVE = ("bad", "awful", "terrible", "sad", "hate", "poor")
NEUTRAL = ("the", "movie", "food", "service", "day", "book", "was", "really", "quite", "very")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSON Lines (UTF-8, one object per line, atomically); returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return files.write_jsonl(p, rows)


def _tags(rng: random.Random, i: int) -> dict[str, str]:
    return {"source": SOURCES[i % len(SOURCES)], "difficulty": rng.choice(DIFFICULTIES)}


def make_sft_rows(n: int, seed: int = 0, corrupt_source: str | None = None) -> list[dict[str, Any]]:
    """SFT rows: "Repeat the word" -> the word, "Uppercase" -> the word in capitals.

    With ``corrupt_source`` the rows of that source get a wrong output (another word).
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word = rng.choice(WORDS)
        tags = _tags(rng, i)
        if rng.random() < 0.5:
            instruction, output = "Repeat the word.", word
        else:
            instruction, output = "Write the word in uppercase.", word.upper()
        if tags["source"] == corrupt_source:
            output = WORDS[(WORDS.index(word) + 7) % len(WORDS)]  # a wrong word, no RNG draw
        rows.append({"instruction": instruction, "input": word, "output": output, "tags": tags})
    return rows


def make_chat_rows(n: int, seed: int = 0, corrupt_source: str | None = None) -> list[dict[str, Any]]:
    """The rows of :func:`make_sft_rows` as conversations (``messages``): a system message, and
    for every other row a first exchange (the user names the word, the assistant repeats it)
    before the user asks the instruction; the last assistant message is the output."""
    rows = []
    for i, row in enumerate(make_sft_rows(n, seed, corrupt_source)):
        messages = [{"role": "system", "content": "You answer with one word."}]
        if i % 2:
            messages += [{"role": "user", "content": f"The word is {row['input']}."},
                         {"role": "assistant", "content": row["input"]},
                         {"role": "user", "content": row["instruction"]}]
        else:
            messages.append({"role": "user", "content": f"{row['instruction']}\n\n{row['input']}"})
        messages.append({"role": "assistant", "content": row["output"]})
        rows.append({"messages": messages, "tags": row["tags"]})
    return rows


def make_classification_rows(n: int, seed: int = 0, flip_source: str | None = None,
                             pair: bool = False) -> list[dict[str, Any]]:
    """Sentiment rows labelled ``pos``/``neg`` by a clearly positive or negative word.

    With ``flip_source`` that source's labels are flipped; with ``pair`` each row also gets a
    ``text_pair`` (a neutral criterion sentence).
    """
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = rng.random() < 0.5
        cue = rng.choice(POSITIVE if positive else NEGATIVE)
        words = rng.sample(NEUTRAL, 4)
        words.insert(rng.randrange(len(words) + 1), cue)
        label = "pos" if positive else "neg"
        tags = _tags(rng, i)
        if tags["source"] == flip_source:
            label = "neg" if positive else "pos"
        row: dict[str, Any] = {"text": " ".join(words), "label": label, "tags": tags}
        if pair:
            row["text_pair"] = "the review is " + rng.choice(("short", "long", "clear"))
        rows.append(row)
    return rows


def make_planted_keyword_rows(seed: int = 0, clean: int = 96, planted: int = 16, test: int = 120,
                              word: str = "great") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train, test)`` sentiment rows, each tagged ``keyword`` (its sentiment word), where
    ``planted`` extra training rows tagged ``source=web`` use ``word`` but are labelled ``neg``:
    a source that mislabels one keyword, which hurts the test slice ``keyword=<word>`` (its test
    rows: ``test`` ordinary ones plus ``planted * 3 // 2`` positive rows using ``word``)."""
    def keyed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, "tags": {**r["tags"], "keyword": _cue(r["text"])}} for r in rows]

    def using(rows: list[dict[str, Any]], label: str, source: str | None = None) -> list[dict[str, Any]]:
        return [{**r, "text": r["text"].replace(_cue(r["text"]), word), "label": label,
                 "tags": {**r["tags"], **({"source": source} if source else {})}} for r in rows]

    wrong = using(make_classification_rows(planted, seed=seed + 9), "neg", "web")
    train = keyed(make_classification_rows(clean, seed=seed + 1) + wrong)
    probe = using(make_classification_rows(planted * 3 // 2, seed=seed + 5), "pos")
    return train, keyed(make_classification_rows(test, seed=seed + 3) + probe)


def _cue(text: str) -> str:
    return next(w for w in text.split() if w in POSITIVE + NEGATIVE)


TOPICS = {"fruit": ("apple", "lemon", "bread"), "water": ("river", "ocean", "water"),
          "home": ("house", "chair", "table")}
"""The labels of :func:`make_multilabel_rows` and the words that signal each."""


def make_multilabel_rows(n: int, seed: int = 0, p: float = 0.4) -> list[dict[str, Any]]:
    """Multi-label rows: ``labels`` holds each topic of :data:`TOPICS` (``fruit``, ``water``,
    ``home``) whose word is in the text, each present with probability ``p`` (the set may be
    empty), among three neutral words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = [topic for topic in TOPICS if rng.random() < p]
        words = rng.sample(NEUTRAL, 3) + [rng.choice(TOPICS[t]) for t in labels]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels, "tags": _tags(rng, i)})
    return rows


def corpus() -> list[str]:
    """Texts covering every word the generators use, for training tiny tokenizers."""
    texts = [" ".join(WORDS), " ".join(w.upper() for w in WORDS), " ".join(POSITIVE + NEGATIVE + NEUTRAL)]
    texts += [
        "Repeat the word. Write the word in uppercase.",
        "### Instruction: ### Input: ### Response: user assistant system",
        "the review is short long clear human synthetic ai_contaminated easy medium hard",
        '{"answer": "yes", "value": 42} [1, 2, 3] 0 1 2 3 4 5 6 7 8 9 : ; , . ! ? - _ ( ) < > / = +',
        "The quick brown fox jumps over the lazy dog. A model learns from data that people write.",
    ]
    for a in ("Repeat the word.", "Write the word in uppercase."):
        texts += [f"### Instruction:\n{a}\n\n### Input:\n{w}\n\n### Response:\n{w} {w.upper()}" for w in WORDS]
    return texts
