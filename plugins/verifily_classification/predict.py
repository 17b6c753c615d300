"""Batched prediction: the argmax label and per-row probabilities (imports torch)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from verifily_core.console import progress
from verifily_classification.data import collator, features
from verifily_classification.labels import LabelSet


def _as_row_type(name: str, reference: Any) -> Any:
    """A predicted label name in the type of the row's label (integer labels stay integers)."""
    if isinstance(reference, int) and not isinstance(reference, bool) and name.lstrip("-").isdigit():
        return int(name)
    return name


@torch.no_grad()
def predict(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], labels: LabelSet, max_len: int,
            batch_size: int, device: str) -> list[dict[str, Any]]:
    """One record per row, in order: ``prediction`` (argmax label), ``reference`` and ``scores`` with
    ``p_true`` (probability of the reference label), ``p_pred`` (of the predicted one) and ``loss``
    (``-log p_true``).

    :raises DataError: a row's label is outside ``labels`` (named as ``test row N``).
    """
    feats, _ = features(rows, tokenizer, labels, max_len, split="test")
    pad = collator(tokenizer)
    names = labels.names()
    out: list[dict[str, Any]] = []
    model.eval()
    for start in progress(range(0, len(feats), batch_size), label="Predicting"):
        batch = pad(feats[start:start + batch_size])
        gold = batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for lp, g, row in zip(logp, gold.tolist(), rows[start:start + batch_size]):
            best = int(lp.argmax())
            out.append({
                "prediction": _as_row_type(names[best], row["label"]),
                "reference": row["label"],
                "scores": {"p_true": float(lp[g].exp()), "p_pred": float(lp[best].exp()), "loss": float(-lp[g])},
            })
    return out
