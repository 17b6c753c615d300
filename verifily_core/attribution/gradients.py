"""Per-row gradients of a run's trainable parameters, projected to a few numbers per layer.

Only the parameters training changed have gradients that matter here: the LoRA matrices and
any trained head (``modules_to_save``), all of them weights of ``nn.Linear`` layers. For one
row, the gradient of a linear layer's weight is ``sum_t g_t x_t^T`` over its token positions
``t`` (``x`` the layer's input, ``g`` the loss gradient at its output). Projected on both sides
by fixed random matrices ``P_in`` (in x k) and ``P_out`` (out x k), it is
``sum_t (P_out^T g_t)(x_t^T P_in)``: ``k x k`` numbers computed from the projected activations,
never materialising the full gradient (the factorised projection of LoGra). A side of at most
``k`` is kept as it is (a LoRA matrix's rank side). A row's features are the concatenation over
layers (bias gradients projected by ``P_out``), so their inner products estimate inner products of
the true gradients (Johnson-Lindenstrauss), which is what influence scores need.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch


def trainable_linears(model: Any) -> list[tuple[str, Any]]:
    """The ``nn.Linear`` modules whose weight training changed: LoRA matrices and trained heads,
    by name (made to require gradients, as a loaded adapter's parameters do not)."""
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if "lora_" in name or "modules_to_save" in name or module.weight.requires_grad:
            for p in module.parameters():
                p.requires_grad_(True)
            out.append((name, module))
    return out


class ProjectedGradients:
    """Hooks on the trainable linear layers that turn one backward pass of a batch into each
    row's projected gradient (:attr:`dim` numbers per row)."""

    def __init__(self, model: Any, k: int = 16, seed: int = 0) -> None:
        self.layers = trainable_linears(model)
        if not self.layers:
            raise ValueError("the model has no trainable linear layers to attribute with")
        gen = torch.Generator().manual_seed(seed)
        self._proj: dict[str, tuple[torch.Tensor | None, torch.Tensor | None]] = {}
        self.dim = 0
        for name, m in self.layers:
            p_in = None if m.in_features <= k else torch.randn(m.in_features, k, generator=gen) / k ** 0.5
            p_out = None if m.out_features <= k else torch.randn(m.out_features, k, generator=gen) / k ** 0.5
            self._proj[name] = (p_in, p_out)
            k_in, k_out = min(m.in_features, k), min(m.out_features, k)
            self.dim += k_in * k_out + (k_out if m.bias is not None else 0)
        self._inputs: dict[str, torch.Tensor] = {}
        self._grads: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "ProjectedGradients":
        for name, m in self.layers:
            self._handles.append(m.register_forward_hook(self._keep(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _keep(self, name: str) -> Callable:
        """Forward hook: keep the projected input, and hook the output's gradient."""
        p_in, p_out = self._proj[name]

        def keep_grad(grad: torch.Tensor) -> None:
            g = grad.detach().float()
            self._grads[name] = g if p_out is None else g @ p_out.to(g.device)

        def hook(module: Any, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach().float()
            self._inputs[name] = x if p_in is None else x @ p_in.to(x.device)
            if output.requires_grad:
                output.register_hook(keep_grad)
        return hook

    def features(self, loss_per_row: torch.Tensor) -> torch.Tensor:
        """Backpropagate ``loss_per_row.sum()`` (rows are independent, so each row's gradient is
        its own loss's) and return the ``(rows, dim)`` projected gradients."""
        self._grads.clear()
        loss_per_row.sum().backward()
        parts = []
        for name, m in self.layers:
            x, g = self._inputs[name], self._grads[name]
            if x.dim() == 2:
                x, g = x[:, None], g[:, None]
            x, g = x.reshape(x.shape[0], -1, x.shape[-1]), g.reshape(g.shape[0], -1, g.shape[-1])
            parts.append(torch.einsum("bto,bti->boi", g, x).flatten(1))
            if m.bias is not None:
                parts.append(g.sum(1))
        self._inputs.clear()
        return torch.cat(parts, 1).cpu()


def row_losses(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Each row's training loss in a padded batch: mean token cross-entropy over its labelled
    tokens (a decoder-only model: shifted; an encoder-decoder: the target), or the cross-entropy
    of its class (one label per row) or binary cross-entropies (a 0/1 vector per row)."""
    return _per_row(model, batch, margin=False)


def row_margins(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Each row's negative log-odds of its reference, ``-log(p / (1 - p))`` with ``p`` the
    probability of the right class, label assignment or token, averaged as :func:`row_losses`
    averages. It falls as the loss falls, but its gradient does not vanish on rows the model
    already gets right (the loss's is ``1 - p`` times smaller), so the rows a test slice gets
    right still say which training rows pull them the wrong way (the output function of TRAK)."""
    return _per_row(model, batch, margin=True)


OBJECTIVES = {"loss": row_losses, "margin": row_margins}
"""What a test row's gradient is taken of: its loss, or its negative log-odds (:func:`row_margins`)."""


def _per_row(model: Any, batch: dict[str, Any], margin: bool) -> torch.Tensor:
    batch = dict(batch)
    labels = batch.pop("labels")
    if labels.dim() == 1:  # one class per row
        logits = model(**batch).logits.float()
        logp = torch.log_softmax(logits, -1).gather(1, labels[:, None])[:, 0]
        return _neg_log_odds(logp) if margin else -logp
    if labels.is_floating_point():  # several labels per row: each label a yes/no
        logits = model(**batch).logits.float()
        if margin:
            return -((2 * labels - 1) * logits).mean(1)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        logits, target = model(**batch, labels=labels).logits, labels
    else:
        logits, target = model(**batch, use_cache=False).logits[:, :-1], labels[:, 1:]
    logp = -torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target.clamp(min=0), reduction="none")
    per_token = _neg_log_odds(logp) if margin else -logp
    mask = (target != -100).float()
    return (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)


def _neg_log_odds(logp: torch.Tensor) -> torch.Tensor:
    """``-(log p - log(1 - p))`` from ``log p``, finite where ``p`` rounds to 1."""
    return -(logp - torch.log(-torch.expm1(logp.clamp(max=-1e-7))))


def gradient_features(model: Any, features: list[dict[str, Any]], collate: Callable,
                      batch_size: int, device: str, k: int = 16, seed: int = 0,
                      progress: Callable[[Iterable], Iterable] | None = None,
                      objective: str = "loss", max_tokens: int | None = None) -> torch.Tensor:
    """``(rows, dim)`` projected gradients of ``features`` (the task's training features): of
    each row's loss, or of what :data:`OBJECTIVES` names. Rows are batched by length, longest
    first, ``batch_size`` rows at a time or, with ``max_tokens``, as many as that many padded
    tokens hold (:mod:`verifily_core.batching`); a row's gradient does not depend on its batch,
    and the result is in the order of ``features``."""
    from verifily_core.batching import length_sorted_batches, token_budget_batches

    per_row = OBJECTIVES[objective]
    model.eval()  # no dropout: the gradient of the loss the model computes
    grads = ProjectedGradients(model, k, seed)
    lengths = [_length(f) for f in features]
    batches = token_budget_batches(lengths, max_tokens) if max_tokens else length_sorted_batches(lengths, batch_size)
    out = []
    with grads:
        for rows in (progress(batches) if progress else batches):
            batch = {k_: v.to(device) for k_, v in collate([features[i] for i in rows]).items()}
            model.zero_grad(set_to_none=True)
            out.append(grads.features(per_row(model, batch)))
    model.zero_grad(set_to_none=True)
    if not out:
        return torch.zeros(0, grads.dim)
    result = torch.empty(len(features), grads.dim)
    result[torch.tensor([i for rows in batches for i in rows])] = torch.cat(out)
    return result


def _length(feature: dict[str, Any]) -> int:
    """Tokens a row pads to: its input's, plus its target's where that is a sequence of its own."""
    labels = feature.get("labels")
    own_target = isinstance(labels, (list, tuple)) and len(labels) != len(feature.get("input_ids", ()))
    return len(feature.get("input_ids", ())) + (len(labels) if own_target else 0)
