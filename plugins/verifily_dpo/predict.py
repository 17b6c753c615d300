"""Scoring preference pairs: implicit rewards of the trained policy against its reference
(imports torch).

For a response ``y`` to a prompt ``x``, ``logp(y | x)`` is the sum of the log-probabilities of
its tokens, cut to ``max_length`` with the prompt exactly as in training. The policy is the
model with its LoRA adapter; the reference is the same model with the adapter disabled (the
base model DPO started from). The implicit reward is ``beta * (logp_policy - logp_reference)``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from verifily_core.console import progress
from verifily_core.errors import EvalError
from verifily_dpo.data import tokenize


def _batch(ids: Sequence[list[int]], masks: Sequence[list[int]], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    width = max(len(s) for s in ids)
    return {
        "input_ids": torch.tensor([s + [pad_id] * (width - len(s)) for s in ids], device=device),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids], device=device),
        "completion_mask": torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device),
    }


def _sequences(pairs: Sequence[dict[str, list[int]]], max_length: int | None) -> tuple[list, list]:
    """Prompt + chosen for every pair, then prompt + rejected; with their response masks."""
    ids, masks = [], []
    for name in ("chosen_ids", "rejected_ids"):
        for p in pairs:
            seq = (p["prompt_ids"] + p[name])[:max_length]
            mask = ([0] * len(p["prompt_ids"]) + [1] * len(p[name]))[:max_length]
            ids.append(seq)
            masks.append(mask)
    return ids, masks


@torch.no_grad()
def sequence_logps(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the log-probabilities of the response tokens of each sequence, shape ``(n,)``.

    Computed in float32 one sequence at a time, so only one sequence's logits are ever upcast.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    target, mask = batch["input_ids"][:, 1:], batch["completion_mask"][:, 1:]
    sums = []
    for i in range(logits.shape[0]):
        row = logits[i, :-1].float()
        token = row.gather(-1, target[i].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1)
        sums.append((token * mask[i]).sum())
    return torch.stack(sums)


def score_pairs(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], beta: float,
                max_length: int | None, batch_size: int, device: str) -> list[dict[str, float]]:
    """Per row: ``chosen_reward``, ``rejected_reward`` and ``reward_margin`` (chosen minus rejected)."""
    if not hasattr(model, "disable_adapter"):
        raise EvalError("task dpo: the run has no LoRA adapter to disable, so there is no reference model "
                        "to score against (dpo runs are trained with lora.enabled: true)")
    out: list[dict[str, float]] = []
    for start in progress(range(0, len(rows), batch_size), label="Scoring pairs"):
        pairs = [tokenize(tokenizer, row) for row in rows[start:start + batch_size]]
        batch = _batch(*_sequences(pairs, max_length), tokenizer.pad_token_id, device)
        policy = sequence_logps(model, batch)
        with model.disable_adapter():
            reference = sequence_logps(model, batch)
        rewards = (beta * (policy - reference)).tolist()
        n = len(pairs)
        for chosen, rejected in zip(rewards[:n], rewards[n:]):
            out.append({"chosen_reward": chosen, "rejected_reward": rejected, "reward_margin": chosen - rejected})
    return out
