"""Tokenization of SFT rows: loss on output tokens only (CausalLM), output as target (Seq2Seq)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_sft.options import SFTOptions


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def prepare(rows: Sequence[Mapping[str, Any]], tokenizer: Any, model_kind: str, max_len: int,
            options: SFTOptions) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Features for each row plus stats: ``rows``, ``truncated`` (rows cut to ``max_len``)."""
    feats, truncated = [], 0
    for row in rows:
        prompt = options.render(dict(row), tokenizer)
        if model_kind == "seq2seq":
            src = _ids(tokenizer, prompt, True)
            tgt = _ids(tokenizer, row["output"], True)
            truncated += len(src) > max_len or len(tgt) > max_len
            feats.append({"input_ids": src[:max_len], "attention_mask": [1] * min(len(src), max_len),
                          "labels": tgt[:max_len]})
            continue
        p = _ids(tokenizer, prompt, not options.use_chat_template)
        out = _ids(tokenizer, row["output"], False)
        if tokenizer.eos_token_id is not None:
            out = out + [tokenizer.eos_token_id]
        if len(p) + len(out) > max_len:
            truncated += 1
            keep_out = min(len(out), max(max_len - len(p), max_len // 2))
            out = out[:keep_out]
            p = p[: max_len - len(out)]
        feats.append({"input_ids": p + out, "attention_mask": [1] * (len(p) + len(out)),
                      "labels": [-100] * len(p) + out})
    return feats, {"rows": len(feats), "truncated": truncated}


class PadCollator:
    """Right-pads ``input_ids``/``attention_mask`` with the pad id and ``labels`` with -100."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        for key, pad in (("input_ids", self.pad_id), ("attention_mask", 0), ("labels", -100)):
            if key not in features[0]:
                continue
            width = max(len(f[key]) for f in features)
            batch[key] = torch.tensor([f[key] + [pad] * (width - len(f[key])) for f in features], dtype=torch.long)
        return batch
