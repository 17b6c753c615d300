"""Batched prediction: the argmax label and per-row probabilities (imports torch)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from verifily_core.batching import map_sorted
from verifily_classification.data import collator, features
from verifily_classification.labels import LabelSet


def _as_row_type(name: str, reference: Any) -> Any:
    """A predicted label name in the type of the row's label (integer labels stay integers)."""
    if isinstance(reference, int) and not isinstance(reference, bool) and name.lstrip("-").isdigit():
        return int(name)
    return name


@torch.no_grad()
def predict(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], labels: LabelSet, max_len: int,
            batch_size: int, device: str, truncation: str = "longest_first",
            padding: str = "longest") -> list[dict[str, Any]]:
    """One record per row, in order (batched by length): ``prediction`` (argmax label), ``reference`` and ``scores`` with
    ``p_true`` (probability of the reference label), ``p_pred`` (of the predicted one) and ``loss``
    (``-log p_true``).

    :raises DataError: a row's label is outside ``labels`` (named as ``test row N``).
    """
    feats, _ = features(rows, tokenizer, labels, max_len, split="test", truncation=truncation)
    pad = collator(tokenizer, padding, max_len)
    names = labels.names()
    model.eval()

    def run(batch: list[int]) -> list[dict[str, Any]]:
        padded = pad([feats[i] for i in batch])
        gold = padded.pop("labels")
        logits = model(**{k: v.to(device) for k, v in padded.items()}).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        return [_record(lp, g, rows[i]["label"], names) for lp, g, i in zip(logp, gold.tolist(), batch)]

    return map_sorted([len(f["input_ids"]) for f in feats], batch_size, run, "Predicting")


@torch.no_grad()
def predict_label_tokens(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], labels: LabelSet,
                         options: Any, max_len: int, batch_size: int, device: str) -> list[dict[str, Any]]:
    """Like :func:`predict` for the label-token formulation: each label's score is the model's
    log-probability of its tokens after the row's prompt, normalised over the labels."""
    from verifily_classification import labeltokens

    opts = options.tokens
    token_ids = labeltokens.label_token_ids(tokenizer, labels, opts.verbalizer, opts.single_token_labels)
    feats, _ = labeltokens.features(rows, tokenizer, labels, token_ids, opts.template, options.truncation, max_len,
                                    split="test")
    names = labels.names()
    model.eval()

    def run(batch: list[int]) -> list[dict[str, Any]]:
        prompts = [feats[i]["input_ids"][:feats[i]["prompt_len"]] for i in batch]
        logp = torch.log_softmax(labeltokens.label_logprobs(model, prompts, token_ids, tokenizer.pad_token_id, device),
                                 dim=-1)
        return [_record(lp, feats[i]["label_id"], rows[i]["label"], names) for lp, i in zip(logp, batch)]

    return map_sorted([f["prompt_len"] for f in feats], batch_size, run, "Predicting")


def _record(lp: Any, gold: int, reference: Any, names: list[str]) -> dict[str, Any]:
    best = int(lp.argmax())
    return {"prediction": _as_row_type(names[best], reference), "reference": reference,
            "scores": {"p_true": float(lp[gold].exp()), "p_pred": float(lp[best].exp()), "loss": float(-lp[gold])}}
