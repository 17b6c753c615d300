"""Tokenization of SFT rows: loss on output (assistant) tokens only (CausalLM), output as target (Seq2Seq).

Truncation to ``training.max_seq_length`` is counted, never silent. A prompt that is too long
loses tokens from its middle (its start with the instruction and its end with the response
marker are kept); an output keeps at least half of the budget.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from verifily_sft.chat import causal_pieces, conversation, is_chat, render, template
from verifily_sft.options import SFTOptions


def _ids(tokenizer: Any, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def fit_middle(ids: list[int], budget: int) -> list[int]:
    """``ids`` cut to ``budget`` tokens by dropping tokens from the middle."""
    if len(ids) <= budget:
        return ids
    first = budget // 2
    return ids[:first] + ids[len(ids) - (budget - first):]


def fit_middle_pair(ids: list[int], labels: list[int], budget: int) -> tuple[list[int], list[int]]:
    """``ids`` and their ``labels`` cut to ``budget`` tokens at the same positions (the middle)."""
    return fit_middle(ids, budget), fit_middle(labels, budget)


def reference(row: Mapping[str, Any]) -> str:
    """The answer the model should write: the last assistant message, or ``output``."""
    return row["messages"][-1]["content"] if is_chat(row) else row["output"]


def pieces(tokenizer: Any, row: Mapping[str, Any], model_kind: str, options: SFTOptions,
           all_turns: bool) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, their labels, output ids) of a row for a CausalLM, or (source ids, [], target
    ids) for a Seq2Seq model. The prompt is everything before the reference; its labels are -100
    but for earlier assistant turns of a conversation when ``all_turns``."""
    chat = is_chat(row) or options.use_chat_template
    if model_kind == "seq2seq":
        if chat:
            messages = conversation(row, options)
            text = render(tokenizer, messages[:-1], template(tokenizer, options, is_chat(row)), True)
        else:
            text = options.render(dict(row))
        return _ids(tokenizer, text, True), [], _ids(tokenizer, reference(row), True)
    if chat:
        return causal_pieces(tokenizer, conversation(row, options), template(tokenizer, options, is_chat(row)),
                             all_turns)
    p = _ids(tokenizer, options.render(dict(row)), True)
    out = _ids(tokenizer, row["output"], False)
    if tokenizer.eos_token_id is not None:
        out = out + [tokenizer.eos_token_id]
    return p, [-100] * len(p), out


def prompt_ids(tokenizer: Any, row: Mapping[str, Any], model_kind: str, options: SFTOptions) -> list[int]:
    """The ids a generation starts from: the row's prompt, exactly as training tokenizes it."""
    return pieces(tokenizer, row, model_kind, options, False)[0]


