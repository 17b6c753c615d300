"""Rows to model inputs: tokenization (``text_pair`` as the tokenizer's second sequence, cut by
``task_options.truncation``) and padding (``task_options.padding``)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_core.errors import DataError

from verifily_classification.labels import LabelSet


def encode(tokenizer: Any, row: Mapping[str, Any], max_len: int, truncation: str = "longest_first",
           where: str = "row") -> tuple[dict[str, Any], bool]:
    """Token ids of one row (``text`` and, when present, ``text_pair`` as a pair, so the tokenizer
    adds its separator and token types); returns them and whether they were truncated.

    ``truncation`` says which side of a pair is cut to ``max_len`` tokens: ``longest_first`` (a
    token at a time from the longer one), ``only_first`` (the text) or ``only_second`` (the pair);
    a row without a pair has its text cut.

    :raises DataError: the side that may be cut is too short to make the row fit (names ``where``).
    """
    pair = row.get("text_pair")
    enc = tokenizer(row["text"], pair, truncation=False)
    if len(enc["input_ids"]) <= max_len:
        return dict(enc), False
    strategy = truncation if pair is not None else "longest_first"
    try:
        return dict(tokenizer(row["text"], pair, truncation=strategy, max_length=max_len)), True
    except Exception as exc:  # the tokenizers library raises a plain Exception ("Sequence to truncate too short")
        if "truncat" not in str(exc).lower():
            raise
        keep = "text_pair" if strategy == "only_first" else "text"
        raise DataError(f"{where}: with task_options.truncation {strategy} the {keep} alone is longer than "
                        f"training.max_seq_length ({max_len} tokens); use longest_first or raise the length") from None


def features(rows: Sequence[Mapping[str, Any]], tokenizer: Any, labels: LabelSet, max_len: int,
             split: str | None = None, truncation: str = "longest_first") -> tuple[list[dict[str, Any]], int]:
    """Model inputs with ``labels`` for ``rows`` (a label id; for a multi-label set the 0/1 vector
    of the row's ``labels`` in id order); returns them and the number of truncated rows.

    :raises DataError: a row's label is outside ``labels``, or it cannot be truncated as asked
        (the error names the row, and ``split``).
    """
    from verifily_classification.multilabel import FIELD, multi_hot

    feats, truncated = [], 0
    for i, row in enumerate(rows, start=1):
        where = f"{split} row {i}" if split else f"row {i}"
        if labels.multi_label:
            if FIELD not in row:
                raise DataError(f"{where}: the run is multi-label and the row has no 'labels' list")
            label_id: Any = multi_hot(row[FIELD], labels, where)
        elif "label" not in row:
            raise DataError(f"{where}: the run is single-label and the row has no 'label'")
        else:
            label_id = labels.index(row["label"], where)
        item, cut = encode(tokenizer, row, max_len, truncation, where)
        truncated += cut
        item["labels"] = label_id
        feats.append(item)
    return feats, truncated


def collator(tokenizer: Any, padding: str = "longest", max_len: int | None = None) -> Any:
    """Padding of ids, masks and token types: to the longest row of a batch (``longest``) or to
    ``max_len`` (``max_length``, every batch the same shape)."""
    from transformers import DataCollatorWithPadding

    if padding == "max_length":
        return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_len)
    return DataCollatorWithPadding(tokenizer)
