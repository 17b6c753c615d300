"""Tokenization of SFT rows: loss on output tokens only (CausalLM), output as target (Seq2Seq).

Truncation to ``training.max_seq_length`` is counted, never silent. A prompt that is too long
loses tokens from its middle (its start with the instruction and its end with the response
marker are kept); an output keeps at least half of the budget.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_sft.options import SFTOptions


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def fit_middle(ids: list[int], budget: int) -> list[int]:
    """``ids`` cut to ``budget`` tokens by dropping tokens from the middle."""
    if len(ids) <= budget:
        return ids
    first = budget // 2
    return ids[:first] + ids[len(ids) - (budget - first):]


def prompt_ids(tokenizer: Any, row: Mapping[str, Any], model_kind: str, options: SFTOptions) -> list[int]:
    """The prompt's token ids (special tokens as the model family expects; none added to a
    chat-template prompt of a CausalLM, which carries its own)."""
    prompt = options.render(dict(row), tokenizer)
    return _ids(tokenizer, prompt, model_kind == "seq2seq" or not options.use_chat_template)


def prepare(rows: Sequence[Mapping[str, Any]], tokenizer: Any, model_kind: str, max_len: int,
            options: SFTOptions) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Features for each row plus stats: ``rows``, ``truncated`` (rows cut to ``max_len``)."""
    feats, truncated = [], 0
    for row in rows:
        p = prompt_ids(tokenizer, row, model_kind, options)
        if model_kind == "seq2seq":
            tgt = _ids(tokenizer, row["output"], True)
            truncated += len(p) > max_len or len(tgt) > max_len
            src = fit_middle(p, max_len)
            feats.append({"input_ids": src, "attention_mask": [1] * len(src), "labels": tgt[:max_len]})
            continue
        out = _ids(tokenizer, row["output"], False)
        if tokenizer.eos_token_id is not None:
            out = out + [tokenizer.eos_token_id]
        if len(p) + len(out) > max_len:
            truncated += 1
            out = out[:min(len(out), max(max_len - len(p), max_len // 2))]
            p = fit_middle(p, max_len - len(out))
        feats.append({"input_ids": p + out, "attention_mask": [1] * (len(p) + len(out)),
                      "labels": [-100] * len(p) + out})
    return feats, {"rows": len(feats), "truncated": truncated}


def pad(seqs: Sequence[list[int]], value: int, left: bool = False) -> list[list[int]]:
    """Pad lists of ids to the longest, on the right (or the left)."""
    width = max(len(s) for s in seqs)
    return [([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s))) for s in seqs]


class PadCollator:
    """Right-pads ``input_ids``/``attention_mask`` with the pad id and ``labels`` with -100."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        for key, value in (("input_ids", self.pad_id), ("attention_mask", 0), ("labels", -100)):
            if key in features[0]:
                batch[key] = torch.tensor(pad([f[key] for f in features], value), dtype=torch.long)
        return batch
