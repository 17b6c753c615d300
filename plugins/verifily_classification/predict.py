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
        out = []
        for lp, g, i in zip(logp, gold.tolist(), batch):
            best = int(lp.argmax())
            out.append({
                "prediction": _as_row_type(names[best], rows[i]["label"]),
                "reference": rows[i]["label"],
                "scores": {"p_true": float(lp[g].exp()), "p_pred": float(lp[best].exp()), "loss": float(-lp[g])},
            })
        return out

    return map_sorted([len(f["input_ids"]) for f in feats], batch_size, run)
