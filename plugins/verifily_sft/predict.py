"""SFT prediction: teacher-forced per-example loss on the reference, and batched greedy generation."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from verifily_core.console import progress
from verifily_sft.data import PadCollator, fit_middle, pad, prepare, prompt_ids
from verifily_sft.options import SFTOptions


@torch.no_grad()
def reference_losses(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str,
                     max_len: int, options: SFTOptions, batch_size: int, device: str) -> list[tuple[float, int, int]]:
    """Per row, under teacher forcing: (mean NLL of the reference tokens, number of reference
    tokens, number of them that are the model's top choice). The reference is the output, or the
    last assistant message of a conversation (earlier assistant messages are context here)."""
    feats, _ = prepare(rows, tokenizer, model_kind, max_len, options, all_turns=False)
    collate = PadCollator(tokenizer.pad_token_id)
    out: list[tuple[float, int, int]] = []
    for start in progress(range(0, len(feats), batch_size), label="Scoring references"):
        batch = {k: v.to(device) for k, v in collate(feats[start:start + batch_size]).items()}
        labels = batch.pop("labels")
        if model_kind == "seq2seq":
            logits = model(**batch, labels=labels).logits  # decoder inputs are the shifted labels
            target = labels
        else:
            logits = model(**batch).logits[:, :-1]
            target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target.clamp(min=0), reduction="none")
        mask = (target != -100).float()
        sums, counts = (nll * mask).sum(1), mask.sum(1)
        right = ((logits.argmax(-1) == target).float() * mask).sum(1)
        out += [(float(s / max(c, 1)), int(c), int(r)) for s, c, r in zip(sums.tolist(), counts.tolist(), right.tolist())]
    return out


@torch.no_grad()
def generate(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str, max_len: int,
             options: SFTOptions, batch_size: int, max_new_tokens: int, device: str) -> list[str]:
    """Greedy generation in batches; returns the decoded outputs.

    Prompts are tokenized and cut to ``max_len`` exactly as in training, and padded on the left
    for CausalLM models (so every prompt ends where generation starts).
    """
    prompts = [fit_middle(prompt_ids(tokenizer, r, model_kind, options), max_len) for r in rows]
    left = model_kind != "seq2seq"
    outputs: list[str] = []
    for start in progress(range(0, len(prompts), batch_size), label="Generating"):
        chunk = prompts[start:start + batch_size]
        ids = torch.tensor(pad(chunk, tokenizer.pad_token_id, left), dtype=torch.long, device=device)
        mask = torch.tensor(pad([[1] * len(c) for c in chunk], 0, left), dtype=torch.long, device=device)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        if left:
            gen = gen[:, ids.shape[1]:]
        outputs += [t.strip() for t in tokenizer.batch_decode(gen, skip_special_tokens=True)]
    return outputs
