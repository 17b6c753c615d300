"""Classification heads: the model's own, or a pooled MLP head installed in its place (imports torch).

A ``*ForSequenceClassification`` model keeps its backbone (where LoRA goes) and gets
:class:`PooledHead` under the name of its own head (``classifier`` for encoders, ``score``
for decoders), so PEFT trains and saves it as a ``modules_to_save`` module. The model's
class is swapped for a subclass whose ``forward`` runs the backbone, pools the token states
with the attention mask and applies the head.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

HEAD_ATTRS = ("classifier", "score")
POOLER_ATTRS = ("pooler",)  # task poolers beside the backbone (DeBERTa's ContextPooler)
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def head_attr(model: Any) -> str:
    """The attribute holding the model's classification head (``classifier`` or ``score``)."""
    for name in HEAD_ATTRS:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ValueError(f"{type(model).__name__} has no 'classifier' or 'score' head; it is not a "
                     "*ForSequenceClassification model")


def default_pooling(model: Any) -> str:
    """``last`` for decoder classifiers (a ``score`` head on the last token), ``cls`` for encoders."""
    return "last" if head_attr(model) == "score" else "cls"


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, strategy: str) -> torch.Tensor:
    """Pool token states ``(B, T, H)`` to ``(B, H)``: the first token, the masked mean or max, or the
    last attended token (right or left padding)."""
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if strategy == "cls":
        return hidden[:, 0]
    keep = mask.unsqueeze(-1).to(hidden.dtype)
    if strategy == "mean":
        return (hidden * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
    if strategy == "max":
        return hidden.masked_fill(keep == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    if strategy == "last":
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device)
        last = (mask.to(positions.dtype) * positions).argmax(dim=-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {strategy!r}")


class PooledHead(nn.Module):
    """Pooling, then ``len(hidden_dims)`` blocks of dropout -> linear -> activation, then
    dropout -> linear to the labels."""

    def __init__(self, hidden_size: int, num_labels: int, pooling: str, hidden_dims: list[int],
                 activation: str, dropout: float) -> None:
        super().__init__()
        self.pooling = pooling
        layers: list[nn.Module] = []
        width = hidden_size
        for dim in hidden_dims:
            layers += [nn.Dropout(dropout), nn.Linear(width, dim), ACTIVATIONS[activation]()]
            width = dim
        layers += [nn.Dropout(dropout), nn.Linear(width, num_labels)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, num_labels)`` from token states ``(B, T, H)``."""
        pooled = pool(hidden, attention_mask, self.pooling)
        return self.mlp(pooled.to(self.mlp[-1].weight.dtype))


class _PooledForward:
    """Mixed in before a ``*ForSequenceClassification`` class: backbone -> pooled head."""

    _verifily_head_attr = "classifier"

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                inputs_embeds: Any = None, labels: Any = None, **_: Any) -> SequenceClassifierOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.base_model(**inputs)[0]
        logits = getattr(self, self._verifily_head_attr)(hidden, attention_mask)
        loss = None
        if labels is not None and self.config.problem_type == "multi_label_classification":
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device).float())
        elif labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
        return SequenceClassifierOutput(loss=loss, logits=logits)


_CLASSES: dict[type, type] = {}


def _pooled_class(cls: type, attr: str) -> type:
    """A subclass with the pooled forward; it keeps the class name (``architectures`` in configs)."""
    if issubclass(cls, _PooledForward):
        return cls
    if cls not in _CLASSES:
        _CLASSES[cls] = type(cls.__name__, (_PooledForward, cls), {"__module__": __name__, "_verifily_head_attr": attr})
    return _CLASSES[cls]


def install_head(model: Any, spec: Mapping[str, Any]) -> Any:
    """Replace the model's head by a :class:`PooledHead` built from ``spec`` (``head_spec()`` of the
    options; ``{}`` keeps the model's own head). Seeded by the caller; returns the model."""
    if not spec:
        return model
    attr = head_attr(model)
    pooling = default_pooling(model) if spec["pooling"] == "auto" else spec["pooling"]
    hidden_size = getattr(model.config, "hidden_size", None) or model.config.get_text_config().hidden_size
    head = PooledHead(hidden_size, model.config.num_labels, pooling, list(spec["hidden_dims"]),
                      spec["activation"], float(spec["dropout"]))
    device = next(getattr(model, attr).parameters()).device
    setattr(model, attr, head.to(device).train(model.training))
    for name in POOLER_ATTRS:
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, nn.Identity())  # pooling is the head's job now
    model.__class__ = _pooled_class(type(model), attr)
    return model


def head_modules(model: Any) -> list[str]:
    """Top-level modules outside the backbone with parameters: the head and a task pooler
    (``modules_to_save`` for LoRA, so they are trained in full and saved with the adapter)."""
    out = []
    for name, module in model.named_children():
        if name in (*HEAD_ATTRS, *POOLER_ATTRS) and any(True for _ in module.parameters()):
            out.append(name)
    return out
