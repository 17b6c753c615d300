"""The label-token formulation for causal LMs: the row in a prompt template, each label answered
by the tokens of its verbalizer text; training puts the loss on the true label's tokens only,
prediction scores every label's tokens (restricted to the label set, nothing is generated).

A label's score is the model's log-probability of its token sequence after the prompt, the sum
over its tokens (teacher-forced); the class probabilities are these scores normalised over the
labels (a softmax), so the records look like the head formulation's (``p_true``, ``p_pred``,
``loss``). Token sequences must be distinct and none a prefix of another (a prefix would score
as a shorter answer to the same text). torch is imported inside the functions.
"""

from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

from verifily_core.errors import ConfigError, DataError

from verifily_classification.labels import LabelSet

DEFAULT_TEMPLATE = "{text}\nLabel:"
DEFAULT_PAIR_TEMPLATE = "{text}\n{text_pair}\nLabel:"
ROOT = "$.task_options.label_tokens"


def verbalizer_texts(labels: LabelSet, verbalizer: Mapping[str, str] | None) -> list[str]:
    """The text answering each label, in id order: ``verbalizer[label]`` or ``" <label>"``.

    :raises ConfigError: the verbalizer names a label outside the set.
    """
    given = dict(verbalizer or {})
    unknown = [name for name in given if name not in labels]
    if unknown:
        raise ConfigError(f"{ROOT}.verbalizer.{unknown[0]}: '{unknown[0]}' is not one of the labels "
                          f"({', '.join(labels.names())})")
    return [given.get(name, f" {name}") for name in labels.names()]


def label_token_ids(tokenizer: Any, labels: LabelSet, verbalizer: Mapping[str, str] | None,
                    single_token_labels: bool = False) -> list[list[int]]:
    """The token ids of each label's verbalizer text, in id order (no special tokens).

    :raises ConfigError: a text gives no token, or more than one with ``single_token_labels``; two
        labels give the same tokens, or one label's tokens begin another's.
    """
    texts = verbalizer_texts(labels, verbalizer)
    ids = [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    names = labels.names()
    for name, text, tokens in zip(names, texts, ids):
        shown = tokenizer.convert_ids_to_tokens(tokens)
        if not tokens:
            raise ConfigError(f"{ROOT}.verbalizer.{name}: {text!r} gives no token; choose another text")
        if single_token_labels and len(tokens) != 1:
            raise ConfigError(f"{ROOT}.verbalizer.{name}: {text!r} is {len(tokens)} tokens {shown} and "
                              "single_token_labels is true; choose a text the tokenizer keeps as one token, or set "
                              "single_token_labels: false")
    for i, a in enumerate(ids):
        for j, b in enumerate(ids):
            if i != j and b[:len(a)] == a:
                same = "the same tokens as" if a == b else "a prefix of the tokens of"
                raise ConfigError(f"{ROOT}.verbalizer: label '{names[i]}' ({texts[i]!r}, tokens "
                                  f"{tokenizer.convert_ids_to_tokens(a)}) has {same} label '{names[j]}' "
                                  f"({texts[j]!r}); give the labels verbalizer texts that differ in their tokens")
    return ids


class PromptEncoder:
    """Token ids of a row's prompt, cut to fit ``max_len`` with room for the longest label."""

    def __init__(self, tokenizer: Any, template: str | None, truncation: str, max_len: int, reserve: int) -> None:
        self.tokenizer, self.template, self.truncation = tokenizer, template, truncation
        self.max_len, self.reserve = max_len, reserve
        bos = tokenizer.bos_token_id
        probe = tokenizer("a")["input_ids"]
        self.prefix = [bos] if bos is not None and probe[:1] == [bos] else []

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    def encode(self, row: Mapping[str, Any], where: str) -> tuple[list[int], bool]:
        """The prompt's token ids and whether the text (or pair) was cut.

        :raises DataError: the row's fields do not fit the template, or the side that may be cut
            cannot make it fit (names ``where``).
        """
        pair = row.get("text_pair")
        template = self.template or (DEFAULT_TEMPLATE if pair is None else DEFAULT_PAIR_TEMPLATE)
        parts = list(string.Formatter().parse(template))
        fields = {name for _, name, _, _ in parts if name}
        if pair is not None and "text_pair" not in fields:
            raise DataError(f"{where}: the row has a text_pair and task_options.label_tokens.template has no "
                            "{text_pair}; add it to the template")
        if pair is None and "text_pair" in fields:
            raise DataError(f"{where}: the row has no text_pair and task_options.label_tokens.template uses "
                            "{text_pair}")
        pieces: list[list[int] | str] = []
        fixed = len(self.prefix)
        for literal, name, _, _ in parts:
            ids = self._ids(literal)
            fixed += len(ids)
            pieces.append(ids)
            if name:
                pieces.append(name)
        values = {"text": self._ids(row["text"]), "text_pair": self._ids(pair) if pair is not None else []}
        budget = self.max_len - self.reserve - fixed
        if budget < 1:
            raise ConfigError(f"$.training.max_seq_length: {self.max_len} tokens leave no room for the text after "
                              f"the template ({fixed} tokens) and the longest label ({self.reserve})")
        cut = len(values["text"]) + len(values["text_pair"]) > budget
        if cut:
            values = self._truncate(values, budget, pair is not None, where)
        out = list(self.prefix)
        for piece in pieces:
            out += values[piece] if isinstance(piece, str) else piece
        return out, cut

    def _truncate(self, values: dict[str, list[int]], budget: int, has_pair: bool,
                  where: str) -> dict[str, list[int]]:
        a, b = values["text"], values["text_pair"]
        strategy = self.truncation if has_pair else "only_first"
        if strategy == "longest_first":
            la, lb = len(a), len(b)
            while la + lb > budget:
                if la > lb:
                    la -= 1
                else:
                    lb -= 1
            return {"text": a[:la], "text_pair": b[:lb]}
        keep, side = ("text_pair", "text") if strategy == "only_first" else ("text", "text_pair")
        room = budget - len(values[keep])
        if room < 1:
            raise DataError(f"{where}: with task_options.truncation {strategy} the {keep} alone is longer than "
                            f"training.max_seq_length ({self.max_len} tokens) allows after the template and the "
                            "label; use longest_first or raise the length")
        return {keep: values[keep], side: values[side][:room]}


def features(rows: Sequence[Mapping[str, Any]], tokenizer: Any, labels: LabelSet, token_ids: list[list[int]],
             template: str | None, truncation: str, max_len: int,
             split: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """Per row: ``input_ids`` (prompt + the true label's tokens), ``labels`` (-100 on the prompt,
    so the loss covers the label tokens only), ``label_id`` and ``prompt_len``; and the number of
    truncated rows."""
    enc = PromptEncoder(tokenizer, template, truncation, max_len, max(len(t) for t in token_ids))
    feats, truncated = [], 0
    for i, row in enumerate(rows, start=1):
        where = f"{split} row {i}" if split else f"row {i}"
        y = labels.index(row["label"], where)
        prompt, cut = enc.encode(row, where)
        truncated += cut
        answer = token_ids[y]
        feats.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer,
                      "label_id": y, "prompt_len": len(prompt)})
    return feats, truncated


