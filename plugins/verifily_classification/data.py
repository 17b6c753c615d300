"""Rows to model inputs: tokenization (``text_pair`` as the tokenizer's second sequence) and padding."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_classification.labels import LabelSet


def encode(tokenizer: Any, row: Mapping[str, Any], max_len: int) -> tuple[dict[str, Any], bool]:
    """Token ids of one row (``text`` and, when present, ``text_pair`` as a pair, so the tokenizer
    adds its separator and token types); returns them and whether they were truncated."""
    pair = row.get("text_pair")
    enc = tokenizer(row["text"], pair, truncation=False)
    if len(enc["input_ids"]) <= max_len:
        return dict(enc), False
    return dict(tokenizer(row["text"], pair, truncation=True, max_length=max_len)), True


def features(rows: Sequence[Mapping[str, Any]], tokenizer: Any, labels: LabelSet, max_len: int,
             split: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Model inputs with ``labels`` ids for ``rows``; returns them and the number of truncated rows.

    :raises DataError: a row's label is outside ``labels`` (the error names the row, and ``split``).
    """
    feats, truncated = [], 0
    for i, row in enumerate(rows, start=1):
        label_id = labels.index(row["label"], f"{split} row {i}" if split else f"row {i}")
        item, cut = encode(tokenizer, row, max_len)
        truncated += cut
        item["labels"] = label_id
        feats.append(item)
    return feats, truncated


def collator(tokenizer: Any) -> Any:
    """Dynamic padding of ids, masks and token types to the longest row of a batch."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