def prepare(rows: Sequence[Mapping[str, Any]], tokenizer: Any, model_kind: str, max_len: int,
            options: SFTOptions, all_turns: bool | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Features for each row plus stats: ``rows``, ``truncated`` (rows cut to ``max_len``).

    ``all_turns`` (default: ``task_options.assistant_turns == "all"``) labels every assistant
    turn of a conversation; evaluation labels the last one only, the reference it scores."""
    all_turns = options.assistant_turns == "all" if all_turns is None else all_turns
    feats, truncated = [], 0
    for row in rows:
        p, p_labels, out = pieces(tokenizer, row, model_kind, options, all_turns)
        if model_kind == "seq2seq":
            truncated += len(p) > max_len or len(out) > max_len
            src = fit_middle(p, max_len)
            feats.append({"input_ids": src, "attention_mask": [1] * len(src), "labels": out[:max_len]})
            continue
        if len(p) + len(out) > max_len:
            truncated += 1
            out = out[:min(len(out), max(max_len - len(p), max_len // 2))]
            p, p_labels = fit_middle_pair(p, p_labels, max_len - len(out))
        feats.append({"input_ids": p + out, "attention_mask": [1] * (len(p) + len(out)),
                      "labels": p_labels + out})
    return feats, {"rows": len(feats), "truncated": truncated}


def pad(seqs: Sequence[list[int]], value: int, left: bool = False) -> list[list[int]]:
    """Pad lists of ids to the longest, on the right (or the left)."""
    width = max(len(s) for s in seqs)
    return [([value] * (width - len(s)) + s) if left else (s + [value] * (width - len(s))) for s in seqs]


class PadCollator:
    """Right-pads ``input_ids``/``attention_mask`` with the pad id and ``labels`` with -100."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch: dict[str, Any] = {}
        for key, value in (("input_ids", self.pad_id), ("attention_mask", 0), ("labels", -100)):
            if key in features[0]:
                batch[key] = torch.tensor(pad([f[key] for f in features], value), dtype=torch.long)
        return batch


class FlatCollator(PadCollator):
    """Padding-free training batches for a CausalLM: the rows of a batch concatenated into one
    sequence, ``position_ids`` restarting at 0 for each row and no attention mask, so a model
    whose attention follows the positions (transformers' packed-sequence masks, varlen
    flash-attention) keeps every row to itself. The first label of each row is -100 (the last
    token of the row before must not learn to predict it; unpacked, it is never a target
    either), so the loss is the padded batch's. Evaluation batches (the model in eval mode)
    are padded as usual, since the per-row validation metrics need rows.

    Without a varlen attention kernel (flash-attention), attention over the packed sequence of
    ``T`` tokens costs ``T^2`` (masked, not skipped) where the padded batch costs ``rows x
    longest^2``; a batch is packed only when :func:`packing_pays` says the whole layer costs less
    packed, so long rows are never packed into a quadratic attention bill. Both forms are exact."""

    batch_form = "padding-free"
    """Recorded in the run's ``optimizations`` (``batches``)."""

    def __init__(self, pad_id: int, model: Any) -> None:
        super().__init__(pad_id)
        self.model = model
        config = getattr(model, "config", None)
        self.width = int(getattr(config, "hidden_size", 0) or 0)
        self.varlen = str(getattr(config, "_attn_implementation", "") or "").startswith("flash")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = [len(f["input_ids"]) for f in features]
        if not self.model.training or not (self.varlen or packing_pays(lengths, self.width)):
            return super().__call__(features)
        return flatten(features)


def packing_pays(lengths: Sequence[int], width: int) -> bool:
    """Whether a batch of rows of ``lengths`` costs less packed than padded in a transformer layer
    of ``width`` without a varlen attention kernel: per layer about ``12 w^2`` operations per token
    for the projections and MLP and ``2 w`` per pair of tokens that attention scores, i.e.
    ``6 w T + T^2`` packed (``T`` the tokens) against ``6 w n L + n L^2`` padded (``n`` rows of
    the longest length ``L``), up to the same factor. An unknown width packs when ``T^2 <= n L^2``."""
    total, rows, longest = sum(lengths), len(lengths), max(lengths)
    packed = 6 * width * total + total * total
    padded = 6 * width * rows * longest + rows * longest * longest
    return packed <= padded


def flatten(features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``input_ids``, ``labels`` and ``position_ids`` of shape (1, total tokens) for ``features``,
    and ``use_cache=False``."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for f in features:
        ids += f["input_ids"]
        labels += [-100, *f["labels"][1:]]
        positions += range(len(f["input_ids"]))
    batch: dict[str, Any] = {name: torch.tensor([values], dtype=torch.long)
                             for name, values in (("input_ids", ids), ("labels", labels), ("position_ids", positions))}
    batch["use_cache"] = False  # with a cache, transformers' masks ignore the row boundaries
    return batch


def packs_exactly(model: Any, vocab_size: int, tolerance: float = 1e-4) -> bool:
    """Whether ``model`` gives two rows packed into one sequence (:func:`flatten`) the logits
    it gives each row alone, within ``tolerance`` relative to the logits' size: a forward pass
    on 9 tokens, in eval mode and without gradients, the model's mode restored after."""
    import torch

    rows = [[(7 * i + 3) % vocab_size for i in range(5)], [(11 * i + 5) % vocab_size for i in range(4)]]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [model(input_ids=torch.tensor([r], device=device), use_cache=False).logits[0].float() for r in rows]
            flat = flatten([{"input_ids": r, "labels": r} for r in rows])
            packed = model(input_ids=flat["input_ids"].to(device), position_ids=flat["position_ids"].to(device),
                           use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    expected = torch.cat(alone)
    return bool((packed - expected).abs().max() <= tolerance * max(1.0, float(expected.abs().max())))