class LabelTokenCollator:
    """Right padding of ``input_ids`` (pad id), ``attention_mask`` and ``labels`` (-100), to the
    longest row (``longest``) or to ``max_len`` (``max_length``); ``label_id`` and ``prompt_len``
    as tensors."""

    def __init__(self, pad_id: int, padding: str = "longest", max_len: int | None = None) -> None:
        self.pad_id, self.padding, self.max_len = pad_id, padding, max_len

    def __call__(self, feats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in feats)
        if self.padding == "max_length" and self.max_len:
            width = max(width, self.max_len)
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in feats:
            n = len(f["input_ids"])
            out["input_ids"].append(list(f["input_ids"]) + [self.pad_id] * (width - n))
            out["attention_mask"].append([1] * n + [0] * (width - n))
            out["labels"].append(list(f["labels"]) + [-100] * (width - n))
        batch = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        batch["label_id"] = torch.tensor([f["label_id"] for f in feats], dtype=torch.long)
        batch["prompt_len"] = torch.tensor([f["prompt_len"] for f in feats], dtype=torch.long)
        return batch


def row_nll(logits: Any, labels: Any) -> Any:
    """Per row, the summed negative log-likelihood of the label positions (``labels`` != -100),
    next-token shifted: shape ``(B,)``."""
    import torch

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(logits.device)
    nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                            ignore_index=-100, reduction="none")
    return nll.view(shift_labels.shape).sum(dim=1)


def label_logprobs(model: Any, prompts: Sequence[Sequence[int]], token_ids: Sequence[Sequence[int]], pad_id: int,
                   device: Any) -> Any:
    """``(B, K)``: the log-probability of each label's token sequence after each prompt.

    With one token per label, one forward pass over the prompts (the next-token distribution at
    each prompt's last token); otherwise one pass over every prompt + label sequence.
    """
    import torch

    k = len(token_ids)
    single = all(len(t) == 1 for t in token_ids)
    if single:
        seqs = [list(p) for p in prompts]
    else:
        seqs = [list(p) + list(t) for p in prompts for t in token_ids]
    pad = LabelTokenCollator(pad_id)([{"input_ids": s, "labels": s, "label_id": 0, "prompt_len": 0} for s in seqs])
    logits = model(input_ids=pad["input_ids"].to(device), attention_mask=pad["attention_mask"].to(device),
                   use_cache=False).logits
    if single:
        last = torch.tensor([len(p) - 1 for p in prompts], device=logits.device)
        rows = logits[torch.arange(len(prompts), device=logits.device), last].float().log_softmax(dim=-1)
        return rows[:, [t[0] for t in token_ids]].cpu()
    out = torch.zeros(len(seqs))
    for j, seq in enumerate(seqs):
        starts = len(prompts[j // k])
        answer = token_ids[j % k]
        positions = torch.arange(starts - 1, starts - 1 + len(answer), device=logits.device)
        lp = logits[j, positions].float().log_softmax(dim=-1)
        out[j] = lp[torch.arange(len(answer), device=logits.device), torch.tensor(answer, device=logits.device)].sum().cpu()
    return out.view(len(prompts), k)
