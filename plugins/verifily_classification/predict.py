"""Batched prediction: the argmax label (multi-label: the labels over the threshold) and per-row
probabilities (imports torch)."""

from __future__ import annotations

import math
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
    if labels.multi_label:
        return _predict_multilabel(model, feats, pad, rows, labels, batch_size, device)

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


def _predict_multilabel(model: Any, feats: list[dict[str, Any]], pad: Any, rows: Sequence[Mapping[str, Any]],
                        labels: LabelSet, batch_size: int, device: str) -> list[dict[str, Any]]:
    def run(batch: list[int]) -> list[dict[str, Any]]:
        padded = pad([feats[i] for i in batch])
        gold = padded.pop("labels")
        logits = model(**{k: v.to(device) for k, v in padded.items()}).logits.float().cpu()
        return [multilabel_record(lg, g, rows[i]["labels"], labels) for lg, g, i in zip(logits, gold, batch)]

    return map_sorted([len(f["input_ids"]) for f in feats], batch_size, run, "Predicting")


def multilabel_record(logits: Any, gold: Any, reference: Any, labels: LabelSet) -> dict[str, Any]:
    """One multi-label row's record from its logits ``(K,)`` and 0/1 reference ``(K,)``: the
    ``prediction`` (the labels with a probability >= the threshold, in id order), the reference
    and ``scores``: ``p_true`` (the probability of the reference set, the product over labels of
    ``p`` for its labels and ``1 - p`` for the others), ``p_pred`` (the same for the predicted
    set), ``loss`` (the mean binary cross-entropy over the labels, ``-log p_true / K``) and
    ``probabilities`` (``{label: p}``)."""
    logits, gold = logits.float(), gold.float()
    probs = torch.sigmoid(logits)
    log_p, log_not_p = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    decided = (probs.double() >= labels.threshold).float()
    log_true = float((gold * log_p + (1 - gold) * log_not_p).sum())
    log_pred = float((decided * log_p + (1 - decided) * log_not_p).sum())
    names = labels.names()
    return {"prediction": [names[k] for k in range(len(names)) if decided[k] > 0], "reference": reference,
            "scores": {"p_true": math.exp(log_true), "p_pred": math.exp(log_pred), "loss": -log_true / len(names),
                       "probabilities": {name: float(p) for name, p in zip(names, probs)}}}


def tune_on_val(model: Any, tokenizer: Any, job: Any, labels: LabelSet, options: Any) -> dict[str, Any]:
    """``task_options.tune_threshold``: the trained multi-label model's probabilities on the val
    split, and the threshold with the best micro F1 there (see
    :func:`~verifily_classification.multilabel.tune_threshold`; its result is returned)."""
    from verifily_classification.multilabel import multi_hot, tune_threshold

    rows = job.dataset.read_rows("val")
    cfg = job.config
    device = next(model.parameters()).device
    records = predict(model, tokenizer, rows, labels, cfg.training.max_seq_length,
                      cfg.eval.batch_size or cfg.training.batch_size, device, truncation=options.truncation,
                      padding=options.padding)
    names = labels.names()
    probs = [[r["scores"]["probabilities"][n] for n in names] for r in records]
    gold = [multi_hot(row["labels"], labels, f"val row {i}") for i, row in enumerate(rows, start=1)]
    return tune_threshold(probs, gold, options.decision_threshold)
