"""SFT prediction: teacher-forced per-example loss on the reference, and batched greedy generation."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from verifily_core.batching import map_sorted
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
    lengths = [len(f["input_ids"]) + (len(f["labels"]) if model_kind == "seq2seq" else 0) for f in feats]
    return map_sorted(lengths, batch_size, lambda batch: _losses(model, collate([feats[i] for i in batch]),
                                                                 model_kind, device), "Scoring references")


def _losses(model: Any, padded: dict[str, Any], model_kind: str, device: str) -> list[tuple[float, int, int]]:
    """(mean NLL, reference tokens, top-choice tokens) of each row of one padded batch."""
    batch = {k: v.to(device) for k, v in padded.items()}
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
    return [(float(s / max(c, 1)), int(c), int(r)) for s, c, r in zip(sums.tolist(), counts.tolist(), right.tolist())]


@torch.no_grad()
def generate(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], model_kind: str, max_len: int,
             options: SFTOptions, batch_size: int, max_new_tokens: int, device: str) -> list[str]:
    """Greedy generation in batches; returns the decoded outputs.

    Prompts are tokenized and cut to ``max_len`` exactly as in training, batched by length
    (:func:`~verifily_core.batching.map_sorted`: little padding, outputs in input order) and
    padded on the left for CausalLM models (so every prompt ends where generation starts).
    """
    prompts = [fit_middle(prompt_ids(tokenizer, r, model_kind, options), max_len) for r in rows]
    left = model_kind != "seq2seq"

    def run(batch: list[int]) -> list[str]:
        chunk = [prompts[i] for i in batch]
        ids = torch.tensor(pad(chunk, tokenizer.pad_token_id, left), dtype=torch.long, device=device)
        mask = torch.tensor(pad([[1] * len(c) for c in chunk], 0, left), dtype=torch.long, device=device)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        if left:
            gen = gen[:, ids.shape[1]:]
        return [t.strip() for t in tokenizer.batch_decode(gen, skip_special_tokens=True)]

    return map_sorted([len(p) for p in prompts], batch_size, run, "Generating")


@torch.no_grad()
def generate_and_score(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], max_len: int,
                       options: SFTOptions, batch_size: int, max_new_tokens: int,
                       device: str) -> tuple[list[str], list[tuple[float, int, int]]]:
    """:func:`generate` and :func:`reference_losses` of a CausalLM in one pass over the model per
    batch: a forward pass over each prompt with its reference gives the reference's losses, and its
    cache, cut back to the prompt, starts the generation (which then does not process the prompt
    again). Rows whose prompt was cut to fit ``max_len`` with the reference are done the two
    separate ways, so every row gets exactly what those functions give it."""
    feats, _ = prepare(rows, tokenizer, "causal_lm", max_len, options, all_turns=False)
    prompts = [fit_middle(prompt_ids(tokenizer, r, "causal_lm", options), max_len) for r in rows]
    whole = [i for i, (f, p) in enumerate(zip(feats, prompts))
             if f["input_ids"][:len(p)] == p and len(f["input_ids"]) > len(p)
             and all(label == -100 for label in f["labels"][:len(p)])]
    texts: list[str | None] = [None] * len(rows)
    scores: list[tuple[float, int, int] | None] = [None] * len(rows)

    def run(batch: list[int]) -> list[tuple[str, tuple[float, int, int]]]:
        return _generate_and_score(model, tokenizer, [prompts[whole[j]] for j in batch],
                                   [feats[whole[j]]["input_ids"][len(prompts[whole[j]]):] for j in batch],
                                   max_new_tokens, device)

    for i, (text, score) in zip(whole, map_sorted([len(prompts[i]) for i in whole], batch_size, run,
                                                  "Generating and scoring")):
        texts[i], scores[i] = text, score
    rest = [i for i in range(len(rows)) if texts[i] is None]
    if rest:
        subset = [rows[i] for i in rest]
        for i, text, score in zip(rest, generate(model, tokenizer, subset, "causal_lm", max_len, options, batch_size,
                                                 max_new_tokens, device),
                                  reference_losses(model, tokenizer, subset, "causal_lm", max_len, options,
                                                   batch_size, device)):
            texts[i], scores[i] = text, score
    return texts, scores  # type: ignore[return-value]


def _generate_and_score(model: Any, tokenizer: Any, prompts: list[list[int]], references: list[list[int]],
                        max_new_tokens: int, device: str) -> list[tuple[str, tuple[float, int, int]]]:
    """One batch: prompts padded on the left, references on the right, explicit positions."""
    width_p, width_r = max(map(len, prompts)), max(map(len, references))
    ids = [[tokenizer.pad_token_id] * (width_p - len(p)) + p + r + [tokenizer.pad_token_id] * (width_r - len(r))
           for p, r in zip(prompts, references)]
    mask = [[0] * (width_p - len(p)) + [1] * (len(p) + len(r)) + [0] * (width_r - len(r))
            for p, r in zip(prompts, references)]
    ids_t = torch.tensor(ids, dtype=torch.long, device=device)
    mask_t = torch.tensor(mask, dtype=torch.long, device=device)
    positions = (mask_t.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=positions, use_cache=True)
    logits = out.logits[:, width_p - 1:width_p + width_r - 1]  # position t predicts token t + 1
    target = torch.tensor([r + [-100] * (width_r - len(r)) for r in references], dtype=torch.long, device=device)
    nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target.clamp(min=0), reduction="none")
    hit = (target != -100).float()
    sums, counts = (nll * hit).sum(1), hit.sum(1)
    right = ((logits.argmax(-1) == target).float() * hit).sum(1)
    cache = out.past_key_values
    cache.crop(-(width_r + 1))  # the prompts' cache, but for their last position, which generation feeds
    gen = model.generate(input_ids=ids_t[:, :width_p], attention_mask=mask_t[:, :width_p], past_key_values=cache,
                         max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = [t.strip() for t in tokenizer.batch_decode(gen[:, width_p:], skip_special_tokens=True)]
    return [(text, (float(s / max(c, 1)), int(c), int(r_)))
            for text, s, c, r_ in zip(texts, sums.tolist(), counts.tolist(), right.tolist())]
